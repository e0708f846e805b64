"""Read-your-writes across replicas: an L2 write computed from a user's live events as they were
before another replica took a new event is refused by Redis (the user's event generation)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from service_fixtures import make_settings

from model_store.store import ModelStore
from service import keys
from service.breaker import CircuitBreaker
from service.bundle import Bundle, load_bundle
from service.cache import TieredCache
from service.cache_l1 import L1Cache
from service.cache_redis import RedisCache
from service.history import UNKNOWN_GENERATION, LiveEvents, MemoryHistory, RedisHistory
from service.metrics import ServiceMetrics
from service.recommender import Recommender
from service.redis_client import make_redis
from service.registry import ModelRegistry

pytestmark = [pytest.mark.asyncio, pytest.mark.redis]

MODEL = "cinesync"  # the bundle built by the `published_store` fixture has this name too


@dataclass
class Replica:
    """What one service process holds: its own Redis client, live history, L1 and L2."""

    history: RedisHistory
    cache: TieredCache
    metrics: ServiceMetrics

    async def take_event(self, user_id: str, item_id: str) -> None:
        """What `Recommender.record_event` does: append, then invalidate the user."""
        await self.history.append(user_id, item_id, 0.0)
        await self.cache.invalidate_user(MODEL, user_id)

    def stale_writes(self) -> float:
        value = self.metrics.registry.get_sample_value("cinesync_cache_stale_writes_total")
        return 0.0 if value is None else value

    def recommender(self, bundle: Bundle) -> Recommender:
        registry = ModelRegistry(lambda version: bundle)
        registry.current = bundle
        exposure = self.metrics.online_exposure(100, bundle.n_items)
        return Recommender(registry, self.cache, self.history, self.metrics, exposure,
                           n_full=10, n_content=0)  # fmt: skip


def replica(url: str) -> Replica:
    client = make_redis(url, socket_timeout_s=1.0, connect_timeout_s=1.0, max_connections=8)
    breaker = CircuitBreaker(3, 1.0)
    metrics = ServiceMetrics()
    history = RedisHistory(
        client, model=MODEL, cap=50, ttl_s=3600, timeout_s=1.0, breaker=breaker, metrics=metrics
    )
    l2 = RedisCache(client, ttl_s=60, timeout_s=1.0, breaker=breaker, metrics=metrics)
    return Replica(history, TieredCache(L1Cache(100, 60.0), l2), metrics)


@pytest_asyncio.fixture
async def replicas(redis_url: str) -> AsyncIterator[tuple[Replica, Replica]]:
    a, b = replica(redis_url), replica(redis_url)
    yield a, b
    for r in (a, b):
        await r.history.close()
        await r.cache.close()  # closes the shared client too


def recs(user_id: str) -> str:
    return keys.recs_key(MODEL, 1, user_id, keys.params_digest(k=10))


async def test_an_l2_write_computed_before_another_replicas_event_is_refused(
    replicas: tuple[Replica, Replica],
) -> None:
    a, b = replicas
    await a.history.append("u1", "i1", 0.0)
    seen = await a.history.read("u1", 50)  # A starts a miss: reads the events ...
    snapshot = a.cache.snapshot()
    await b.take_event("u1", "i2")  # ... B takes an event and deletes the user's keys ...
    # ... and A's write, computed from the old events, reaches Redis after that (A has not heard
    # of the event: its own invalidation epochs cannot catch this one).
    await a.cache.set(recs("u1"), b"stale", "u1", MODEL, snapshot=snapshot,
                      generation=seen.generation)  # fmt: skip
    assert await b.cache.get(recs("u1")) == (None, "miss")
    assert a.stale_writes() == 1


async def test_an_l2_write_from_the_current_events_is_stored_and_shared(
    replicas: tuple[Replica, Replica],
) -> None:
    a, b = replicas
    await b.take_event("u1", "i1")
    seen = await a.history.read("u1", 50)
    await a.cache.set(recs("u1"), b"fresh", "u1", MODEL, generation=seen.generation)
    assert await b.cache.get(recs("u1")) == (b"fresh", "l2")
    assert a.stale_writes() == 0


async def test_a_user_without_events_has_a_generation_too(
    replicas: tuple[Replica, Replica],
) -> None:
    a, b = replicas
    seen = await a.history.read("newcomer", 50)
    assert seen == LiveEvents([], "0")
    await a.cache.set(recs("newcomer"), b"popular", "newcomer", MODEL, generation=seen.generation)
    assert await b.cache.get(recs("newcomer")) == (b"popular", "l2")


async def test_every_append_raises_the_generation_read_with_the_events(
    replicas: tuple[Replica, Replica],
) -> None:
    a, b = replicas
    generations = []
    for item in ["i1", "i2", "i2"]:  # a repeat collapses in the list, but still counts
        await b.history.append("u1", item, 0.0)
        seen = await a.history.read("u1", 50)
        generations.append(seen.generation)
        assert seen.items == ["i1", "i2"][: len(seen.items)]
    assert generations == ["1", "2", "3"]


async def test_a_write_guarded_by_an_unknown_generation_is_never_stored(
    replicas: tuple[Replica, Replica],
) -> None:
    a, b = replicas
    await a.cache.set(recs("u1"), b"v", "u1", MODEL, generation=UNKNOWN_GENERATION)
    assert await b.cache.get(recs("u1")) == (None, "miss")
    # not sent to Redis, so not counted as a stale write: no user posted anything
    assert a.stale_writes() == 0


async def test_a_read_that_fell_back_in_process_has_an_unknown_generation(
    replicas: tuple[Replica, Replica],
) -> None:
    a, _ = replicas
    await a.history.append("u1", "i1", 0.0)
    for _ in range(3):
        a.history.breaker.record_failure()  # Redis counted as down: reads use the local copy
    seen = await a.history.read("u1", 50)
    assert seen == LiveEvents(["i1"], UNKNOWN_GENERATION)


async def test_the_in_process_history_needs_no_generation() -> None:
    history = MemoryHistory(cap=5)
    await history.append("u1", "i1", 0.0)
    assert (await history.read("u1", 5)).generation is None


async def test_a_replica_computing_during_another_replicas_event_leaves_no_stale_list(
    replicas: tuple[Replica, Replica], published_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """End to end through two Recommenders (no pub/sub between them, so only the generation
    can stop A's write): A reads the user's events, B takes an event for the user, then A ranks
    with the old events and writes behind. B's next answer must reflect its own event."""
    bundle = load_bundle(ModelStore(published_store), MODEL, 1, make_settings(published_store))
    a, b = replicas
    rec_a, rec_b = a.recommender(bundle), b.recommender(bundle)
    watched = bundle.catalog.item_ids[int(bundle.catalog.popular_order[0])]
    real_read = a.history.read

    async def read_then_event_elsewhere(user_id: str, limit: int) -> LiveEvents:
        seen = await real_read(user_id, limit)
        await rec_b.record_event(user_id, watched, 0.0)
        return seen

    monkeypatch.setattr(a.history, "read", read_then_event_elsewhere)
    stale = await rec_a.recommend("racer", 10, True, None)
    await a.cache.drain()  # A's write behind has reached Redis (or been refused)
    assert watched in [i["item_id"] for i in json.loads(stale.body)["items"]]
    after = await rec_b.recommend("racer", 10, True, None)
    assert (after.tier, after.strategy) == ("miss", "blend")
    assert watched not in [i["item_id"] for i in json.loads(after.body)["items"]]
    assert a.stale_writes() == 1
