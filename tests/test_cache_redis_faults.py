"""Redis L2 under faults: stopped, paused (SIGSTOP), pool exhausted, corrupt values."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from service import keys
from service.breaker import CircuitBreaker
from service.cache_redis import RedisCache, decode_value, encode_value
from service.metrics import ServiceMetrics
from service.redis_client import make_redis

if TYPE_CHECKING:
    from conftest import RedisServer

MODEL = "cinesync"
BUDGET_S = 0.05
RESET_S = 0.3
SLACK_S = 0.05  # event-loop wake-up on a shared, loaded CI machine
KEY = keys.recs_key(MODEL, 1, "u1", keys.params_digest(k=10))
MakeL2 = Callable[..., RedisCache]


@pytest_asyncio.fixture
async def make_l2() -> AsyncIterator[MakeL2]:
    made: list[RedisCache] = []

    def make(url: str, *, failures: int = 5, max_connections: int = 8) -> RedisCache:
        metrics = ServiceMetrics()
        # Socket timeouts well above the budget: what bounds a call here is the cache's budget.
        client = make_redis(url, socket_timeout_s=1.0, connect_timeout_s=1.0,
                            max_connections=max_connections)  # fmt: skip
        breaker = CircuitBreaker(failures, RESET_S, on_change=metrics.set_breaker_open)
        l2 = RedisCache(client, ttl_s=60, timeout_s=BUDGET_S, breaker=breaker, metrics=metrics)
        l2.metrics = metrics  # type: ignore[attr-defined]
        made.append(l2)
        return l2

    yield make
    for l2 in made:
        await l2.close()


def counted(l2: RedisCache, result: str) -> float:
    metrics: ServiceMetrics = l2.metrics  # type: ignore[attr-defined]
    return (
        metrics.registry.get_sample_value(
            "cinesync_cache_requests_total", {"tier": "l2", "result": result}
        )
        or 0.0
    )


def gauge_open(l2: RedisCache) -> float | None:
    metrics: ServiceMetrics = l2.metrics  # type: ignore[attr-defined]
    return metrics.registry.get_sample_value("cinesync_redis_breaker_open")


async def timed(call: Callable[[], Awaitable[object]]) -> float:
    start = time.perf_counter()
    await call()
    return time.perf_counter() - start


async def wait_until_closed(l2: RedisCache, deadline_s: float = 5.0) -> float:
    """Call get until the breaker closes; seconds it took."""
    start = time.perf_counter()
    while l2.breaker.state != "closed":
        assert time.perf_counter() - start < deadline_s, "breaker never closed"
        await l2.get(KEY)
        await asyncio.sleep(0.02)
    return time.perf_counter() - start


@pytest.mark.asyncio
async def test_stopped_redis_is_a_fast_miss_and_the_breaker_opens_then_closes(
    private_redis: RedisServer, make_l2: MakeL2
) -> None:
    l2 = make_l2(private_redis.url, failures=3)
    await l2.set(KEY, b"v", "u1", MODEL)
    assert await l2.get(KEY) == b"v"
    assert gauge_open(l2) == 0
    private_redis.stop()
    for _ in range(3):
        assert await l2.get(KEY) is None
    assert l2.breaker.state == "open"
    assert gauge_open(l2) == 1
    assert counted(l2, "error") == 3
    # While open, a call costs nothing and is still counted.
    costs = sorted([await timed(lambda: l2.get(KEY)) for _ in range(50)])
    assert costs[45] < 0.001
    assert costs[-1] < BUDGET_S
    await l2.set(KEY, b"w", "u1", MODEL)  # never raises
    await l2.invalidate_user(MODEL, "u1")  # never raises
    assert counted(l2, "error") == 53
    private_redis.start()
    await wait_until_closed(l2)
    assert gauge_open(l2) == 0
    await l2.set(KEY, b"back", "u1", MODEL)
    assert await l2.get(KEY) == b"back"


@pytest.mark.asyncio
async def test_paused_redis_bounds_every_call_by_the_budget(
    private_redis: RedisServer, make_l2: MakeL2
) -> None:
    l2 = make_l2(private_redis.url, failures=10_000)  # breaker kept closed: every call waits
    await l2.set(KEY, b"v", "u1", MODEL)
    private_redis.pause()
    costs = sorted([await timed(lambda: l2.get(KEY)) for _ in range(100)])
    p99 = costs[98]
    assert p99 <= BUDGET_S + SLACK_S, (
        f"p99 {p99 * 1000:.1f} ms over a {BUDGET_S * 1000:.0f} ms budget"
    )
    assert costs[0] >= BUDGET_S * 0.9  # they really waited on Redis, not on something else
    assert counted(l2, "error") == 100
    assert await timed(lambda: l2.set(KEY, b"x", "u1", MODEL)) <= BUDGET_S + SLACK_S
    private_redis.resume()
    assert await l2.get(KEY) == b"v"


@pytest.mark.asyncio
async def test_paused_redis_opens_the_breaker_and_it_closes_after_resume(
    private_redis: RedisServer, make_l2: MakeL2
) -> None:
    l2 = make_l2(private_redis.url, failures=5)
    await l2.set(KEY, b"v", "u1", MODEL)
    private_redis.pause()
    costs = [await timed(lambda: l2.get(KEY)) for _ in range(100)]
    assert l2.breaker.state == "open"
    assert gauge_open(l2) == 1
    assert sum(costs) < 5 * (BUDGET_S + SLACK_S) + 95 * 0.002  # after 5 timeouts: ~0 ms each
    private_redis.resume()
    took = await wait_until_closed(l2)
    assert took < RESET_S + 1.0
    assert await l2.get(KEY) == b"v"
    assert gauge_open(l2) == 0


@pytest.mark.asyncio
async def test_a_pool_smaller_than_the_concurrency_never_raises(
    redis_url: str, make_l2: MakeL2
) -> None:
    l2 = make_l2(redis_url, max_connections=2)
    await l2.set(KEY, b"v", "u1", MODEL)
    got = await asyncio.gather(*(l2.get(KEY) for _ in range(50)))
    assert got.count(b"v") >= 45  # a loaded machine may make a few wait past the budget
    assert counted(l2, "hit") + counted(l2, "error") == 50


@pytest.mark.asyncio
async def test_a_pool_held_by_a_paused_redis_gives_bounded_misses(
    private_redis: RedisServer, make_l2: MakeL2
) -> None:
    l2 = make_l2(private_redis.url, max_connections=2, failures=10_000)
    await l2.set(KEY, b"v", "u1", MODEL)
    private_redis.pause()
    start = time.perf_counter()
    got = await asyncio.gather(*(l2.get(KEY) for _ in range(50)))
    assert got == [None] * 50
    assert time.perf_counter() - start < BUDGET_S + 0.2
    private_redis.resume()


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "raw",
    [b"garbage", b"", b"CS1", b"CS0" + encode_value(b"v")[3:], encode_value(b"value")[:-1],
     encode_value(b"value")[:-1] + b"X"],
    ids=["garbage", "empty", "header-only", "old-magic", "truncated", "bit-flip"],
)  # fmt: skip
async def test_a_corrupt_or_old_value_is_a_miss_and_is_overwritten(
    redis_url: str, make_l2: MakeL2, raw: bytes
) -> None:
    l2 = make_l2(redis_url)
    raw_client = aioredis.Redis.from_url(redis_url)
    try:
        await raw_client.set(KEY, raw)
        assert await l2.get(KEY) is None
        assert counted(l2, "error") == 1
        assert l2.breaker.state == "closed"
        await l2.set(KEY, b"fresh", "u1", MODEL)
        assert await l2.get(KEY) == b"fresh"
        assert decode_value(await raw_client.get(KEY)) == b"fresh"
    finally:
        await raw_client.aclose()


@pytest.mark.asyncio
async def test_values_carry_a_ttl_and_the_user_index(redis_url: str, make_l2: MakeL2) -> None:
    l2 = make_l2(redis_url)
    await l2.set(KEY, b"v", "u1", MODEL)
    raw_client = aioredis.Redis.from_url(redis_url)
    try:
        assert 0 < await raw_client.pttl(KEY) <= 60_000
        index = keys.user_index_key(MODEL, "u1")
        assert await raw_client.smembers(index) == {KEY.encode()}
        assert 0 < await raw_client.pttl(index) <= 60_000
    finally:
        await raw_client.aclose()


@pytest.mark.asyncio
async def test_an_invalidation_missed_while_redis_was_paused_is_done_before_the_next_read(
    private_redis: RedisServer, make_l2: MakeL2
) -> None:
    l2 = make_l2(private_redis.url, failures=10_000)
    other = keys.recs_key(MODEL, 1, "u2", keys.params_digest(k=10))
    await l2.set(KEY, b"stale", "u1", MODEL)
    await l2.set(other, b"kept", "u2", MODEL)
    private_redis.pause()
    await l2.invalidate_user(MODEL, "u1")
    private_redis.resume()
    assert await l2.get(KEY) is None
    assert await l2.get(other) == b"kept"
    raw_client = aioredis.Redis.from_url(private_redis.url)
    try:
        assert await raw_client.exists(KEY) == 0
    finally:
        await raw_client.aclose()


@pytest.mark.asyncio
async def test_replies_cut_off_by_the_budget_never_reach_another_caller(
    private_redis: RedisServer, make_l2: MakeL2
) -> None:
    l2 = make_l2(private_redis.url, max_connections=4, failures=10_000)
    users = [f"u{i}" for i in range(20)]
    user_keys = {u: keys.recs_key(MODEL, 1, u, keys.params_digest(k=10)) for u in users}
    for u in users:
        await l2.set(user_keys[u], u.encode(), u, MODEL)
    private_redis.pause()
    assert await asyncio.gather(*(l2.get(user_keys[u]) for u in users)) == [None] * 20
    private_redis.resume()  # the paused server now answers the abandoned GETs
    await asyncio.sleep(0.05)
    for _ in range(3):
        shuffled = users[7:] + users[:7]
        got = await asyncio.gather(*(l2.get(user_keys[u]) for u in shuffled))
        assert got == [u.encode() for u in shuffled]
