"""Helpers for the live operations tests: a store holding the session's real tiny bundle and the
real `cinesync serve` as a child process with Redis."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from service_fixtures import MODEL, shared_tiny_bundle

from loadtests.service_process import ServiceProcess, running
from model_store.store import ModelStore


def tiny_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store whose LATEST is the session's tiny SASRec bundle (the service tests' bundle,
    trained and exported once per session by the real training code)."""
    root = tmp_path_factory.getbasetemp() / "ops-tiny-store"
    if ModelStore(root).latest(MODEL) is None:
        ModelStore(root).publish(MODEL, shared_tiny_bundle(tmp_path_factory))
    return root


def service_env(store: Path, redis_url: str, **extra: str) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("CINESYNC_")}
    env.update({
        "CINESYNC_ENV": "development",
        "CINESYNC_STORE_DIR": str(store),
        "CINESYNC_MODEL_NAME": MODEL,
        "CINESYNC_REDIS__URL": redis_url,
        "CINESYNC_LOG_LEVEL": "WARNING",
        "CINESYNC_EVENTS__RATE_PER_S": "10000",  # one load generator = one client
        "CINESYNC_EVENTS__BURST": "10000",
    })  # fmt: skip
    env.update(extra)
    return env


@contextmanager
def live_service(store: Path, redis_url: str, log_dir: Path) -> Iterator[ServiceProcess]:
    """`cinesync serve` on a free loopback port, ready (bundle loaded and warmed)."""
    with running(env=service_env(store, redis_url), log_path=log_dir / "service.log") as svc:
        yield svc
