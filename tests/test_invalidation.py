"""Cross-replica L1 invalidation over Redis pub/sub, with a real Redis that goes away."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio
from conftest import cancel_midway, until

from service import keys
from service.breaker import CircuitBreaker
from service.cache import NullCache, TieredCache
from service.cache_l1 import L1Cache
from service.invalidation import Invalidations
from service.redis_client import make_redis

if TYPE_CHECKING:
    from conftest import RedisServer

pytestmark = [pytest.mark.asyncio, pytest.mark.redis]

MODEL = "cinesync"


def recs(user_id: str) -> str:
    return keys.recs_key(MODEL, 1, user_id, keys.params_digest(k=10))


class Replica:
    """One replica's L1 and its invalidation subscriber (no L2: only L1 is at stake here)."""

    def __init__(self, url: str) -> None:
        self.client = make_redis(url, socket_timeout_s=0.5, connect_timeout_s=0.5,
                                 max_connections=4)  # fmt: skip
        self.cache = TieredCache(L1Cache(100, 60.0), NullCache())
        self.invalidations = Invalidations(
            self.client, MODEL, self.cache.invalidate_user, on_subscribed=self.cache.forget_local,
            breaker=CircuitBreaker(50, 0.1), timeout_s=0.5,
        )  # fmt: skip
        self.task = asyncio.create_task(self.invalidations.run())

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.cache.close()
        await self.client.aclose()


@pytest_asyncio.fixture
async def replicas(private_redis: RedisServer) -> AsyncIterator[tuple[Replica, Replica]]:
    """Two replicas on a Redis of the test's own, both subscribed."""
    a, b = Replica(private_redis.url), Replica(private_redis.url)
    try:
        await until(lambda: a.invalidations.subscriptions == b.invalidations.subscriptions == 1)
        yield a, b
    finally:
        await a.close()
        await b.close()


async def test_an_announcement_drops_the_user_from_the_other_replicas_l1(
    replicas: tuple[Replica, Replica],
) -> None:
    a, b = replicas
    await b.cache.set(recs("u1"), b"list", "u1", MODEL)
    await b.cache.set(recs("u2"), b"list", "u2", MODEL)
    await a.invalidations.publish("u1")
    await until(lambda: b.cache.l1.peek(recs("u1")) is None)
    assert b.cache.l1.peek(recs("u2")) == b"list"  # only that user
    assert a.invalidations.received == 0  # a replica ignores its own announcements


async def test_a_resubscription_forgets_l1_since_announcements_may_have_been_missed(
    private_redis: RedisServer,
) -> None:
    a = Replica(private_redis.url)
    try:
        await until(lambda: a.invalidations.subscriptions == 1)
        await a.cache.set(recs("u1"), b"listed before the gap", "u1", MODEL)
        private_redis.stop()  # an event announced now would never reach this replica
        await asyncio.sleep(0.3)
        assert a.cache.l1.peek(recs("u1")) == b"listed before the gap"  # still serving L1
        private_redis.start()
        await until(lambda: a.invalidations.subscriptions == 2)
        assert a.cache.l1.peek(recs("u1")) is None
    finally:
        await a.close()


async def test_the_subscriber_survives_an_unexpected_error_in_applying_a_message(
    replicas: tuple[Replica, Replica],
) -> None:
    a, b = replicas
    real_apply = b.invalidations._apply
    calls = 0

    async def buggy_once(model: str, user_id: str) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug while applying")
        await real_apply(model, user_id)

    b.invalidations._apply = buggy_once
    await a.invalidations.publish("u1")  # b fails on this one ...
    await until(lambda: b.invalidations.subscriptions == 2)  # ... and subscribes again
    await b.cache.set(recs("u2"), b"list", "u2", MODEL)
    await a.invalidations.publish("u2")
    await until(lambda: b.cache.l1.peek(recs("u2")) is None)


async def test_an_announcement_redis_did_not_take_is_sent_again_once_it_can(
    replicas: tuple[Replica, Replica],
) -> None:
    a, b = replicas
    await b.cache.set(recs("u1"), b"list", "u1", MODEL)
    for _ in range(50):
        a.invalidations._breaker.record_failure()  # A counts Redis as down for a moment
    await a.invalidations.publish("u1")  # not sent ...
    assert list(a.invalidations._unannounced) == ["u1"]
    await until(lambda: b.cache.l1.peek(recs("u1")) is None)  # ... until Redis takes it
    assert not a.invalidations._unannounced


async def test_an_announcement_cancelled_mid_send_is_sent_again(
    replicas: tuple[Replica, Replica], private_redis: RedisServer
) -> None:
    a, b = replicas
    await b.cache.set(recs("u1"), b"list", "u1", MODEL)
    private_redis.pause()
    try:
        await cancel_midway(a.invalidations.publish("u1"))  # the PUBLISH waited on Redis
        assert list(a.invalidations._unannounced) == ["u1"]
    finally:
        private_redis.resume()
    await until(lambda: b.cache.l1.peek(recs("u1")) is None)  # sent once Redis answers


async def test_announcements_past_the_bound_are_dropped_and_counted(
    replicas: tuple[Replica, Replica],
) -> None:
    a, _ = replicas
    a.invalidations._unannounced.limit = 2
    for _ in range(50):
        a.invalidations._breaker.record_failure()
    for user in ("u1", "u2", "u3"):
        await a.invalidations.publish(user)
    assert list(a.invalidations._unannounced) == ["u2", "u3"]
    assert a.invalidations.dropped == 1
