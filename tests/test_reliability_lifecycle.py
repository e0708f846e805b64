"""Process lifecycle of the real `cinesync serve` (issue 6, scenarios 14-16): SIGTERM under load,
a slow bundle load at start-up, and a GPU asked for on a machine without one."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import onnxruntime as ort
import pytest
from reliability_harness import Load, live, live_env, publish_large, record_figures

from loadtests.service_process import REPO_ROOT, cinesync_serve_command, free_port

SHUTDOWN_DELAY_S = 1.0


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return False
    return True


def test_sigterm_under_load_drops_readiness_first_and_lets_in_flight_requests_finish(
    store_dir: Path, tmp_path: Path
) -> None:
    settings = {"SHUTDOWN_DELAY_S": str(SHUTDOWN_DELAY_S), "GRACEFUL_TIMEOUT_S": "10"}
    with live(store_dir, tmp_path, **settings) as svc:
        port, proc = svc.svc.port, svc.svc.proc
        with Load(port, clients=4, rate=40, follow_readiness=True) as load:
            time.sleep(1.0)
            body = json.dumps({"item_id": "5", "type": "view"}).encode()
            slow = socket.create_connection(("127.0.0.1", port), timeout=15)
            slow.sendall(
                b"POST /users/slow-client/events HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body[:5]
            )  # an event whose body is still on its way: in flight across the shutdown
            time.sleep(0.1)
            term = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            while _accepts(port) and time.monotonic() - term < 15:
                time.sleep(0.01)
            closed = time.monotonic()
            slow.sendall(body[5:])
            answer = slow.recv(4096)
            answered = time.monotonic()
            slow.close()
            code = proc.wait(timeout=15)
            exited = time.monotonic()
        log = svc.svc.log_tail(1_000_000)
    report = load.report
    unready = next((t, s) for t, s in report.readiness if t > term and s != 200)
    record_figures(
        "sigterm",
        {"shutdown_delay_s": SHUTDOWN_DELAY_S, "term_to_unready_s": round(unready[0] - term, 3),
         "term_to_listener_closed_s": round(closed - term, 3),
         "in_flight_answered_after_close_s": round(answered - closed, 3),
         "term_to_exit_s": round(exited - term, 3), "requests": len(report.outcomes)},
    )  # fmt: skip
    assert unready[1] == 503, "readiness must answer 503 (not vanish) while draining"
    assert unready[0] - term < 0.5
    assert unready[0] < closed, "readiness drops before the listener closes"
    assert closed - term >= SHUTDOWN_DELAY_S * 0.8
    assert answer.startswith(b"HTTP/1.1 202"), answer[:200]
    assert answered > closed
    assert report.failures() == [], report.statuses()  # nothing sent got an error or a 5xx
    assert code in (0, -signal.SIGTERM), code  # uvicorn re-raises the signal once it is done
    assert "service stopped" in log  # the lifespan ran to its end: a graceful exit
    assert exited >= answered


@pytest.mark.parametrize(
    ("users", "warmup"),
    [pytest.param(200_000, 2000, id="ci"),
     pytest.param(1_000_000, 10_000, id="long", marks=pytest.mark.slow)],
)  # fmt: skip
def test_a_slow_bundle_load_keeps_readiness_false_until_loaded_and_warmed_while_alive(
    tiny_bundle: Path, tmp_path: Path, users: int, warmup: int
) -> None:
    store = tmp_path / "store"
    publish_large(store, tiny_bundle, tmp_path, users)
    samples: list[tuple[float, int, int, int]] = []  # (health s, health, ready, recommend)
    settings = {"ENCODER__WARMUP_QUERIES": str(warmup)}
    with live(store, tmp_path, ready_path="/healthz", **settings) as svc:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            started = time.monotonic()
            health = svc.get("/healthz").status_code
            seconds = time.monotonic() - started
            ready = svc.get("/readyz")
            if ready.status_code == 200:
                loaded_logged = "bundle loaded" in svc.svc.log_tail(1_000_000)
                bundle_ready = svc.metric("cinesync_bundle_ready")
                break
            assert "loading" in ready.json()["detail"]
            recommend = svc.get("/recommend/1")
            if recommend.status_code == 200:  # the load ended between the two requests:
                assert svc.get("/readyz").status_code == 200  # servable only once ready
                continue
            samples.append((seconds, health, ready.status_code, recommend.status_code))
            time.sleep(0.02)
        else:
            pytest.fail("never ready")
        served = svc.models()["served"]
        assert svc.get("/recommend/synthetic-7").status_code == 200
    assert len(samples) >= 5, "the load was not slow enough to observe"
    assert {h for _, h, _, _ in samples} == {200}, "liveness must hold while loading"
    assert {r for _, _, r, _ in samples} == {503}
    assert {c for _, _, _, c in samples} == {503}
    assert max(s for s, *_ in samples) < 1.0  # a liveness probe with a 1 s timeout passes
    assert loaded_logged, "ready before the load (and its warm-up) finished"
    assert bundle_ready == 1.0
    record_figures(
        f"slow-load-{users}",
        {"users": users, "warmup_queries": warmup, "load_seconds": served["load_seconds"],  # type: ignore[index]
         "not_ready_samples": len(samples),
         "max_healthz_ms": round(max(s for s, *_ in samples) * 1000, 1)},
    )  # fmt: skip


def test_a_gpu_asked_for_without_one_falls_back_to_the_cpu_with_a_clear_log(
    store_dir: Path, tmp_path: Path
) -> None:
    with live(store_dir, tmp_path, ENCODER__USE_GPU="true", INDEX__KIND="gpu") as svc:
        ready = svc.get("/readyz").json()
        served = svc.models()["served"]
        assert svc.get("/recommend/1").status_code == 200
        log = svc.svc.log_tail(1_000_000)
    assert ready["providers"] == ["CPUExecutionProvider"]
    assert "CUDAExecutionProvider" in served["provider_fallback"]  # type: ignore[index]
    assert served["index"]["kind"] == "flat"  # type: ignore[index]
    assert "gpu" in served["index"]["fallback_reason"]  # type: ignore[index]
    assert "falling back to CPUExecutionProvider" in log
    assert "falling back to a CPU index" in log


def test_a_gpu_required_without_one_is_a_clear_start_up_error(
    store_dir: Path, tmp_path: Path
) -> None:
    env = live_env(store_dir, ENCODER__USE_GPU="true", ENCODER__REQUIRE_GPU="true")
    env["PYTHONPATH"] = str(REPO_ROOT)
    result = subprocess.run(
        cinesync_serve_command(free_port()), cwd=REPO_ROOT, env=env, capture_output=True,
        text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert "CINESYNC_ENCODER__REQUIRE_GPU" in result.stderr
    assert "CUDAExecutionProvider" in result.stderr


@pytest.mark.gpu
@pytest.mark.skipif(
    "CUDAExecutionProvider" not in ort.get_available_providers(),
    reason="needs onnxruntime-gpu on a CUDA machine",
)
def test_on_a_cuda_machine_the_encoder_runs_on_cuda(store_dir: Path, tmp_path: Path) -> None:
    with live(store_dir, tmp_path, ENCODER__USE_GPU="true", ENCODER__REQUIRE_GPU="true") as svc:
        assert svc.get("/readyz").json()["providers"][0] == "CUDAExecutionProvider"
        assert httpx.get(f"{svc.svc.url}/recommend/1").status_code == 200
