"""Scenarios 18, 19 and 22: bad user ids, bad k, oversized bodies and headers.

18: user_id edge cases get a 4xx or a well-formed cold-start answer, never a 5xx, identically
on the lean fast path and the FastAPI route (raw ASGI paths, exactly as uvicorn passes them) and
on the real server (raw bytes on a socket).
19: k edge cases are 422 on both routes and never reach FAISS: the served index's FAISS object
is wrapped to record every k it is asked for (the real index still answers).
22: on the real server, oversized bodies (announced or streamed) get 413 and oversized heads 431
before the rest is read, and /healthz's median latency holds during a stream of them.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np
import pytest
from live_service import tiny_store
from service_fixtures import MODEL, make_settings, running_app, served_bundle

from loadtests.service_process import running
from service.schemas import RecommendResponse

MAX_K = 50
K_CASES = ["0", "-1", "1.5", "text", str(MAX_K + 1), str(10**9), "", "1e3", str(10**30), "0x10"]
USER_CASES = [  # raw path segment after /recommend/, expected status
    ("", 404), ("a" * 10_000, 422), ("a" * 129, 422), ("a" * 128, 200),
    ("Zo%C3%AB-%F0%9F%8E%AC-%E3%83%A6%E3%83%BC%E3%82%B6", 200), ("%2F", 404),
    ("..%2F..", 404), ("../..", 404), ("%2E%2E", 200), ("%00", 422), ("a%00b", 422),
    ("%20", 422), ("%20%20%20", 422), ("%09", 422), ("a%0Ab", 422), ("%C2%85", 422),
    ("a%20b", 200), ("%E2%80%AE", 200), ("%FF%FE", 200), ("%25", 200), ("%252F", 200),
]  # fmt: skip


async def asgi_get(app: Any, raw_path: bytes) -> tuple[int, dict[str, str], bytes]:
    """One GET straight into the ASGI app, the path decoded the way uvicorn decodes it."""
    path = raw_path.decode("ascii")
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": unquote(path) if "%" in path else path, "raw_path": raw_path,
        "root_path": "", "query_string": b"", "headers": [(b"host", b"cinesync")],
        "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 80),
    }  # fmt: skip
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    await app(scope, receive, send)
    start = messages[0]
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    body = b"".join(m.get("body", b"") for m in messages[1:])
    return start["status"], headers, body


def check_answer(raw: str, status: int, headers: dict[str, str], body: bytes) -> None:
    assert status < 500, body
    assert headers["content-type"].startswith("application/json")
    data = json.loads(body)
    if status != 200:
        assert set(data) == {"detail"}
        return
    answer = RecommendResponse.model_validate(data)
    assert answer.user_id == unquote(raw)
    assert (answer.strategy, len(answer.items)) == ("popular", 10)  # a cold-start answer


@pytest.mark.asyncio
async def test_user_id_edge_cases_are_4xx_or_cold_start_on_both_routes(
    published_store: Path,
) -> None:
    answers: dict[bool, list[tuple[int, bytes]]] = {}
    for fast in (True, False):
        async with running_app(make_settings(published_store, fast_path=fast)) as client:
            app = client._transport.app  # type: ignore[attr-defined]
            answers[fast] = []
            for raw, expected in USER_CASES:
                status, headers, body = await asgi_get(app, f"/recommend/{raw}".encode())
                assert status == expected, (fast, raw[:40], body[:200])
                check_answer(raw, status, headers, body)
                answers[fast].append((status, body))
    assert answers[True] == answers[False]  # the fast path answers exactly like the framework


class RecordingIndex:
    """The real FAISS index, recording the k of every search."""

    def __init__(self, real: Any) -> None:
        self.real, self.ks = real, []

    def search(self, queries: np.ndarray, k: int, params: Any = None) -> Any:
        self.ks.append(int(k))
        return self.real.search(queries, k, params=params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


@pytest.mark.asyncio
@pytest.mark.parametrize("fast", [True, False], ids=["fast-path", "framework"])
async def test_k_out_of_range_is_422_and_never_reaches_faiss(
    published_store: Path, fast: bool
) -> None:
    settings = make_settings(published_store, max_k=MAX_K, fast_path=fast, cache={"l1_size": 0})
    async with running_app(settings) as client:
        bundle = served_bundle(client)
        user = next(u for u in bundle.users.rows if len(bundle.users.get(u)) >= 15)
        recorders = [RecordingIndex(bundle.index.index), RecordingIndex(bundle.content_index.index)]
        bundle.index.index, bundle.content_index.index = recorders
        for k in K_CASES:
            r = await client.get(f"/recommend/{user}", params={"k": k})
            assert r.status_code == 422, (k, r.text)
            assert "detail" in r.json()
        assert [rec.ks for rec in recorders] == [[], []]
        r = await client.get(f"/recommend/{user}", params={"k": MAX_K})
        assert r.status_code == 200
        assert len(r.json()["items"]) == MAX_K
        searched = recorders[0].ks + recorders[1].ks
        assert searched, "the recorder saw no search: the check above would be vacuous"
        assert max(searched) <= min(bundle.n_items, MAX_K + len(bundle.users.get(user)))


# --- the real server ---------------------------------------------------------------------------

LIMIT = 16_384  # the default CINESYNC_MAX_BODY_BYTES and CINESYNC_MAX_HEADER_BYTES


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CINESYNC_")}
    env.update({"CINESYNC_STORE_DIR": str(tiny_store(tmp_path_factory)),
                "CINESYNC_MODEL_NAME": MODEL, "CINESYNC_LOG_LEVEL": "ERROR"})  # fmt: skip
    log = tmp_path_factory.mktemp("inputs-live") / "service.log"
    with running(env=env, log_path=log) as svc:
        yield svc.port


def exchange(port: int, head: bytes, pieces: Iterable[bytes] = ()) -> tuple[int, float]:
    """Send `head`, then `pieces` until the server answers; (status, seconds to the answer)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        started = time.perf_counter()
        s.sendall(head)
        s.setblocking(False)
        reply = b""
        for piece in pieces:
            with contextlib.suppress(BlockingIOError):
                reply += s.recv(4096)
            if reply:
                break
            try:
                s.sendall(piece)
            except (BlockingIOError, OSError):
                break
        s.setblocking(True)
        s.settimeout(10)
        while b"\r\n" not in reply:
            chunk = s.recv(4096)
            if not chunk:
                break
            reply += chunk
        return int(reply.split(b" ")[1]), time.perf_counter() - started


def test_raw_user_ids_on_the_real_server_are_4xx_or_cold_start(live: int) -> None:
    cases = [("../..", 404), ("%00", 422), ("a" * 10_000, 422), ("b" * 20_000, 431),
             ("%20", 422), ("Zo%C3%AB", 200), ("%2F", 404)]  # fmt: skip
    for raw, expected in cases:
        status, _ = exchange(live, f"GET /recommend/{raw} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert status == expected, raw[:40]
    for raw in (b"a\x00b", b"a b", b"a\tb", b"\xff"):  # not even HTTP: the parser refuses it
        status, _ = exchange(live, b"GET /recommend/" + raw + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert 400 <= status < 500


def test_an_oversized_body_is_413_before_it_is_sent(live: int) -> None:
    head = (b"POST /users/u/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 52428800\r\n\r\n")  # fmt: skip
    status, seconds = exchange(live, head)  # not one byte of the 50 MB is sent
    assert (status, seconds < 1.0) == (413, True)


def test_a_streamed_oversized_body_is_413_at_the_limit(live: int) -> None:
    head = (b"POST /users/u/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")  # fmt: skip
    chunk = b"1000\r\n" + b"x" * 4096 + b"\r\n"
    status, seconds = exchange(live, head, [chunk] * 12_800)  # up to 50 MB
    assert (status, seconds < 2.0) == (413, True)


def test_an_endless_header_is_431_at_the_limit_without_waiting_for_its_end(live: int) -> None:
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: "
    status, seconds = exchange(live, head, [b"p" * 4096] * 12_800)  # never ends
    assert (status, seconds < 2.0) == (431, True)
    many = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 100) for i in range(300))
    assert exchange(live, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")[0] == 431


def test_heads_under_the_limit_parse_however_they_are_split(live: int) -> None:
    pad = b"X-Pad: " + b"p" * 10_000 + b"\r\n"
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + pad + b"\r\n"
    with socket.create_connection(("127.0.0.1", live), timeout=10) as s:
        for _ in range(3):  # one keep-alive connection: the budget is per request
            for i in range(0, len(request), 7):
                s.sendall(request[i : i + 7])
            reply = b""
            while b"\r\n\r\n" not in reply or not reply.endswith(b'"ok"}'):
                reply += s.recv(4096)
            assert reply.startswith(b"HTTP/1.1 200"), reply[:100]


ATTACK = r"""
import json, socket, sys, threading, time
port, seconds, threads, rate = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), float(
    sys.argv[4])
BODY = (b"POST /users/attacker/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 8388608\r\n\r\n")
HEAD = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: "
counts, lock = {}, threading.Lock()
def one(head):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(head)
        try:
            for _ in range(128):  # all 8 MB (body) or 8 MB of header, unless the server hangs up
                s.sendall(b"x" * 65536)
        except OSError:
            pass
        try:
            status = s.recv(64).split(b" ")[1].decode()
        except (OSError, IndexError):
            status = "none"
    with lock:
        counts[status] = counts.get(status, 0) + 1
def loop(i):
    end, due = time.monotonic() + seconds, time.monotonic()
    while time.monotonic() < end:
        one(BODY if i % 2 == 0 else HEAD)
        due += threads / rate
        time.sleep(max(0.0, due - time.monotonic()))
workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
[w.start() for w in workers]
[w.join() for w in workers]
print(json.dumps(counts))
"""


def healthz_p50_ms(port: int, n: int = 200) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    latencies = []
    try:
        for _ in range(n):
            started = time.perf_counter()
            conn.request("GET", "/healthz")
            response = conn.getresponse()
            response.read()
            latencies.append(time.perf_counter() - started)
            assert response.status == 200
    finally:
        conn.close()
    return statistics.median(latencies) * 1000


def test_healthz_latency_holds_during_a_stream_of_oversized_requests(live: int) -> None:
    """100 oversized requests a second (8 MB bodies, 8 MB headers), four at a time, from another
    process. Measured: /healthz p50 meanwhile <= 2x its p50 before + 1 ms (with the limits
    switched off the same stream puts it at ~8 ms against ~0.3 ms). Up to three tries: a busy
    shared machine may spoil one."""
    tries = []
    for _ in range(3):
        base = healthz_p50_ms(live)
        attack = subprocess.Popen(
            [sys.executable, "-c", ATTACK, str(live), "2.5", "4", "100"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        time.sleep(0.3)
        during = healthz_p50_ms(live)
        out, _ = attack.communicate(timeout=60)
        counts = json.loads(out)
        assert set(counts) == {"413", "431"}, counts  # every oversized request refused
        assert sum(counts.values()) >= 100
        tries.append((round(base, 3), round(during, 3), counts))
        if during <= 2 * base + 1.0:
            return
    pytest.fail(f"/healthz p50 (ms) before vs during the stream, per try: {tries}")
