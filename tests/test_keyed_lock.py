"""KeyedLock: one key's holders run one at a time, in arrival order; other keys do not wait."""

from __future__ import annotations

import asyncio

import pytest

from service.keyed_lock import KeyedLock

pytestmark = pytest.mark.asyncio


async def test_holders_of_one_key_run_one_at_a_time_in_arrival_order() -> None:
    locks, trace = KeyedLock(), []

    async def holder(name: str) -> None:
        async with locks.hold("u1"):
            trace.append(f"{name} in")
            await asyncio.sleep(0.01)
            trace.append(f"{name} out")

    await asyncio.gather(holder("a"), holder("b"), holder("c"))
    assert trace == ["a in", "a out", "b in", "b out", "c in", "c out"]


async def test_other_keys_do_not_wait() -> None:
    locks = KeyedLock()
    inside = asyncio.Event()
    release = asyncio.Event()

    async def hold_u1() -> None:
        async with locks.hold("u1"):
            inside.set()
            await release.wait()

    task = asyncio.create_task(hold_u1())
    await inside.wait()
    assert locks.busy("u1")
    async with asyncio.timeout(1):
        async with locks.hold("u2"):
            assert not locks.busy("u3")
    release.set()
    await task


async def test_a_key_is_forgotten_when_its_last_holder_leaves_even_on_error() -> None:
    locks = KeyedLock()
    with pytest.raises(RuntimeError):
        async with locks.hold("u1"):
            raise RuntimeError("boom")
    waiting = [asyncio.create_task(_hold_briefly(locks, "u2")) for _ in range(3)]
    await asyncio.sleep(0)
    assert len(locks) == 1
    await asyncio.gather(*waiting)
    assert len(locks) == 0
    assert not locks.busy("u1")


async def _hold_briefly(locks: KeyedLock, key: str) -> None:
    async with locks.hold(key):
        await asyncio.sleep(0.001)
