"""Service test fixtures: a real tiny SASRec bundle (trained and exported by the real training
code, once per session), a store holding two published versions of it, and the app running
with its lifespan behind an httpx client. Test modules load this with
`pytest_plugins = ["service_fixtures"]`."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import pytest_asyncio

from model_store.store import ModelStore

if TYPE_CHECKING:  # the serving stack is imported only by the tests that use it
    import httpx

    from service.settings import Settings

MODEL = "cinesync"
ADMIN_TOKEN = "test-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
READY_TIMEOUT_S = 30.0


def shared_tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny bundle per session (make_tiny_bundle, seed 0), under the session's base temp."""
    folder = tmp_path_factory.getbasetemp() / "service-tiny-bundle"
    if not (folder / "bundle.json").is_file():
        from training.tiny_bundle import make_tiny_bundle

        make_tiny_bundle(folder, seed=0)
    return folder


def perturbed_copy(bundle: Path, out: Path, seed: int) -> Path:
    """The same bundle with different item embeddings: a second, distinguishable version."""
    shutil.copytree(bundle, out)
    emb = np.load(out / "item_embeddings.npy", allow_pickle=False)
    rng = np.random.default_rng(seed)
    emb[1:] = emb[1:] + rng.standard_normal(emb[1:].shape).astype(np.float32) * emb.std()
    np.save(out / "item_embeddings.npy", emb, allow_pickle=False)
    return out


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_tiny_bundle(tmp_path_factory)


@pytest.fixture(scope="session")
def published_store(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with versions 1 (the tiny bundle) and 2 (perturbed embeddings); LATEST = 2."""
    root = tmp_path_factory.mktemp("service-store")
    store = ModelStore(root)
    store.publish(MODEL, tiny_bundle)
    v2 = perturbed_copy(tiny_bundle, tmp_path_factory.mktemp("v2") / "bundle", seed=1)
    store.publish(MODEL, v2)
    return root


@pytest.fixture
def store_dir(published_store: Path, tmp_path: Path) -> Path:
    """A private copy of the published store (tests may publish, corrupt or roll back)."""
    root = tmp_path / "store"
    shutil.copytree(published_store, root)
    return root


def make_settings(store_dir: Path, **overrides: Any) -> Settings:
    from service.settings import Settings

    values: dict[str, Any] = {
        "store_dir": store_dir, "model_name": MODEL, "admin_token": ADMIN_TOKEN,
        "log_level": "WARNING",
    }  # fmt: skip
    values.update(overrides)
    return Settings(**values)


async def wait_ready(client: httpx.AsyncClient, timeout_s: float = READY_TIMEOUT_S) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        if (await client.get("/readyz")).status_code == 200:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the service did not become ready")


@asynccontextmanager
async def running_app(
    settings: Settings, *, ready: bool = True
) -> AsyncIterator[httpx.AsyncClient]:
    """create_app(settings) with its lifespan running, behind an httpx client."""
    import httpx

    from service.main import create_app

    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://cinesync") as client:
            if ready:
                await wait_ready(client)
            yield client


@pytest_asyncio.fixture
async def client(published_store: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The app over the shared two-version store (read only: use `store_dir` to change a
    store), L1 only (no Redis), ready."""
    async with running_app(make_settings(published_store)) as c:
        yield c


def served_bundle(client: httpx.AsyncClient) -> Any:
    """The bundle the app behind `client` currently serves (for white-box checks)."""
    import httpx

    transport = client._transport
    assert isinstance(transport, httpx.ASGITransport)
    return transport.app.state.cinesync.registry.current  # type: ignore[attr-defined]
