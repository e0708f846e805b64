"""The locust load test, headless, against the real service: zero failures, every request type
exercised, CSV stats written, and a missed SLO turns into a non-zero exit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import RedisServer
from live_service import live_service, tiny_store

from loadtests.checks import ValidationError, check_explain, check_recommendation
from loadtests.service_process import REPO_ROOT, ServiceProcess
from loadtests.summary import read_stats, verdict

pytestmark = pytest.mark.redis
RECOMMEND, EVENTS, EXPLAIN = (
    "/recommend/[user_id]", "/users/[user_id]/events", "/explain/[user_id]/[item_id]",
)  # fmt: skip


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[tuple[ServiceProcess, Path]]:
    store = tiny_store(tmp_path_factory)
    redis_server.flushall()
    with live_service(store, redis_server.url, tmp_path_factory.mktemp("locust-svc")) as svc:
        yield svc, store


def loadtest(
    svc: ServiceProcess, store: Path, out: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CINESYNC_")}
    return subprocess.run(
        [sys.executable, "-m", "loadtests.run", "--host", svc.url, "--store", str(store),
         "--out", str(out), *extra],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_short_headless_run_has_no_failures_and_covers_every_request_type(
    service: tuple[ServiceProcess, Path], tmp_path: Path
) -> None:
    svc, store = service
    result = loadtest(svc, store, tmp_path, "--users", "4", "--spawn-rate", "4",
                      "--run-time", "10s", "--rate", "40", "--mix",
                      "recommend=0.55,cold=0.15,event=0.15,explain=0.15",
                      "--max-failure-ratio", "0", "--slo-p99-ms", "2000")  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr + svc.log_tail()
    stats = read_stats(tmp_path / "locust_result.json")
    assert stats["Aggregated"].failures == 0
    assert stats["Aggregated"].requests >= 100  # 40 req/s for 10 s, minus ramp-up
    for name in (RECOMMEND, EVENTS, EXPLAIN):
        assert stats[name].requests > 0, name
    assert (tmp_path / "locust_stats.csv").exists()
    assert (tmp_path / "summary.csv").read_text().startswith("name,requests,failures")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["passed"] is True
    assert "p99" in result.stdout
    assert "req/s" in result.stdout
    # the same figures judged against an SLO no service can meet
    assert verdict(stats, slo_p99_ms=0.0001, max_failure_ratio=0) != []


def test_runner_exits_non_zero_when_an_slo_is_missed(
    service: tuple[ServiceProcess, Path], tmp_path: Path
) -> None:
    svc, store = service
    result = loadtest(svc, store, tmp_path, "--users", "2", "--spawn-rate", "2",
                      "--run-time", "3s", "--slo-p99-ms", "0.0001")  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "SLO missed" in result.stderr


BODY = {"user_id": "7", "model_version": 3, "strategy": "sequential", "cache": "miss",
        "items": [{"item_id": str(i), "title": "t", "genres": [], "score": 1.0}
                  for i in (10, 11, 12)]}  # fmt: skip


def test_response_checks_accept_a_valid_answer_and_reject_seen_or_short_lists() -> None:
    assert check_recommendation(BODY, "7", 3, frozenset({"1"}), 3, cold=False) == ["10", "11", "12"]
    with pytest.raises(ValidationError, match="already-seen"):
        check_recommendation(BODY, "7", 3, frozenset({"11"}), 3, cold=False)
    with pytest.raises(ValidationError, match="expected 4"):
        check_recommendation(BODY, "7", 4, frozenset(), 4, cold=False)
    with pytest.raises(ValidationError, match="model_version"):
        check_recommendation({**BODY, "model_version": None}, "7", 3, frozenset(), 3, cold=False)
    with pytest.raises(ValidationError, match="cold-start"):
        check_recommendation(BODY, "7", 3, frozenset(), 3, cold=True)
    explained = {"item": {"item_id": "10"}, "strategy": "blend", "because": [], "score": 0.5}
    check_explain(explained, "10")
    with pytest.raises(ValidationError):
        check_explain(explained, "11")
