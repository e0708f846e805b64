"""Run a server as a child process on a free loopback port and wait until it is ready.

Used by the live tests and the serving benchmark: the real `cinesync serve` entry point (or any
uvicorn command) with settings from the environment, stopped with SIGTERM on exit.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cinesync_serve_command(port: int) -> list[str]:
    """The operator's entry point: `cinesync serve` (settings from CINESYNC_* variables)."""
    return [sys.executable, "-m", "training.cli", "serve", "--host", "127.0.0.1",
            "--port", str(port)]  # fmt: skip


def uvicorn_command(factory: str, port: int) -> list[str]:
    """`uvicorn --factory` with fixed settings, so two apps can be compared like for like."""
    return [sys.executable, "-m", "uvicorn", "--factory", factory, "--host", "127.0.0.1",
            "--port", str(port), "--workers", "1", "--loop", "uvloop", "--http", "httptools",
            "--no-access-log", "--log-level", "warning", "--timeout-keep-alive", "30"]  # fmt: skip


@dataclass
class ServiceProcess:
    url: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-chars:]


class ServiceStartError(RuntimeError):
    """The child exited or never became ready."""


def wait_ready(service: ServiceProcess, path: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        if service.proc.poll() is not None:
            code = service.proc.returncode
            raise ServiceStartError(f"server exited with {code}:\n{service.log_tail()}")
        try:
            with urllib.request.urlopen(service.url + path, timeout=2) as resp:
                if resp.status == 200:
                    return
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.1)
    raise ServiceStartError(
        f"{path} not ready after {timeout_s:.0f} s ({last}):\n{service.log_tail()}"
    )


@contextmanager
def running(
    command: list[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    port: int | None = None,
    log_path: Path,
    ready_path: str = "/readyz",
    timeout_s: float = 120.0,
) -> Iterator[ServiceProcess]:
    """Start `command` (default `cinesync serve`) and yield once `ready_path` answers 200."""
    port = port if port is not None else free_port()
    command = command if command is not None else cinesync_serve_command(port)
    child_env = dict(os.environ if env is None else env)
    child_env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(REPO_ROOT), child_env.get("PYTHONPATH")])
    )
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            command, cwd=REPO_ROOT, env=child_env, stdout=log, stderr=subprocess.STDOUT
        )
    service = ServiceProcess(f"http://127.0.0.1:{port}", port, proc, log_path)
    try:
        wait_ready(service, ready_path, timeout_s)
        yield service
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 15.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
