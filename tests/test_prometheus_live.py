"""A real Prometheus scrapes the real service every second while locust drives it: the p99 that
Prometheus computes from cinesync_request_duration_seconds agrees with locust's own p99 within
one histogram bucket; the alert rules load and evaluate; every dashboard query runs."""

from __future__ import annotations

import bisect
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import RedisServer
from live_service import live_service, tiny_store

from loadtests.service_process import REPO_ROOT, ServiceProcess, free_port, stop
from loadtests.summary import read_stats
from service.metrics import LATENCY_BUCKETS

pytestmark = pytest.mark.redis
RECOMMEND = "/recommend/[user_id]"
LOAD_SECONDS = 15


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def get(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=10) as resp:
            body = json.loads(resp.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.get("/api/v1/query", query=expr)
        result: list[dict[str, Any]] = data["result"]
        return result


@pytest.fixture(scope="module")
def scraped_service(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[tuple[ServiceProcess, Prometheus, Path]]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is not installed (apt-get install prometheus)")
    store = tiny_store(tmp_path_factory)
    workdir = tmp_path_factory.mktemp("prometheus")
    redis_server.flushall()
    with live_service(store, redis_server.url, workdir) as svc:
        shutil.copy(REPO_ROOT / "deploy/alerts.yml", workdir / "alerts.yml")
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "900ms",
                       "evaluation_interval": "1s"},
            "rule_files": ["alerts.yml"],
            "scrape_configs": [{"job_name": "cinesync-api",
                                "static_configs": [{"targets": [f"127.0.0.1:{svc.port}"]}]}],
        }  # fmt: skip
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        with (workdir / "prometheus.log").open("wb") as log:
            proc = subprocess.Popen(
                [binary, f"--config.file={workdir / 'prometheus.yml'}",
                 f"--storage.tsdb.path={workdir / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{port}"],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            prom = Prometheus(f"http://127.0.0.1:{port}")
            wait_for(lambda: prom.query('up{job="cinesync-api"} == 1'), 30, workdir)
            yield svc, prom, store
        finally:
            stop(proc)


def wait_for(check: Any, timeout_s: float, workdir: Path) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            value = check()
        except OSError:
            value = None
        if value:
            return value
        time.sleep(0.25)
    log = (workdir / "prometheus.log").read_text(errors="replace")[-3000:]
    raise AssertionError(f"condition not met within {timeout_s} s; prometheus log:\n{log}")


def bucket_index(seconds: float) -> int:
    """Index of the histogram bucket (upper bound) holding `seconds`."""
    return bisect.bisect_left(LATENCY_BUCKETS, seconds - 1e-12)


def drive_load(svc: ServiceProcess, store: Path, out: Path) -> Path:
    """One headless locust run against the service; returns its output folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CINESYNC_")}
    result = subprocess.run(
        [sys.executable, "-m", "loadtests.run", "--host", svc.url, "--store", str(store),
         "--users", "4", "--spawn-rate", "4", "--run-time", f"{LOAD_SECONDS}s", "--rate", "40",
         "--max-failure-ratio", "0", "--out", str(out)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    time.sleep(2.5)  # two more scrapes after the last request
    return out


@pytest.fixture(scope="module")
def load_run(
    scraped_service: tuple[ServiceProcess, Prometheus, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    svc, _, store = scraped_service
    return drive_load(svc, store, tmp_path_factory.mktemp("prom-load"))


def test_prometheus_p99_is_the_load_generators_p99_less_client_side_time(
    scraped_service: tuple[ServiceProcess, Prometheus, Path],
    load_run: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Server-side p99 (Prometheus) vs client-side p99 (locust) of the same requests.

    Each request's server time is part of its client time, so the server's p99 may not exceed
    the client's by more than the one bucket histogram_quantile interpolates within. The client
    also sees time the server cannot (kernel and client queues, locust's own GIL), which a busy
    2-core machine stretches by up to ~2x at the tail (seen here: 14.5 ms vs 26 ms), so from
    below the server's p99 must be at least a quarter of the client's. Wrong units (x1000), a
    histogram that reads more than a bucket high, or requests not counted fail every window; up
    to 3 load windows are tried, each judged alone.
    """
    svc, prom, store = scraped_service
    failures: list[str] = []
    out = load_run
    for attempt in range(3):
        if attempt:
            out = drive_load(svc, store, tmp_path_factory.mktemp("prom-load-retry"))
        locust = read_stats(out / "locust_result.json")[RECOMMEND]
        assert locust.requests > 150
        window = f"{LOAD_SECONDS + 3}s" if attempt else f"{LOAD_SECONDS + 20}s"
        counted = prom.query(
            "sum(increase(cinesync_request_duration_seconds_count"
            f'{{endpoint="recommend"}}[{window}]))'
        )
        assert float(counted[0]["value"][1]) >= 0.8 * locust.requests
        result = prom.query(
            "histogram_quantile(0.99, sum by (le) (rate("
            f'cinesync_request_duration_seconds_bucket{{endpoint="recommend"}}[{window}])))'
        )
        prom_p99 = float(result[0]["value"][1])
        locust_p99 = locust.p99_ms / 1000.0
        print(f"recommend p99: prometheus {prom_p99 * 1000:.2f} ms, locust {locust.p99_ms:g} ms")
        if bucket_index(prom_p99) <= bucket_index(locust_p99) + 1 and prom_p99 >= locust_p99 / 4:
            return
        failures.append(
            f"prometheus p99 {prom_p99 * 1000:.2f} ms vs locust p99 {locust.p99_ms:g} ms "
            f"(1-minute load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)"
        )
    raise AssertionError("; ".join(failures))


def test_alert_rules_load_and_none_fires_on_a_healthy_service(
    scraped_service: tuple[ServiceProcess, Prometheus, Path], load_run: Path
) -> None:
    _, prom, _ = scraped_service
    groups = prom.get("/api/v1/rules")["groups"]
    rules = {r["name"]: r for g in groups for r in g["rules"]}
    assert {"CineSyncHighP99Latency", "CineSyncHighErrorRatio", "CineSyncRedisBreakerOpen",
            "CineSyncNoBundleLoaded", "CineSyncApiDown",
            "CineSyncApiMissing"} <= set(rules)  # fmt: skip
    for name, rule in rules.items():
        assert rule["health"] == "ok", (name, rule.get("lastError"))
    for name in ("CineSyncNoBundleLoaded", "CineSyncRedisBreakerOpen", "CineSyncApiDown",
                 "CineSyncApiMissing", "CineSyncHighErrorRatio"):  # fmt: skip
        assert rule_state(rules[name]) == "inactive", name


def rule_state(rule: dict[str, Any]) -> str:
    return str(rule.get("state", "inactive"))


REQUIRED_PANELS = (
    "Request rate by endpoint", "Latency p50 / p95 / p99 by endpoint", "Cache hit ratio by tier",
    "Strategy mix (recommend)", "Served model version", "Online coverage and Gini of exposure",
    "Bundle ready",
)  # fmt: skip


def test_every_dashboard_query_runs_and_the_core_panels_have_data(
    scraped_service: tuple[ServiceProcess, Prometheus, Path], load_run: Path
) -> None:
    _, prom, _ = scraped_service
    dashboard = json.loads((REPO_ROOT / "deploy/grafana/dashboards/cinesync.json").read_text())
    panels = {p["title"]: p for p in dashboard["panels"] if p["type"] != "row"}
    without_data = []
    for title, panel in panels.items():
        for target in panel["targets"]:
            expr = target["expr"].replace("$__rate_interval", "10s").replace("$__range", "60s")
            if not prom.query(expr):  # a PromQL error fails inside query()
                without_data.append((title, expr))
    assert not [(t, e) for t, e in without_data if t in REQUIRED_PANELS]
