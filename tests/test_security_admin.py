"""Scenario 20: the admin endpoints let no one in and open nothing outside the store.

No token, a wrong token or another scheme -> 401 (the comparison goes through
hmac.compare_digest on equal-length digests); a version that is not a plain positive integer
(`../../etc`, an absolute path, a URL, `007`, ...) -> 422; a sibling folder beside the store
holding a complete, valid bundle is never opened or served, however it is pointed at (a version
folder or a bundle file symlinked to it, LATEST naming it). File access is watched with a
Python audit hook ("open", "os.scandir", "os.listdir" events of this process, all threads).
"""

from __future__ import annotations

import hmac
import os
import shutil
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from service_fixtures import AUTH, MODEL, make_settings, perturbed_copy, running_app

from model_store.store import ModelStore

_WATCHED = frozenset({"open", "os.scandir", "os.listdir"})
_recording: list[str] | None = None
_lock = threading.Lock()
_installed = False


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _recording is None or event not in _WATCHED or not args:
        return
    path = args[0]
    if isinstance(path, str | bytes | os.PathLike):
        with _lock:
            if _recording is not None:
                _recording.append(os.path.abspath(os.fsdecode(path)))


@contextmanager
def file_accesses() -> Iterator[list[str]]:
    """Every path this process opens or lists inside the block (absolute, not resolved)."""
    global _recording, _installed
    if not _installed:
        sys.addaudithook(_audit)  # process-wide and permanent; idle outside this block
        _installed = True
    seen: list[str] = []
    _recording = seen
    try:
        yield seen
    finally:
        _recording = None


def touches(paths: list[str], folder: Path) -> list[str]:
    """The paths that are inside `folder`, directly or through a symlink."""
    root = folder.resolve()
    return [p for p in paths if Path(p).resolve().is_relative_to(root)]


async def served_version(client: httpx.AsyncClient) -> int:
    return int((await client.get("/readyz")).json()["model_version"])


# --- authentication ----------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Bearer " + "x" * 5000},
     {"Authorization": AUTH["Authorization"][:-1]}, {"Authorization": AUTH["Authorization"] + "0"},
     {"Authorization": AUTH["Authorization"].replace("Bearer", "Basic")},
     {"Authorization": "Bearer"}, {"X-Admin-Token": AUTH["Authorization"].split()[1]}],
)  # fmt: skip
async def test_a_missing_or_wrong_admin_token_is_401_compared_in_constant_time(
    client: httpx.AsyncClient, headers: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    compared: list[tuple[int, int]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    for method, url in (("POST", "/admin/reload"), ("GET", "/admin/models")):
        r = await client.request(method, url, headers=headers, json={"version": 1})
        assert r.status_code == 401, r.text
        assert r.headers["www-authenticate"] == "Bearer"
        assert r.json() == {"detail": "missing or wrong admin token"}
    assert compared == [(32, 32), (32, 32)]  # sha256 digests: the length of the guess leaks nothing
    assert await served_version(client) == 2


@pytest.mark.asyncio
async def test_the_right_token_is_also_checked_with_compare_digest(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    compared: list[bool] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append(real(a, b))
        return compared[-1]

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert (await client.get("/admin/models", headers=AUTH)).status_code == 200
    assert compared == [True]
    metrics = (await client.get("/metrics")).text
    assert AUTH["Authorization"].split()[1] not in metrics


# --- versions from clients are never paths -------------------------------------------------


BAD_VERSIONS: list[object] = [
    "../../etc", "../../outside/cinesync/3", "/etc/passwd", "file:///etc/passwd",
    "http://evil.example/model.onnx", "007", "3/../../..", "%2e%2e%2f", "3\x00", " 3", "3 ",
    "", "0x3", "1e1", "３", -3, 0, 1.5, 10**19, True, [3], {"$gt": 0},
]  # fmt: skip


@pytest.fixture
def outside(store_dir: Path, tiny_bundle: Path, tmp_path: Path) -> Path:
    """A complete, valid store beside the real one whose model has version 3 (distinct
    embeddings): what a traversal would load."""
    root = tmp_path / "outside"
    shutil.copytree(store_dir, root)
    ModelStore(root).publish(MODEL, perturbed_copy(tiny_bundle, tmp_path / "evil", seed=7))
    assert ModelStore(root).latest(MODEL) == 3
    return root


@pytest.mark.asyncio
async def test_reload_versions_that_are_not_plain_integers_are_422_and_open_nothing_outside(
    store_dir: Path, outside: Path
) -> None:
    async with running_app(make_settings(store_dir)) as client:
        with file_accesses() as seen:
            for version in BAD_VERSIONS:
                r = await client.post("/admin/reload", json={"version": version}, headers=AUTH)
                assert r.status_code == 422, (version, r.text)
            for body in (b"../../outside", b'{"path": "../outside"}', b'{"version": 3, "x": 1}'):
                r = await client.post(
                    "/admin/reload", content=body,
                    headers={**AUTH, "content-type": "application/json"},
                )  # fmt: skip
                assert r.status_code == 422, (body, r.text)
            r = await client.post("/admin/reload", json={"version": 3}, headers=AUTH)
            assert r.status_code == 404  # the real store has no version 3
        assert touches(seen, outside) == []
        assert await served_version(client) == 2


@pytest.mark.asyncio
async def test_a_bundle_outside_the_store_is_never_loaded_however_it_is_pointed_at(
    store_dir: Path, outside: Path, tmp_path: Path
) -> None:
    model_dir = store_dir / MODEL
    os.symlink(outside / MODEL / "3", model_dir / "3")  # a version folder pointing outside
    assert ModelStore(store_dir).publish(MODEL, tmp_path / "evil", set_latest=False) == 4
    loot = model_dir / "4" / "item_embeddings.npy"  # same bytes, so the checksum matches
    loot.unlink()
    os.symlink(outside / MODEL / "3" / "item_embeddings.npy", loot)
    async with running_app(make_settings(store_dir)) as client:
        before = (await client.get("/recommend/3")).json()["items"]
        with file_accesses() as seen:
            for version in (3, 4):
                r = await client.post("/admin/reload", json={"version": version}, headers=AUTH)
                assert r.status_code == 409, r.text
                assert "symlink" in r.json()["detail"], r.text
            (model_dir / "LATEST").write_text("../../outside/cinesync/3\n")
            r = await client.post("/admin/reload", headers=AUTH)
            assert r.status_code == 409, r.text
            (model_dir / "LATEST").write_text(str(outside / MODEL / "3"))
            assert (await client.post("/admin/reload", headers=AUTH)).status_code == 409
            listed = (await client.get("/admin/models", headers=AUTH)).json()
        versions = {v["version"]: v for v in listed["versions"]}
        assert sorted(versions) == [1, 2, 4]  # the symlinked folder is not a version at all
        assert [v for v, info in versions.items() if info["served"]] == [2]
        assert touches(seen, outside) == []
        assert seen, "the audit hook recorded nothing: the check would be vacuous"
        assert await served_version(client) == 2
        assert (await client.get("/recommend/3")).json()["items"] == before
