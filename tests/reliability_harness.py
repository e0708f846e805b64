"""Reliability tests' harness: the real service as a child process (loadtests.service_process)
with admin, metric and process probes, and a load that runs in a background thread while a test
reloads, kills Redis or sends signals. Requests go over raw keep-alive connections
(benchmarks.loadgen.Connection); every outcome is kept, so a test can look at any time window.

Latency is measured from each request's scheduled time (paced clients), so a stall that delays
later requests counts against them (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import psutil
from live_service import service_env
from prometheus_client.parser import text_string_to_metric_families
from service_fixtures import ADMIN_TOKEN, AUTH

from benchmarks.loadgen import Connection
from loadtests.service_process import ServiceProcess, running

REQUEST_TIMEOUT_S = 10.0
REPORT_ENV = "CINESYNC_RELIABILITY_REPORT"  # a JSON file the tests' figures are merged into


@dataclass
class Live:
    """A running service and the probes the tests use."""

    svc: ServiceProcess
    http: httpx.Client

    @property
    def pid(self) -> int:
        return self.svc.proc.pid

    def get(self, path: str) -> httpx.Response:
        return self.http.get(path)

    def reload(self, version: int | None = None) -> httpx.Response:
        body = {} if version is None else {"version": version}
        return self.http.post("/admin/reload", json=body, headers=AUTH, timeout=60)

    def models(self) -> dict[str, object]:
        r = self.http.get("/admin/models", headers=AUTH)
        r.raise_for_status()
        data: dict[str, object] = r.json()
        return data

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples named `name` whose labels include `labels` (0 if none)."""
        text = self.http.get("/metrics").text
        total = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and labels.items() <= sample.labels.items():
                    total += sample.value
        return total

    def rss(self) -> int:
        return int(psutil.Process(self.pid).memory_info().rss)

    def open_fds(self) -> int:
        return int(psutil.Process(self.pid).num_fds())

    def accepted_connections(self) -> int:
        """Client connections the service holds open (its listening socket not counted)."""
        return sum(
            1
            for c in psutil.Process(self.pid).net_connections(kind="tcp")
            if c.laddr and c.laddr.port == self.svc.port and c.status != psutil.CONN_LISTEN
        )

    def connections_to(self, port: int) -> int:
        """The service's open connections to a local `port` (e.g. Redis)."""
        return sum(
            1
            for c in psutil.Process(self.pid).net_connections(kind="tcp")
            if c.raddr and c.raddr.port == port
        )


def live_env(store: Path, redis_url: str = "", **settings: str) -> dict[str, str]:
    """The child's environment: `settings` are CINESYNC_* names without the prefix."""
    extra = {"CINESYNC_ADMIN_TOKEN": ADMIN_TOKEN, "CINESYNC_LOG_LEVEL": "INFO"}
    extra.update({f"CINESYNC_{k}": v for k, v in settings.items()})
    return service_env(store, redis_url, **extra)


@contextmanager
def live(
    store: Path, log_dir: Path, redis_url: str = "", *, ready_path: str = "/readyz", **settings: str
) -> Iterator[Live]:
    """`cinesync serve` over `store` (LATEST), once `ready_path` answers 200; `settings` are
    CINESYNC_* names without the prefix (e.g. MAX_CONCURRENCY="8")."""
    env = live_env(store, redis_url, **settings)
    log_path = log_dir / "service.log"
    with (
        running(env=env, log_path=log_path, ready_path=ready_path, timeout_s=60) as svc,
        httpx.Client(base_url=svc.url, timeout=REQUEST_TIMEOUT_S) as http,
    ):
        yield Live(svc, http)


@dataclass(frozen=True)
class Outcome:
    """One request: when it was due and answered (monotonic seconds), what came back."""

    client: int
    user: str
    due: float
    sent: float
    done: float
    status: int  # 0 = transport error
    version: int | None = None
    body_user: str | None = None
    cache: str | None = None
    items: tuple[str, ...] = ()
    error: str = ""

    @property
    def latency(self) -> float:
        """From when the request was due (a late start counts)."""
        return self.done - self.due

    @property
    def service_time(self) -> float:
        """From when it was sent."""
        return self.done - self.sent


@dataclass
class LoadReport:
    outcomes: list[Outcome] = field(default_factory=list)
    readiness: list[tuple[float, int]] = field(default_factory=list)  # (time, /readyz status)

    def statuses(self) -> Counter[int]:
        return Counter(o.status for o in self.outcomes)

    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status != 200]

    def between(self, start: float, end: float) -> list[Outcome]:
        return [o for o in self.outcomes if start <= o.due < end]

    def versions_by_client(self) -> dict[int, list[int]]:
        seen: dict[int, list[int]] = {}
        for o in sorted(self.outcomes, key=lambda o: o.done):
            if o.version is not None:
                seen.setdefault(o.client, []).append(o.version)
        return seen


def p99_ms(outcomes: list[Outcome]) -> float:
    return percentile_ms(outcomes, 99)


def percentile_ms(outcomes: list[Outcome], q: float) -> float:
    if not outcomes:
        return float("nan")
    return float(np.percentile([o.latency for o in outcomes], q) * 1000.0)


Paths = Callable[[int], Iterator[tuple[str, str]]]  # client -> (user, path) forever


def known_users(client: int, n_users: int = 300, stride: int = 7) -> Iterator[tuple[str, str]]:
    """Known users of the tiny bundle ("1".."300"), each client starting elsewhere."""
    for i in itertools.count():
        user = str((client * stride + i) % n_users + 1)
        yield user, f"/recommend/{user}?k=10"


class Load:
    """`clients` paced keep-alive clients (`rate` requests/s each) plus a /readyz poller, on an
    event loop in a background thread: `with Load(...) as load: ...; report = load.report`."""

    def __init__(
        self,
        port: int,
        *,
        clients: int = 4,
        rate: float = 50.0,
        paths: Paths = known_users,
        poll_ready_s: float | None = 0.02,
        follow_readiness: bool = False,
    ) -> None:
        """With `follow_readiness`, clients send nothing new once /readyz has turned from 200
        to anything else (a load balancer taking the replica out)."""
        self.port, self.clients, self.rate = port, clients, rate
        self.paths, self.poll_ready_s = paths, poll_ready_s
        self.follow_readiness = follow_readiness
        self.unready = threading.Event()
        self.report = LoadReport()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reliability-load", daemon=True)
        self._started = threading.Event()

    def __enter__(self) -> Load:
        self._thread.start()
        self._started.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> LoadReport:
        self._stop.set()
        self._thread.join(REQUEST_TIMEOUT_S + 5)
        return self.report

    def _run(self) -> None:
        try:
            import uvloop

            uvloop.run(self._main())
        except ImportError:  # pragma: no cover - uvloop is a serve dependency
            asyncio.run(self._main())

    async def _main(self) -> None:
        tasks = [asyncio.create_task(self._client(c)) for c in range(self.clients)]
        if self.poll_ready_s is not None:
            tasks.append(asyncio.create_task(self._poll_ready(self.poll_ready_s)))
        self._started.set()
        await asyncio.gather(*tasks)

    async def _client(self, client: int) -> None:
        conn: Connection | None = None
        interval = 1.0 / self.rate
        start = time.monotonic() + client * interval / self.clients
        for i, (user, path) in enumerate(self.paths(client)):
            if self._stop.is_set() or (self.follow_readiness and self.unready.is_set()):
                break
            due = start + i * interval
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            sent = time.monotonic()
            try:
                if conn is None:
                    conn = await Connection.open("127.0.0.1", self.port)
                status, body = await asyncio.wait_for(conn.get(path), REQUEST_TIMEOUT_S)
            except (OSError, asyncio.IncompleteReadError, ValueError, TimeoutError) as exc:
                self.report.outcomes.append(
                    Outcome(client, user, due, sent, time.monotonic(), 0, error=repr(exc))
                )
                if conn is not None:
                    conn.close()
                conn = None
                continue
            self.report.outcomes.append(_outcome(client, user, due, sent, status, body))
        if conn is not None:
            conn.close()

    async def _poll_ready(self, every_s: float) -> None:
        conn: Connection | None = None
        was_ready = False
        while not self._stop.is_set():
            try:
                conn = conn or await Connection.open("127.0.0.1", self.port)
                status, _ = await asyncio.wait_for(conn.get("/readyz"), REQUEST_TIMEOUT_S)
            except (OSError, asyncio.IncompleteReadError, ValueError, TimeoutError):
                status = 0
                if conn is not None:
                    conn.close()
                conn = None
            self.report.readiness.append((time.monotonic(), status))
            if status == 200:
                was_ready = True
            elif was_ready:
                self.unready.set()
            await asyncio.sleep(every_s)
        if conn is not None:
            conn.close()


def _outcome(client: int, user: str, due: float, sent: float, status: int, body: bytes) -> Outcome:
    done = time.monotonic()
    if status != 200:
        detail = body[:200].decode(errors="replace")
        return Outcome(client, user, due, sent, done, status, error=detail)
    data = json.loads(body)
    return Outcome(
        client, user, due, sent, done, status, data["model_version"], data["user_id"],
        data["cache"], tuple(item["item_id"] for item in data["items"]),
    )  # fmt: skip


def record_figures(section: str, figures: dict[str, object]) -> None:
    """Print the figures and merge them into $CINESYNC_RELIABILITY_REPORT (if set)."""
    print(f"[reliability] {section}: {json.dumps(figures)}")
    target = os.environ.get(REPORT_ENV)
    if not target:
        return
    path = Path(target)
    data = json.loads(path.read_text()) if path.is_file() else {}
    data[section] = figures
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def wait_until(check: Callable[[], bool], timeout_s: float, every_s: float = 0.02) -> float:
    """Seconds until `check()` held; AssertionError after `timeout_s`."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if check():
            return time.monotonic() - start
        time.sleep(every_s)
    raise AssertionError(f"condition not met within {timeout_s} s")


def add_versions(store: Path, tiny_bundle: Path, work: Path, count: int) -> list[int]:
    """Publish `count` more distinguishable versions (perturbed embeddings), LATEST unchanged."""
    from service_fixtures import MODEL, perturbed_copy

    from model_store.store import ModelStore

    published = []
    for seed in range(count):
        bundle = perturbed_copy(tiny_bundle, work / f"extra-{seed}", seed=100 + seed)
        published.append(ModelStore(store).publish(MODEL, bundle, set_latest=False))
    return published


BROKEN = {  # how -> a phrase the 409's reason must contain
    "checksum mismatch": "sha256",
    "wrong embedding dimension": "item_embeddings.npy: shape",
    "missing file": "missing histories.npz",
    "truncated onnx": "encoder.onnx",
}


def publish_broken(store: Path, tiny_bundle: Path, work: Path, how: str) -> int:
    """Publish a copy of the tiny bundle broken in one way `how` (a BROKEN key); LATEST kept."""
    import shutil

    from service_fixtures import MODEL

    from model_store.store import ModelStore

    bundle = work / f"broken-{how.replace(' ', '-')}"
    shutil.copytree(tiny_bundle, bundle)
    if how == "wrong embedding dimension":
        emb = np.load(bundle / "item_embeddings.npy")
        np.save(bundle / "item_embeddings.npy", np.hstack([emb, emb[:, :8]]))
    elif how == "truncated onnx":
        data = (bundle / "encoder.onnx").read_bytes()
        (bundle / "encoder.onnx").write_bytes(data[: len(data) * 2 // 3])
    version = ModelStore(store).publish(MODEL, bundle, set_latest=False)
    folder = store / MODEL / str(version)
    if how == "checksum mismatch":  # a bit flipped after publishing
        with (folder / "item_embeddings.npy").open("r+b") as f:
            f.seek(-3, 2)
            byte = f.read(1)
            f.seek(-3, 2)
            f.write(bytes([byte[0] ^ 1]))
    elif how == "missing file":
        (folder / "histories.npz").unlink()
    return version


def publish_large(store: Path, tiny_bundle: Path, work: Path, users: int) -> int:
    """The tiny model with `users` synthetic histories: a bundle that is slow to load for real
    (parsing, checks and a warm-up over many histories), published as LATEST."""
    import shutil

    from service_fixtures import MODEL

    from model_store.store import ModelStore

    bundle = work / "large-bundle"
    shutil.copytree(tiny_bundle, bundle)
    rng = np.random.default_rng(0)
    offsets = np.concatenate([[0], np.cumsum(rng.integers(3, 30, users))]).astype(np.int64)
    items = rng.integers(1, 201, int(offsets[-1])).astype(np.int32)
    user_ids = np.array([f"synthetic-{i}" for i in range(users)])
    np.savez(bundle / "histories.npz", user_ids=user_ids, offsets=offsets, items=items)
    return ModelStore(store).publish(MODEL, bundle)
