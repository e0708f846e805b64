"""ModelRegistry: one-assignment swap, failed loads keep the old bundle, one reload at a time,
loads off the event loop."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from pathlib import Path

import pytest
from service_fixtures import MODEL, make_settings

from model_store.store import ModelStore
from service.bundle import Bundle, load_bundle
from service.errors import (
    BundleLoadError,
    ReloadError,
    ReloadInProgressError,
    UnknownVersionError,
)
from service.registry import ModelRegistry

pytestmark = pytest.mark.asyncio


@pytest.fixture(scope="module")
def real_bundle(published_store: Path) -> Bundle:
    return load_bundle(ModelStore(published_store), MODEL, 1, make_settings(published_store))


def versions_of(bundle: Bundle, fail: set[int] | None = None, delay_s: float = 0.0):  # type: ignore[no-untyped-def]
    """A loader returning `bundle` relabelled as the requested version (None = 2)."""
    calls: list[int | None] = []

    def loader(version: int | None) -> Bundle:
        calls.append(version)
        time.sleep(delay_s)
        if version is not None and version in (fail or set()):
            raise BundleLoadError(f"version {version} is broken")
        if version == 404:
            raise UnknownVersionError("version 404 does not exist")
        return dataclasses.replace(bundle, version=version or 2)

    return loader, calls


async def test_reload_swaps_and_reports_previous_and_current(real_bundle: Bundle) -> None:
    loader, calls = versions_of(real_bundle)
    swapped: list[int] = []
    results: list[bool] = []
    registry = ModelRegistry(
        loader, on_swap=lambda b: swapped.append(b.version), on_result=results.append
    )
    assert registry.current is None
    previous, current = await registry.reload(None)
    assert (previous, current.version) == (None, 2)
    previous, current = await registry.reload(1)
    assert previous is not None
    assert (previous.version, current.version) == (2, 1)
    assert registry.current is current
    assert (calls, swapped, results) == ([None, 1], [2, 1], [True, True])


async def test_failed_reload_keeps_the_previous_bundle(real_bundle: Bundle) -> None:
    loader, _ = versions_of(real_bundle, fail={3})
    results: list[bool] = []
    registry = ModelRegistry(loader, on_result=results.append)
    await registry.reload(2)
    served = registry.current
    with pytest.raises(ReloadError, match="version 3 is broken"):
        await registry.reload(3)
    assert registry.current is served
    assert registry.last_error == "version 3 is broken"
    with pytest.raises(UnknownVersionError):
        await registry.reload(404)
    assert registry.current is served
    assert results == [True, False, False]
    await registry.reload(1)
    assert registry.last_error is None


async def test_a_second_concurrent_reload_is_refused_not_queued(real_bundle: Bundle) -> None:
    loader, calls = versions_of(real_bundle, delay_s=0.2)
    registry = ModelRegistry(loader)
    first = asyncio.create_task(registry.reload(1))
    await asyncio.sleep(0.01)
    assert registry.reloading
    with pytest.raises(ReloadInProgressError):
        await registry.reload(2)
    _, current = await first
    assert current.version == 1
    assert calls == [1]
    assert not registry.reloading


async def test_loading_runs_off_the_event_loop(real_bundle: Bundle) -> None:
    started = threading.Event()
    release = threading.Event()

    def loader(version: int | None) -> Bundle:
        started.set()
        release.wait(5)
        return dataclasses.replace(real_bundle, version=version or 1)

    registry = ModelRegistry(loader)
    task = asyncio.create_task(registry.reload(5))
    ticks = 0
    while (not started.is_set() or ticks < 20) and ticks < 5000:
        await asyncio.sleep(0.001)  # the loop keeps running while the load blocks
        ticks += 1
    assert started.is_set()
    assert registry.current is None
    release.set()
    await task
    assert registry.current is not None
    assert registry.current.version == 5


async def test_a_caller_that_goes_away_does_not_stop_the_swap(real_bundle: Bundle) -> None:
    loader, _ = versions_of(real_bundle, delay_s=0.1)
    registry = ModelRegistry(loader)
    caller = asyncio.create_task(registry.reload(4))
    await asyncio.sleep(0.02)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    await registry.wait()
    assert registry.current is not None
    assert registry.current.version == 4
