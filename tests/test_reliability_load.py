"""Load held (issue 6, scenarios 1, 2 and 6) against the real `cinesync serve` process: steady
load, reloads to newer versions under load, and overload past the concurrency bound.

Latency comparisons use medians of per-window p99s, steady and reload windows interleaved, so
the other work on a shared 2-core machine weighs on both alike."""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from reliability_harness import (
    Load,
    Outcome,
    add_versions,
    live,
    p99_ms,
    percentile_ms,
    record_figures,
    wait_until,
)

# One GIL switch interval (5 ms) of slack on top of the 2x: at p99s of a few milliseconds, a
# single thread hand-off during a load would otherwise fail a ratio that means nothing.
RATIO, SLACK_MS = 2.0, 5.0


@dataclass(frozen=True)
class Size:
    seconds: float = 4.0
    reloads: int = 3
    overload_s: float = 3.0


CI = pytest.param(Size(), id="ci")
LONG = pytest.param(Size(seconds=60, reloads=12, overload_s=15), id="long", marks=pytest.mark.slow)


@pytest.mark.parametrize("size", [CI, LONG])
def test_steady_load_has_no_failures_and_its_p99_is_recorded(
    store_dir: Path, tmp_path: Path, size: Size
) -> None:
    with live(store_dir, tmp_path) as svc, Load(svc.svc.port, clients=4, rate=50) as load:
        time.sleep(size.seconds)
    report = load.report
    assert report.failures() == []
    assert len(report.outcomes) >= 4 * 50 * size.seconds * 0.8
    assert {status for _, status in report.readiness} == {200}
    warm = report.between(report.outcomes[0].due + 1.0, float("inf"))
    record_figures(
        f"steady-{size.seconds:.0f}s",
        {"requests": len(report.outcomes), "rps": 200, "p50_ms": round(percentile_ms(warm, 50), 2),
         "p99_ms": round(p99_ms(warm), 2)},
    )  # fmt: skip


@pytest.mark.parametrize("size", [CI, LONG])
def test_reload_under_load_drops_nothing_and_versions_only_move_forward(
    store_dir: Path, tiny_bundle: Path, tmp_path: Path, size: Size
) -> None:
    versions = add_versions(store_dir, tiny_bundle, tmp_path, size.reloads)  # 3, 4, ...
    windows: list[tuple[float, float]] = []
    with live(store_dir, tmp_path) as svc, Load(svc.svc.port, clients=4, rate=40) as load:
        time.sleep(2.0)  # every user seen once: steady state is L1 hits
        for version in versions:
            time.sleep(1.0)
            start = time.monotonic()
            r = svc.reload(version)
            assert r.status_code == 200, r.text
            windows.append((start, time.monotonic()))
        time.sleep(0.5)
    report = load.report
    assert report.failures() == []
    assert {status for _, status in report.readiness} == {200}, "readiness dropped"
    for client, seen in report.versions_by_client().items():
        assert seen == sorted(seen), f"client {client} went back to an older version"
        assert (seen[0], seen[-1]) == (2, versions[-1]), client
    steady = [p99_ms(report.between(start - 1.0, start)) for start, _ in windows]
    reload = [p99_ms(report.between(start, end + 0.5)) for start, end in windows]
    steady_p99, reload_p99 = statistics.median(steady), statistics.median(reload)
    record_figures(
        f"reload-under-load-{size.reloads}",
        {"reloads": size.reloads, "rps": 160, "steady_p99_ms": round(steady_p99, 2),
         "reload_window_p99_ms": round(reload_p99, 2),
         "reload_s_median": round(statistics.median(e - s for s, e in windows), 3)},
    )  # fmt: skip
    assert reload_p99 <= RATIO * steady_p99 + SLACK_MS, (steady, reload)


def miss_paths(client: int) -> Iterator[tuple[str, str]]:
    """Known users with ever-changing k: (nearly) every request computes (encoder + FAISS)."""
    for i in itertools.count():
        user = str((client * 37 + i) % 300 + 1)
        yield user, f"/recommend/{user}?k={(client + i) % 100 + 1}"


@pytest.mark.parametrize("size", [CI, LONG])
def test_overload_gets_fast_503s_and_p99_recovers_once_load_drops(
    store_dir: Path, tmp_path: Path, size: Size
) -> None:
    limit = 4  # 8 shed under 5% of this storm on a 2-core Xeon with AVX-512
    with live(store_dir, tmp_path, MAX_CONCURRENCY=str(limit)) as svc:
        with Load(svc.svc.port, clients=2, rate=50, paths=miss_paths) as before:
            time.sleep(2.0)
        inflight: list[float] = []
        rejected_before = svc.metric("cinesync_requests_total", result="rejected")
        # open loop, 64 x 20/s of cache misses: more than 4 in flight at once on any 2-core machine
        with Load(svc.svc.port, clients=64, rate=20, paths=miss_paths) as storm:
            deadline = time.monotonic() + size.overload_s
            while time.monotonic() < deadline:
                inflight.append(svc.metric("cinesync_inflight_requests"))
        counted = svc.metric("cinesync_requests_total", result="rejected") - rejected_before
        wait_until(lambda: svc.metric("cinesync_inflight_requests") == 0, 10)
        with Load(svc.svc.port, clients=2, rate=50, paths=miss_paths) as after:
            time.sleep(2.0)
    overload = storm.report.outcomes
    shed = [o for o in overload if o.status == 503]
    assert {o.status for o in overload} <= {200, 503}, storm.report.statuses()
    # how many are shed depends on the CPU (a faster one serves more within the limit): that
    # some are, each counted, with in-flight requests never above the limit, does not
    assert shed, storm.report.statuses()
    assert counted == len(shed)
    assert max(inflight) <= limit
    shed_p99 = percentile_ms([_sent(o) for o in shed], 99)
    assert shed_p99 < 250.0, "a rejection must be fast, not queued (piling up takes seconds)"
    assert p99_ms(overload) < 1000.0, "requests pile up (latency counted from when each was due)"
    base = before.report.between(before.report.outcomes[0].due + 0.5, float("inf"))
    recovered = after.report.between(after.report.outcomes[0].due + 0.5, float("inf"))
    assert before.report.failures() == []
    assert after.report.failures() == []
    record_figures(
        f"overload-{size.overload_s:.0f}s",
        {"limit": limit, "offered_rps": 1280, "requests": len(overload), "rejected": len(shed),
         "rejected_p99_ms": round(shed_p99, 2), "p99_all_ms": round(p99_ms(overload), 2),
         "served_rps": round((len(overload) - len(shed)) / size.overload_s),
         "p99_before_ms": round(p99_ms(base), 2), "p99_after_ms": round(p99_ms(recovered), 2),
         "max_inflight": max(inflight)},
    )  # fmt: skip
    assert p99_ms(recovered) <= RATIO * p99_ms(base) + SLACK_MS


def _sent(o: Outcome) -> Outcome:
    """The outcome timed from when it was sent (a back-to-back client is always late)."""
    return Outcome(o.client, o.user, o.sent, o.sent, o.done, o.status)
