"""A small HTTP/1.1 load generator for loopback benchmarks (asyncio + uvloop, raw keep-alive
sockets, so the client spends microseconds per request).

- `open_loop`: requests issued at a fixed rate whatever the server does (latency counts any
  wait for a free connection, so a slow server cannot hide its queueing: no coordinated
  omission); gives p50/p99 at a given load.
- `closed_loop`: N connections each sending back-to-back; gives the maximum throughput.
Every response must be a 200 whose body matches `expect` (e.g. the cache tier it should be).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)


@dataclass
class LoadResult:
    """Latencies (seconds) of the successful requests and what went wrong with the others."""

    mode: str
    elapsed_s: float
    latencies_s: list[float] = field(default_factory=list)
    errors: int = 0  # transport errors and non-200 statuses
    mismatches: int = 0  # 200s whose body did not match `expect`
    first_problem: str = ""

    @property
    def completed(self) -> int:
        return len(self.latencies_s)

    @property
    def throughput(self) -> float:
        return self.completed / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def percentile_ms(self, q: float) -> float:
        if not self.latencies_s:
            return float("nan")
        return float(np.percentile(np.asarray(self.latencies_s), q) * 1000.0)

    def problem(self, text: str) -> None:
        if not self.first_problem:
            self.first_problem = text


class Connection:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str):
        self.reader, self.writer, self.host = reader, writer, host

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer, host)

    async def get(self, path: str) -> tuple[int, bytes]:
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        match = _LENGTH.search(head)
        if match is None:
            raise ValueError(f"response without content-length: {head[:200]!r}")
        body = await self.reader.readexactly(int(match.group(1)))
        return int(head[9:12]), body

    def close(self) -> None:
        self.writer.close()


def _check(
    result: LoadResult, status: int, body: bytes, expect: re.Pattern[bytes] | None, latency: float
) -> None:
    if status != 200:
        result.errors += 1
        result.problem(f"HTTP {status}: {body[:200]!r}")
    elif expect is not None and expect.search(body) is None:
        result.mismatches += 1
        result.problem(f"body does not match {expect.pattern!r}: {body[:200]!r}")
    else:
        result.latencies_s.append(latency)


async def open_loop(
    host: str,
    port: int,
    paths: Sequence[str],
    rate: float,
    duration_s: float,
    expect: re.Pattern[bytes] | None = None,
    max_connections: int = 64,
) -> LoadResult:
    """`rate` requests/s for `duration_s`, cycling through `paths`."""
    result = LoadResult("open", duration_s)
    idle: list[Connection] = [await Connection.open(host, port) for _ in range(4)]
    opened = len(idle)
    freed = asyncio.Condition()

    async def one(path: str) -> None:
        nonlocal opened
        issued = time.perf_counter()
        async with freed:
            while not idle and opened >= max_connections:
                await freed.wait()
            conn = idle.pop() if idle else None
            if conn is None:
                opened += 1
        try:
            conn = conn or await Connection.open(host, port)
            status, body = await conn.get(path)
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            result.errors += 1
            result.problem(repr(exc))
            async with freed:
                opened -= 1
                freed.notify()
            return
        _check(result, status, body, expect, time.perf_counter() - issued)
        async with freed:
            idle.append(conn)
            freed.notify()

    loop = asyncio.get_running_loop()
    total = int(rate * duration_s)
    start = loop.time() + 0.01
    tasks = []
    for i in range(total):
        delay = start + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(paths[i % len(paths)])))
    await asyncio.gather(*tasks)
    result.elapsed_s = loop.time() - start
    for conn in idle:
        conn.close()
    return result


async def closed_loop(
    host: str,
    port: int,
    paths: Sequence[str],
    concurrency: int,
    duration_s: float,
    expect: re.Pattern[bytes] | None = None,
    unique: bool = False,
) -> LoadResult:
    """`concurrency` connections back-to-back for `duration_s`; with `unique`, each path is
    requested once and the run ends early when they are used up."""
    result = LoadResult("closed", duration_s)
    source: Iterator[str] = iter(paths) if unique else _cycle(paths)
    deadline = time.perf_counter() + duration_s

    async def worker() -> None:
        conn = await Connection.open(host, port)
        try:
            for path in source:
                if time.perf_counter() >= deadline:
                    return
                sent = time.perf_counter()
                try:
                    status, body = await conn.get(path)
                except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    result.errors += 1
                    result.problem(repr(exc))
                    conn.close()
                    conn = await Connection.open(host, port)
                    continue
                _check(result, status, body, expect, time.perf_counter() - sent)
        finally:
            conn.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.elapsed_s = time.perf_counter() - start
    return result


def _cycle(paths: Sequence[str]) -> Iterator[str]:
    while True:
        yield from paths


def run(coro: Coroutine[Any, Any, LoadResult]) -> LoadResult:
    """Run a load coroutine on uvloop when available."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)
