"""Live history: capped per user, users isolated, Redis failures fall back in process."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from conftest import cancel_midway, until

from service import keys
from service.breaker import CircuitBreaker
from service.cache_redis import RedisCache
from service.history import (
    EVENT_IDS_TTL_S,
    LiveHistory,
    MemoryHistory,
    PendingEvents,
    RedisHistory,
)
from service.metrics import ServiceMetrics
from service.redis_client import make_redis

if TYPE_CHECKING:
    from conftest import RedisServer

MODEL = "cinesync"
CAP = 5


def redis_history(url: str, metrics: ServiceMetrics | None = None) -> RedisHistory:
    client = make_redis(url, socket_timeout_s=0.5, connect_timeout_s=0.5, max_connections=8)
    return RedisHistory(client, model=MODEL, cap=CAP, ttl_s=3600, timeout_s=0.5,
                        breaker=CircuitBreaker(3, 0.3), metrics=metrics)  # fmt: skip


async def close(history: LiveHistory) -> None:
    await history.close()
    if isinstance(history, RedisHistory):
        await history._redis.aclose()


@pytest_asyncio.fixture(params=["memory", "redis"])
async def history(request: pytest.FixtureRequest) -> AsyncIterator[LiveHistory]:
    impl: LiveHistory
    if request.param == "memory":
        impl = MemoryHistory(cap=CAP, max_users=1000)
    else:
        impl = redis_history(request.getfixturevalue("redis_url"))
    yield impl
    await close(impl)


@pytest.fixture
def metrics() -> ServiceMetrics:
    return ServiceMetrics()


@pytest_asyncio.fixture
async def pair(
    private_redis: RedisServer, metrics: ServiceMetrics
) -> AsyncIterator[tuple[RedisHistory, RedisHistory]]:
    """Two replicas' live histories on a Redis of the test's own (which it may pause or stop);
    the first reports to the test's `metrics`."""
    history, replica = redis_history(private_redis.url, metrics), redis_history(private_redis.url)
    yield history, replica
    await close(history)
    await close(replica)


async def append_all(history: LiveHistory, user: str, items: list[str]) -> None:
    for i, item in enumerate(items):
        await history.append(user, item, 1_700_000_000.0 + i)


@pytest.mark.asyncio
async def test_recent_is_oldest_to_newest_and_capped(history: LiveHistory) -> None:
    await append_all(history, "u1", [f"i{n}" for n in range(12)])
    assert await history.recent("u1", 100) == ["i7", "i8", "i9", "i10", "i11"]
    assert await history.recent("u1", 2) == ["i10", "i11"]
    assert await history.recent("u1", 0) == []


@pytest.mark.asyncio
async def test_users_are_isolated(history: LiveHistory) -> None:
    await append_all(history, "u1", ["a", "b"])
    await append_all(history, "../u1", ["x"])
    await append_all(history, "u2", ["c"])
    assert await history.recent("u1", 10) == ["a", "b"]
    assert await history.recent("../u1", 10) == ["x"]
    assert await history.recent("u2", 10) == ["c"]
    assert await history.recent("nobody", 10) == []


@pytest.mark.asyncio
async def test_a_repeat_of_the_last_item_collapses_but_a_later_return_is_kept(
    history: LiveHistory,
) -> None:
    await append_all(history, "u1", ["a", "a", "b", "b", "b", "a", "ü/é"])
    assert await history.recent("u1", 10) == ["a", "b", "a", "ü/é"]


@pytest.mark.asyncio
async def test_a_flood_for_one_user_keeps_the_cap_and_spares_the_others(
    history: LiveHistory,
) -> None:
    await append_all(history, "victim", ["v1", "v2"])
    await append_all(history, "flooder", [f"i{n % 50}" for n in range(2000)])
    assert len(await history.recent("flooder", 10_000)) == CAP
    assert await history.recent("victim", 10) == ["v1", "v2"]


@pytest.mark.asyncio
async def test_redis_keeps_a_capped_list_with_a_ttl(redis_url: str) -> None:
    history = redis_history(redis_url)
    raw = aioredis.Redis.from_url(redis_url)
    try:
        await append_all(history, "u1", [f"i{n}" for n in range(20)])
        key = keys.events_key(MODEL, "u1")
        assert await raw.llen(key) == CAP
        assert 0 < await raw.pttl(key) <= 3_600_000
        ids = keys.event_ids_key(MODEL, "u1")  # capped too, and kept only while the user is active
        assert await raw.llen(ids) == CAP
        assert 0 < await raw.pttl(ids) <= EVENT_IDS_TTL_S * 1000
        # Another process's view (a second replica) sees the same events.
        replica = redis_history(redis_url)
        assert await replica.recent("u1", 3) == ["i17", "i18", "i19"]
        await close(replica)
    finally:
        await raw.aclose()
        await close(history)


@pytest.mark.asyncio
async def test_redis_down_falls_back_in_process_and_never_raises(
    private_redis: RedisServer,
) -> None:
    metrics = ServiceMetrics()
    history = redis_history(private_redis.url, metrics)
    try:
        await append_all(history, "u1", ["a", "b"])
        private_redis.stop()
        await append_all(history, "u1", ["c"])
        await append_all(history, "u2", ["z"])
        assert await history.recent("u1", 10) == ["a", "b", "c"]
        assert await history.recent("u2", 10) == ["z"]

        def fallbacks(op: str) -> float | None:
            return metrics.registry.get_sample_value("cinesync_history_fallbacks_total", {"op": op})

        assert fallbacks("append") == 2
        assert fallbacks("recent") == 2
        assert history.breaker.state == "open"
    finally:
        await close(history)


@pytest.mark.asyncio
async def test_events_accepted_while_redis_was_paused_reach_redis_when_it_answers(
    pair: tuple[RedisHistory, RedisHistory], private_redis: RedisServer
) -> None:
    history, replica = pair
    await append_all(history, "u1", ["a", "b"])
    private_redis.pause()
    await append_all(history, "u1", ["c"])  # times out: kept in process
    private_redis.resume()
    await append_all(history, "u1", ["d"])
    assert await replica.recent("u1", 10) == ["a", "b", "c", "d"]


async def sync_once_redis_answers(history: RedisHistory) -> int:
    """The first non-zero ``sync()`` (the breaker lets one probe through after its reset)."""
    for _ in range(250):
        delivered = await history.sync()
        if delivered:
            return delivered
        await asyncio.sleep(0.02)
    raise AssertionError("nothing was delivered")


@pytest.mark.asyncio
async def test_events_accepted_during_an_outage_reach_redis_without_another_call_for_the_user(
    pair: tuple[RedisHistory, RedisHistory], private_redis: RedisServer, metrics: ServiceMetrics
) -> None:
    history, replica = pair
    synced: list[str] = []

    async def on_synced(user_id: str) -> None:
        synced.append(user_id)

    history.on_synced = on_synced
    await append_all(history, "u1", ["a"])
    private_redis.pause()
    await append_all(history, "u1", ["b"])  # times out: pending
    await append_all(history, "u2", ["z"])
    assert len(history.pending) == 2
    assert metrics.registry.get_sample_value("cinesync_history_pending_users") == 2
    private_redis.resume()
    assert await sync_once_redis_answers(history) == 2  # no call for u1 or u2 was needed
    assert await replica.recent("u1", 10) == ["a", "b"]
    assert await replica.recent("u2", 10) == ["z"]
    assert synced == ["u1", "u2"]  # so the service invalidates them everywhere
    assert metrics.registry.get_sample_value("cinesync_history_pending_users") == 0
    assert await history.sync() == 0


@pytest.mark.asyncio
async def test_events_a_push_did_not_deliver_stay_before_newer_ones(
    pair: tuple[RedisHistory, RedisHistory], private_redis: RedisServer
) -> None:
    history, replica = pair
    private_redis.pause()
    await append_all(history, "u1", ["a"])
    assert await history.recent("u1", 10) == ["a"]  # its push of "a" fails: put back
    await append_all(history, "u1", ["b"])
    assert await history.sync() == 0  # still away: nothing delivered, nothing lost
    private_redis.resume()
    assert await sync_once_redis_answers(history) == 1
    assert await replica.recent("u1", 10) == ["a", "b"]


@pytest.mark.asyncio
async def test_an_event_taken_while_a_sync_pushes_lands_after_the_pending_ones(
    pair: tuple[RedisHistory, RedisHistory], private_redis: RedisServer
) -> None:
    history, replica = pair
    private_redis.pause()
    await append_all(history, "u1", ["a", "b"])  # both wait in process
    private_redis.resume()
    real_push = history._push
    sending, release = asyncio.Event(), asyncio.Event()

    async def held_push(user_id: str, items: list[str]) -> bool:
        if not sending.is_set():
            sending.set()
            await release.wait()  # the sync's push of a, b is still on its way ...
        return await real_push(user_id, items)

    history._push = held_push  # type: ignore[method-assign]
    sync = asyncio.create_task(sync_once_redis_answers(history))
    await sending.wait()
    event = asyncio.create_task(history.append("u1", "c", 0.0))  # ... when an event comes ...
    read = asyncio.create_task(history.recent("u1", 10))  # ... and a read of the user
    await asyncio.sleep(0.05)
    release.set()
    await asyncio.gather(sync, event)
    assert await read == ["a", "b", "c"]  # the read waited for both pushes
    assert await replica.recent("u1", 10) == ["a", "b", "c"]  # in the order they were taken


@pytest.mark.asyncio
async def test_a_push_redis_ran_after_the_client_gave_up_is_not_applied_twice(
    pair: tuple[RedisHistory, RedisHistory], private_redis: RedisServer
) -> None:
    history, replica = pair
    await append_all(history, "u0", ["z"])  # a connection in the pool
    for _ in range(3):
        history.breaker.record_failure()  # the breaker opens: "a" waits in process, unsent
    await append_all(history, "u1", ["a"])
    await asyncio.sleep(0.35)  # the breaker lets one call through again
    private_redis.pause()
    await append_all(history, "u1", ["b"])  # "a", "b" sent, then timed out ...
    assert "u1" in history.pending
    private_redis.resume()  # ... and run by Redis once it resumes
    assert await sync_once_redis_answers(history) == 1  # "a", "b" sent again
    assert await replica.recent("u1", 10) == ["a", "b"]


@pytest.mark.asyncio
async def test_an_event_drops_the_users_l2_lists_in_the_same_redis_step(redis_url: str) -> None:
    history = redis_history(redis_url)
    l2 = RedisCache(history._redis, ttl_s=60, timeout_s=0.5, breaker=CircuitBreaker(3, 0.3))
    mine, other = (keys.recs_key(MODEL, 1, u, keys.params_digest(k=10)) for u in ("l2-u1", "l2-u2"))
    try:
        await l2.set(mine, b"old list", "l2-u1", MODEL)
        await l2.set(other, b"their list", "l2-u2", MODEL)
        await history.append("l2-u1", "a", 0.0)  # no invalidate_user call: the append does it
        assert await l2.get(mine) is None
        assert await l2.get(other) == b"their list"
        assert not await history._redis.exists(keys.user_index_key(MODEL, "l2-u1"))
    finally:
        await close(history)


@pytest.mark.asyncio
async def test_an_event_whose_push_is_cancelled_stays_pending(
    pair: tuple[RedisHistory, RedisHistory], private_redis: RedisServer
) -> None:
    history, replica = pair
    private_redis.pause()
    await cancel_midway(history.append("u1", "a", 0.0))  # its push waited on the paused Redis
    assert "u1" in history.pending
    private_redis.resume()
    assert await sync_once_redis_answers(history) == 1
    assert await replica.recent("u1", 10) == ["a"]


@pytest.mark.asyncio
async def test_events_pending_at_shutdown_reach_redis_once_it_answers_within_the_flush_time(
    pair: tuple[RedisHistory, RedisHistory], private_redis: RedisServer
) -> None:
    history, replica = pair
    private_redis.pause()
    await append_all(history, "u1", ["a"])
    await append_all(history, "u2", ["z"])  # both pending; the breaker opens
    asyncio.get_running_loop().call_later(0.3, private_redis.resume)
    assert await history.flush(timeout_s=10.0) == 0  # it retried until Redis answered
    assert await replica.recent("u1", 10) == ["a"]
    assert await replica.recent("u2", 10) == ["z"]


@pytest.mark.asyncio
async def test_events_redis_never_takes_at_shutdown_are_reported_lost_after_the_flush_time(
    pair: tuple[RedisHistory, RedisHistory],
    private_redis: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    history, _ = pair
    private_redis.pause()
    await append_all(history, "u1", ["a"])
    started = asyncio.get_running_loop().time()
    assert await history.flush(timeout_s=0.5) == 1
    assert asyncio.get_running_loop().time() - started < 2.0  # bounded: shutdown goes on
    assert "the events of 1 user(s) never reached Redis" in caplog.text
    private_redis.resume()


def test_pending_events_are_bounded_per_user_and_in_users() -> None:
    def ev(*items: str) -> list[tuple[str, str]]:
        return [(f"id-{i}", i) for i in items]

    pending = PendingEvents(cap=3, max_users=2)
    pending.restore("u1", ev("c", "d"))
    pending.restore("u1", ev("a", "b"))  # undelivered earlier events go before the later ones
    assert pending.take("u1") == ev("b", "c", "d")  # the newest cap
    pending.restore("u1", ev("x"))
    pending.restore("u2", ev("y"))
    assert pending.users() == ["u1", "u2"]
    pending.restore("u3", ev("z"))  # a third user: the one touched least recently is dropped
    assert pending.users() == ["u2", "u3"]
    assert pending.dropped_users == 1
    assert "u2" in pending
    assert pending.take("u2") == ev("y")
    assert "u2" not in pending
    assert pending.dropped_events == 2  # "a" past the cap, then u1's "x" with u1
    assert pending.take("nobody") == []


@pytest.mark.asyncio
async def test_events_lost_at_the_pending_bound_are_counted_in_the_dropped_metric(
    private_redis: RedisServer, metrics: ServiceMetrics
) -> None:
    client = make_redis(private_redis.url, socket_timeout_s=0.5, connect_timeout_s=0.5,
                        max_connections=8)  # fmt: skip
    history = RedisHistory(
        client, model=MODEL, cap=CAP, timeout_s=0.2, breaker=CircuitBreaker(1, 60),
        local=MemoryHistory(cap=CAP, max_users=1), metrics=metrics,
    )  # fmt: skip
    try:
        private_redis.pause()
        await append_all(history, "u1", ["a", "b"])
        await append_all(history, "u2", ["z"])  # one pending user at most: u1's two are lost
        value = metrics.registry.get_sample_value(
            "cinesync_dropped_total", {"what": "pending_events"}
        )
        assert value == 2
    finally:
        private_redis.resume()
        await close(history)


@pytest.mark.asyncio
async def test_a_restarted_empty_redis_is_reseeded_from_the_process(
    pair: tuple[RedisHistory, RedisHistory], private_redis: RedisServer
) -> None:
    history, replica = pair
    await append_all(history, "u1", ["a", "b"])
    private_redis.stop()
    private_redis.start()  # no persistence: the lists are gone
    for _ in range(100):
        if history.breaker.allow():
            break
        await asyncio.sleep(0.02)
    assert await history.recent("u1", 10) == ["a", "b"]
    assert await replica.recent("u1", 10) == ["a", "b"]


@pytest.mark.asyncio
async def test_reads_that_find_the_list_gone_at_once_seed_it_once(
    pair: tuple[RedisHistory, RedisHistory], private_redis: RedisServer
) -> None:
    history, replica = pair
    await append_all(history, "u1", ["a", "b"])
    await append_all(replica, "u1", ["b"])  # the other replica holds the same user's last event
    private_redis.flushall()  # Redis lost the lists (as after a restart)
    reads = [history.recent("u1", 10), history.recent("u1", 5), replica.recent("u1", 10)]
    await asyncio.gather(*reads)
    assert await replica.recent("u1", 10) in (["a", "b"], ["b"])  # one seed, whichever was first


def test_the_memory_store_holds_a_bounded_number_of_users() -> None:
    store = MemoryHistory(cap=3, max_users=100)
    for n in range(1000):
        store.append_now(f"user{n}", "a")
    assert len(store) == 100
    assert store.recent_now("user999", 5) == ["a"]
    assert store.recent_now("user0", 5) == []  # least recently used went first


def test_the_memory_store_does_not_keep_huge_user_ids() -> None:
    store = MemoryHistory(cap=3, max_users=10)
    huge = "x" * 1_000_000
    store.append_now(huge, "a")
    assert store.recent_now(huge, 5) == ["a"]
    assert all(sys.getsizeof(k) < 200 for k in store._users)


@pytest.mark.parametrize("item", ["", "x" * 257])
def test_item_ids_outside_the_size_limit_are_refused(item: str) -> None:
    with pytest.raises(ValueError, match="item id"):
        MemoryHistory().append_now("u1", item)


def test_histories_satisfy_the_protocol(history: LiveHistory) -> None:
    assert isinstance(history, LiveHistory)


@pytest.mark.asyncio
async def test_the_background_sync_survives_an_unexpected_error(
    pair: tuple[RedisHistory, RedisHistory], private_redis: RedisServer
) -> None:
    history, replica = pair
    calls = 0

    async def flaky_on_synced(user_id: str) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug in a callback")

    history.on_synced = flaky_on_synced
    private_redis.pause()
    await append_all(history, "u1", ["a"])
    await append_all(history, "u2", ["b"])
    private_redis.resume()
    task = asyncio.create_task(history.run_sync(interval_s=0.02))
    try:
        await until(lambda: not history.pending and calls >= 2, timeout_s=5.0)
        assert not history.pending  # the round after the error pushed the rest
        assert await replica.recent("u2", 10) == ["b"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
