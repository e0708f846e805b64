"""Single-flight: concurrent callers of one key share one computation."""

from __future__ import annotations

import asyncio

import pytest

from service.singleflight import SingleFlight


class BoomError(Exception):
    pass


@pytest.mark.asyncio
async def test_500_concurrent_callers_compute_once() -> None:
    sf: SingleFlight[int] = SingleFlight()
    calls = 0
    gate = asyncio.Event()

    async def compute() -> int:
        nonlocal calls
        calls += 1
        await gate.wait()
        return 42

    waiters = [asyncio.create_task(sf.do("k", compute)) for _ in range(500)]
    await asyncio.sleep(0)
    assert len(sf) == 1
    gate.set()
    assert await asyncio.gather(*waiters) == [42] * 500
    assert calls == 1
    assert len(sf) == 0  # the entry is gone once done


@pytest.mark.asyncio
async def test_the_next_call_after_completion_computes_again() -> None:
    sf: SingleFlight[int] = SingleFlight()
    calls = 0

    async def compute() -> int:
        nonlocal calls
        calls += 1
        return calls

    assert await sf.do("k", compute) == 1
    assert await sf.do("k", compute) == 2


@pytest.mark.asyncio
async def test_different_keys_compute_separately() -> None:
    sf: SingleFlight[str] = SingleFlight()

    async def compute(v: str) -> str:
        await asyncio.sleep(0.01)
        return v

    got = await asyncio.gather(*(sf.do(k, lambda k=k: compute(k)) for k in "abcab"))
    assert got == list("abcab")


@pytest.mark.asyncio
async def test_an_exception_reaches_every_waiter_and_is_not_cached() -> None:
    sf: SingleFlight[int] = SingleFlight()
    calls = 0

    async def fail() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        raise BoomError("no")

    results = await asyncio.gather(*(sf.do("k", fail) for _ in range(20)), return_exceptions=True)
    assert calls == 1
    assert all(isinstance(r, BoomError) for r in results)
    assert len(sf) == 0
    with pytest.raises(BoomError):
        await sf.do("k", fail)
    assert calls == 2


@pytest.mark.asyncio
async def test_a_cancelled_waiter_does_not_cancel_the_others() -> None:
    sf: SingleFlight[str] = SingleFlight()
    gate = asyncio.Event()
    finished = False

    async def compute() -> str:
        nonlocal finished
        await gate.wait()
        finished = True
        return "done"

    first = asyncio.create_task(sf.do("k", compute))
    second = asyncio.create_task(sf.do("k", compute))
    await asyncio.sleep(0)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    gate.set()
    assert await second == "done"
    assert finished


@pytest.mark.asyncio
async def test_the_computation_finishes_even_when_every_waiter_left() -> None:
    sf: SingleFlight[str] = SingleFlight()
    done = asyncio.Event()

    async def compute() -> str:
        await asyncio.sleep(0.01)
        done.set()  # e.g. it fills the cache for the next request
        return "v"

    waiter = asyncio.create_task(sf.do("k", compute))
    await asyncio.sleep(0)
    waiter.cancel()
    await asyncio.wait_for(done.wait(), 1.0)
    await asyncio.sleep(0)
    assert len(sf) == 0
