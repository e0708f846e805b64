"""Reloads against the real `cinesync serve` process (issue 6, scenarios 3, 4, 5 and 13): broken
bundles under load, reload storms and long reload cycles (memory), rollback, partial writes."""

from __future__ import annotations

import functools
import shutil
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from reliability_harness import (
    BROKEN,
    Load,
    known_users,
    live,
    publish_broken,
    record_figures,
)
from service_fixtures import AUTH, MODEL

from model_store.publish import STAGING_PREFIX
from model_store.store import ModelStore

RSS_TOLERANCE = 0.10
PLATEAU_CYCLES = slice(4, 10)  # "the plateau after the first few" cycles
LAST_CYCLES = slice(-5, None)  # medians: one sample may catch a bundle about to be freed


def test_failed_reloads_under_load_are_409_with_the_reason_and_v_keeps_serving(
    store_dir: Path, tiny_bundle: Path, tmp_path: Path
) -> None:
    broken = {how: publish_broken(store_dir, tiny_bundle, tmp_path, how) for how in BROKEN}
    with live(store_dir, tmp_path) as svc:
        with Load(svc.svc.port, clients=4, rate=40) as load:
            time.sleep(0.5)
            for how, version in broken.items():
                r = svc.reload(version)
                assert r.status_code == 409, (how, r.text)
                assert BROKEN[how] in r.json()["detail"], (how, r.json())
                assert svc.models()["last_error"] == r.json()["detail"]
                time.sleep(0.2)
        failures = svc.metric("cinesync_reloads_total", result="failure")
        successes = svc.metric("cinesync_reloads_total", result="success")
        assert svc.get("/readyz").json()["model_version"] == 2
    assert (failures, successes) == (len(BROKEN), 1)  # the start-up load is the one success
    report = load.report
    assert report.failures() == []
    assert {o.version for o in report.outcomes} == {2}
    assert {status for _, status in report.readiness} == {200}


def _reload_all_at_once(url: str, version: int, calls: int) -> list[httpx.Response]:
    def one(_: int) -> httpx.Response:
        with httpx.Client(base_url=url, timeout=60) as client:
            return client.post("/admin/reload", json={"version": version}, headers=AUTH)

    with ThreadPoolExecutor(calls) as pool:
        return list(pool.map(one, range(calls)))


@pytest.mark.parametrize(
    "cycles", [pytest.param(40, id="ci"), pytest.param(200, id="long", marks=pytest.mark.slow)]
)
def test_reload_storms_and_cycles_neither_crash_nor_leak(
    store_dir: Path, tmp_path: Path, cycles: int
) -> None:
    with live(store_dir, tmp_path) as svc, Load(svc.svc.port, clients=1, rate=20) as load:
        answers = _reload_all_at_once(svc.svc.url, 1, 32)
        codes = sorted(r.status_code for r in answers)
        assert set(codes) <= {200, 409}, codes
        assert codes[0] == 200, codes
        assert all("in progress" in r.json()["detail"] for r in answers if r.status_code == 409)
        assert svc.get("/readyz").json()["model_version"] == 1
        rss: list[int] = []
        started = time.monotonic()
        for cycle in range(cycles):
            r = svc.reload(2 - cycle % 2)
            assert r.status_code == 200, r.text
            rss.append(svc.rss())
        seconds = time.monotonic() - started
        assert svc.svc.proc.poll() is None
        assert svc.get("/readyz").status_code == 200
    assert load.report.failures() == []
    plateau, last = statistics.median(rss[PLATEAU_CYCLES]), statistics.median(rss[LAST_CYCLES])
    record_figures(
        f"reload-cycles-{cycles}",
        {"cycles": cycles, "concurrent_calls": 32, "accepted": codes.count(200),
         "refused_in_progress": codes.count(409), "reload_s_mean": round(seconds / cycles, 3),
         "rss_first_mb": round(rss[0] / 2**20, 1), "rss_plateau_mb": round(plateau / 2**20, 1),
         "rss_last_mb": round(last / 2**20, 1), "rss_max_mb": round(max(rss) / 2**20, 1)},
    )  # fmt: skip
    assert last <= plateau * (1 + RSS_TOLERANCE), [round(x / 2**20, 1) for x in rss]


def _recommendations(
    get: Callable[[str], httpx.Response], users: list[str]
) -> dict[str, tuple[int, list[str]]]:
    out = {}
    for user in users:
        body = get(f"/recommend/{user}?k=10").json()
        out[user] = (body["model_version"], [i["item_id"] for i in body["items"]])
    return out


def test_rollback_serves_v_minus_1_and_nothing_cached_for_v_plus_1(
    store_dir: Path, tmp_path: Path, redis_url: str
) -> None:
    users = [str(u) for u in range(1, 41)]
    with live(store_dir, tmp_path, redis_url) as svc:
        assert svc.reload(1).status_code == 200
        v1 = _recommendations(svc.get, users)
        assert svc.reload(2).status_code == 200
        v2 = _recommendations(svc.get, users)
        assert _recommendations(svc.get, users) == v2  # now cached in L1 and Redis
        assert sum(v1[u][1] != v2[u][1] for u in users) > len(users) // 2
        few = functools.partial(known_users, n_users=len(users))
        with Load(svc.svc.port, clients=2, rate=40, paths=few) as load:
            time.sleep(0.5)
            assert ModelStore(store_dir).rollback(MODEL) == 1  # `cinesync store rollback`
            r = svc.reload()
            assert r.json() == {"previous": 2, "current": 1}
            time.sleep(0.5)
        after = _recommendations(svc.get, users)
    assert after == v1
    report = load.report
    assert report.failures() == []
    for client, seen in report.versions_by_client().items():
        assert seen == sorted(seen, reverse=True), client  # 2 ... then 1 only
    expected = {1: v1, 2: v2}
    for o in report.outcomes:  # each answer is its version's own list, never the other's
        assert o.version is not None
        assert o.items == tuple(expected[o.version][o.user][1]), (o.user, o.version, o.cache)
    assert any(o.version == 1 for o in report.outcomes)
    assert {status for _, status in report.readiness} == {200}


def test_partial_writes_are_never_listed_nor_served_and_cause_no_crash(
    store_dir: Path, tiny_bundle: Path, tmp_path: Path
) -> None:
    model_dir = store_dir / MODEL
    no_manifest = model_dir / "3"  # files copied, the manifest (written last) never came
    shutil.copytree(model_dir / "2", no_manifest)
    (no_manifest / "manifest.json").unlink()
    staging = model_dir / f"{STAGING_PREFIX}0123abcd"  # a publish that died mid-copy
    staging.mkdir()
    shutil.copy(tiny_bundle / "encoder.onnx", staging / "encoder.onnx")
    missing_file = ModelStore(store_dir).publish(MODEL, tiny_bundle, set_latest=False)
    (model_dir / str(missing_file) / "items.jsonl").unlink()
    for _ in range(2):  # a fresh start with the debris in place, then a restart
        with live(store_dir, tmp_path) as svc, Load(svc.svc.port, clients=2, rate=40) as load:
            listed = [v["version"] for v in svc.models()["versions"]]  # type: ignore[index]
            assert 3 not in listed
            r3 = svc.reload(3)
            assert r3.status_code == 409, r3.text
            assert "manifest.json" in r3.json()["detail"]
            r4 = svc.reload(missing_file)
            assert r4.status_code == 409
            assert "missing items.jsonl" in r4.json()["detail"]
            assert svc.reload().json()["current"] == 2  # LATEST is still the complete v2
            assert svc.get("/readyz").json()["model_version"] == 2
        assert load.report.failures() == []
        assert {o.version for o in load.report.outcomes} == {2}
