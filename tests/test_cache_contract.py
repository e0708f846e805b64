"""One contract suite over every Cache: L1, Redis (a real server), Null, and L1-over-Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio

from service import keys
from service.breaker import CircuitBreaker
from service.cache import Cache, NullCache, TieredCache
from service.cache_l1 import L1Cache
from service.cache_redis import RedisCache
from service.redis_client import make_redis

TTL_S = 0.3
MODEL = "cinesync"
ODD_USERS = ["x" * 10_000, "ünïcødé-ユーザー", "../..", "%2F", "nul\x00id", " ", "", "a:b:c"]


class TieredAsCache:
    """TieredCache seen through the plain Cache interface (get -> bytes | None)."""

    tier = "tiered"

    def __init__(self, tiered: TieredCache) -> None:
        self.tiered = tiered

    async def get(self, key: str) -> bytes | None:
        return (await self.tiered.get(key))[0]

    async def set(
        self, key: str, value: bytes, user_id: str, model: str, generation: str | None = None
    ) -> None:
        await self.tiered.set(key, value, user_id, model, generation=generation)

    async def invalidate_user(self, model: str, user_id: str) -> None:
        await self.tiered.invalidate_user(model, user_id)

    async def close(self) -> None:
        await self.tiered.close()


def _redis_cache(url: str, ttl_s: float) -> RedisCache:
    client = make_redis(url, socket_timeout_s=1.0, connect_timeout_s=1.0, max_connections=16)
    return RedisCache(client, ttl_s=ttl_s, timeout_s=1.0, breaker=CircuitBreaker(5, 1.0))


MakeCache = Callable[[float], Cache]


@pytest_asyncio.fixture(params=["l1", "redis", "null", "tiered", "l1-off"])
async def make_cache(request: pytest.FixtureRequest) -> AsyncIterator[MakeCache]:
    """Builds caches of one implementation with a given TTL; closes them afterwards."""
    made: list[Cache] = []
    url = request.getfixturevalue("redis_url") if request.param in {"redis", "tiered"} else ""

    def make(ttl_s: float) -> Cache:
        impl: Cache
        if request.param == "l1":
            impl = L1Cache(size=1000, ttl_s=ttl_s)
        elif request.param == "null":
            impl = NullCache()
        elif request.param == "l1-off":
            impl = L1Cache(size=0, ttl_s=ttl_s)  # CINESYNC_CACHE__L1_SIZE=0: stores nothing
        elif request.param == "redis":
            impl = _redis_cache(url, ttl_s)
        else:
            impl = TieredAsCache(TieredCache(L1Cache(1000, ttl_s), _redis_cache(url, ttl_s)))
        made.append(impl)
        return impl

    yield make
    for impl in made:
        await impl.close()


@pytest.fixture
def cache(make_cache: MakeCache) -> Cache:
    return make_cache(60.0)


def key(user: str, version: int = 1, **params: object) -> str:
    return keys.recs_key(MODEL, version, user, keys.params_digest(k=10, **params))


def stores(cache: Cache) -> bool:
    return not isinstance(cache, NullCache) and not (
        isinstance(cache, L1Cache) and not cache.enabled
    )


@pytest.mark.asyncio
async def test_set_then_get_round_trips_the_bytes(cache: Cache) -> None:
    value = bytes(range(256)) * 40
    await cache.set(key("u1"), value, "u1", MODEL)
    assert await cache.get(key("u1")) == (value if stores(cache) else None)


@pytest.mark.asyncio
async def test_an_unknown_key_is_a_miss(cache: Cache) -> None:
    assert await cache.get(key("nobody")) is None
    assert await cache.get("not a recs key") is None


@pytest.mark.asyncio
async def test_set_overwrites(cache: Cache) -> None:
    await cache.set(key("u1"), b"old", "u1", MODEL)
    await cache.set(key("u1"), b"new", "u1", MODEL)
    assert await cache.get(key("u1")) == (b"new" if stores(cache) else None)


@pytest.mark.asyncio
async def test_invalidate_user_removes_every_key_of_that_user_only(cache: Cache) -> None:
    mine = [key("u1", 1), key("u1", 2), key("u1", 2, genres=["Drama"]), key("u1", 3, k2=1)]
    theirs = [key("u2", 1), key("u2", 2), key("u10", 1)]
    for k in mine:
        await cache.set(k, b"mine", "u1", MODEL)
    for k in theirs:
        await cache.set(k, b"theirs", k.split(":")[5], MODEL)
    await cache.invalidate_user(MODEL, "u1")
    assert [await cache.get(k) for k in mine] == [None] * len(mine)
    expected = b"theirs" if stores(cache) else None
    assert [await cache.get(k) for k in theirs] == [expected] * len(theirs)
    await cache.set(mine[0], b"again", "u1", MODEL)  # the user can be cached again afterwards
    assert await cache.get(mine[0]) == (b"again" if stores(cache) else None)


@pytest.mark.asyncio
async def test_invalidating_another_model_leaves_this_one(cache: Cache) -> None:
    await cache.set(key("u1"), b"v", "u1", MODEL)
    await cache.invalidate_user("other-model", "u1")
    assert await cache.get(key("u1")) == (b"v" if stores(cache) else None)


@pytest.mark.asyncio
async def test_values_expire_after_their_ttl(make_cache: MakeCache) -> None:
    cache = make_cache(TTL_S)
    await cache.set(key("u1"), b"v", "u1", MODEL)
    assert await cache.get(key("u1")) == (b"v" if stores(cache) else None)
    await asyncio.sleep(TTL_S + 0.25)
    assert await cache.get(key("u1")) is None


@pytest.mark.asyncio
@pytest.mark.parametrize("user", ODD_USERS)
async def test_odd_user_ids_are_cached_and_invalidated_on_their_own(
    cache: Cache, user: str
) -> None:
    await cache.set(key(user), b"odd", user, MODEL)
    await cache.set(key("plain"), b"plain", "plain", MODEL)
    assert await cache.get(key(user)) == (b"odd" if stores(cache) else None)
    await cache.invalidate_user(MODEL, user)
    assert await cache.get(key(user)) is None
    assert await cache.get(key("plain")) == (b"plain" if stores(cache) else None)


@pytest.mark.asyncio
async def test_concurrent_sets_and_gets_never_mix_values(cache: Cache) -> None:
    users = [f"user{i}" for i in range(200)]

    async def write_then_read(user: str) -> bytes | None:
        await cache.set(key(user), user.encode(), user, MODEL)
        return await cache.get(key(user))

    got = await asyncio.gather(*(write_then_read(u) for u in users))
    assert got == [u.encode() if stores(cache) else None for u in users]
    await asyncio.gather(*(cache.invalidate_user(MODEL, u) for u in users[::2]))
    after = await asyncio.gather(*(cache.get(key(u)) for u in users))
    assert after == [u.encode() if stores(cache) and i % 2 else None for i, u in enumerate(users)]


@pytest.mark.asyncio
async def test_empty_value_round_trips(cache: Cache) -> None:
    await cache.set(key("u1"), b"", "u1", MODEL)
    assert await cache.get(key("u1")) == (b"" if stores(cache) else None)


# TieredCache specifics: which tier answered, L1 filled from L2, no stale write-back.


@pytest_asyncio.fixture
async def tiered(redis_url: str) -> AsyncIterator[TieredCache]:
    cache = TieredCache(L1Cache(size=1000, ttl_s=60), _redis_cache(redis_url, 60))
    yield cache
    await cache.close()


@pytest.mark.asyncio
async def test_tiered_reports_the_tier_and_fills_l1_from_l2(tiered: TieredCache) -> None:
    k = key("u1")
    assert await tiered.get(k) == (None, "miss")
    await tiered.l2.set(k, b"v", "u1", MODEL)  # e.g. written by another replica
    assert await tiered.get(k) == (b"v", "l2")
    assert await tiered.get(k) == (b"v", "l1")
    await tiered.invalidate_user(MODEL, "u1")  # the L1 copy is indexed under the user too
    assert await tiered.get(k) == (None, "miss")


@pytest.mark.asyncio
async def test_tiered_skips_a_write_computed_before_the_users_invalidation(
    tiered: TieredCache,
) -> None:
    k = key("u1")
    snapshot = tiered.snapshot()  # a miss starts computing with the old history ...
    await tiered.invalidate_user(MODEL, "u1")  # ... an event arrives meanwhile ...
    await tiered.set(k, b"stale", "u1", MODEL, snapshot=snapshot)  # ... the old answer lands
    assert await tiered.get(k) == (None, "miss")
    await tiered.set(key("u2"), b"u2", "u2", MODEL, snapshot=snapshot)  # others unaffected
    assert await tiered.get(key("u2")) == (b"u2", "l1")


@pytest.mark.asyncio
async def test_tiered_skips_a_stale_write_even_when_the_users_epoch_was_evicted() -> None:
    tiered = TieredCache(L1Cache(size=100, ttl_s=60), NullCache(), epochs=2)
    snapshot = tiered.snapshot()  # u1's miss starts computing ...
    for user in ("u1", "u2", "u3"):  # ... u1's event, then so many others that u1's is evicted
        await tiered.invalidate_user(MODEL, user)
    await tiered.set(key("u1"), b"stale", "u1", MODEL, snapshot=snapshot)
    assert await tiered.get(key("u1")) == (None, "miss")
    await tiered.set(key("u1"), b"fresh", "u1", MODEL, snapshot=tiered.snapshot())
    assert await tiered.get(key("u1")) == (b"fresh", "l1")


@pytest.mark.asyncio
async def test_tiered_does_not_refill_l1_from_an_l2_read_that_raced_an_invalidation(
    tiered: TieredCache,
) -> None:
    k = key("u1")
    await tiered.l2.set(k, b"old", "u1", MODEL)
    real_get = tiered.l2.get

    async def slow_get(key: str) -> bytes | None:
        value = await real_get(key)  # read before the invalidation ...
        await tiered.invalidate_user(MODEL, "u1")  # ... which completes before the reply lands
        return value

    tiered.l2.get = slow_get  # type: ignore[method-assign]
    assert await tiered.get(k) == (b"old", "l2")  # served once, to the request that read it
    tiered.l2.get = real_get  # type: ignore[method-assign]
    assert await tiered.get(k) == (None, "miss")


@pytest.mark.asyncio
async def test_forget_local_drops_l1_and_refuses_every_write_computed_before_it(
    tiered: TieredCache,
) -> None:
    await tiered.set(key("u1"), b"v1", "u1", MODEL)
    before = tiered.snapshot()  # a miss starts computing ...
    tiered.forget_local()  # ... the replica learns it may have missed invalidations ...
    assert tiered.l1.peek(key("u1")) is None
    await tiered.set(key("u2"), b"stale", "u2", MODEL, snapshot=before)  # ... the answer lands
    assert tiered.l1.peek(key("u2")) is None
    assert await tiered.l2.get(key("u2")) is None
    await tiered.set(key("u3"), b"new", "u3", MODEL, snapshot=tiered.snapshot())
    assert await tiered.get(key("u3")) == (b"new", "l1")
    assert await tiered.get(key("u1")) == (b"v1", "l2")  # L2 is shared: not this replica's to drop


@pytest.mark.asyncio
async def test_write_behind_stores_in_l1_at_once_and_in_l2_after_drain(
    tiered: TieredCache,
) -> None:
    k = key("u1")
    await tiered.set(k, b"v", "u1", MODEL, write_behind=True)
    assert await tiered.l1.get(k) == b"v"  # the response's own tier, before any round trip
    await tiered.drain()
    assert await tiered.l2.get(k) == b"v"  # landed in Redis behind the response


@pytest.mark.asyncio
async def test_write_behind_drops_a_value_whose_user_is_invalidated_before_it_lands(
    tiered: TieredCache,
) -> None:
    k = key("u1")
    snapshot = tiered.snapshot()
    await tiered.set(k, b"stale", "u1", MODEL, snapshot=snapshot, write_behind=True)
    await tiered.invalidate_user(MODEL, "u1")  # runs before the background write is scheduled
    await tiered.drain()
    assert await tiered.l2.get(k) is None
    assert await tiered.get(k) == (None, "miss")


@pytest.mark.asyncio
@pytest.mark.parametrize("write_behind", [True, False])
async def test_an_invalidation_waits_for_an_l2_write_already_sending_its_set(
    tiered: TieredCache, write_behind: bool
) -> None:
    """The write passed its stale check and is on its way to Redis (another pooled connection)
    when the user's invalidation starts: its SET must not land after the DEL."""
    k = key("u1")
    real_set = tiered.l2.set
    sending, release = asyncio.Event(), asyncio.Event()

    async def held_set(
        key: str, value: bytes, user_id: str, model: str, generation: str | None = None
    ) -> None:
        sending.set()
        await release.wait()  # the SET is still on its way while the event arrives
        await real_set(key, value, user_id, model, generation)

    tiered.l2.set = held_set  # type: ignore[method-assign]
    setter = asyncio.create_task(
        tiered.set(k, b"stale", "u1", MODEL, snapshot=tiered.snapshot(), write_behind=write_behind)
    )
    await sending.wait()
    invalidation = asyncio.create_task(tiered.invalidate_user(MODEL, "u1"))
    await asyncio.sleep(0.05)
    release.set()
    await setter
    await invalidation
    await tiered.drain()
    tiered.l2.set = real_set  # type: ignore[method-assign]
    assert await tiered.l2.get(k) is None
    assert await tiered.get(k) == (None, "miss")


@pytest.mark.asyncio
async def test_write_behind_skips_l2_writes_beyond_the_in_flight_bound(redis_url: str) -> None:
    cache = TieredCache(
        L1Cache(size=1000, ttl_s=60), _redis_cache(redis_url, 60), max_write_behind=2
    )
    try:
        for user in ("a", "b", "c", "d"):  # no await yields between them: 2 in flight
            await cache.set(key(user), user.encode(), user, MODEL, write_behind=True)
        await cache.drain()
        assert cache.skipped_writes == 2
        stored = [await cache.l2.get(key(user)) for user in ("a", "b", "c", "d")]
        assert stored == [b"a", b"b", None, None]
        assert await cache.get(key("d")) == (b"d", "l1")  # the skipped ones are still in L1
    finally:
        await cache.close()


@pytest.mark.asyncio
async def test_l2_caches_a_bounded_number_of_lists_per_user(redis_url: str) -> None:
    l2 = _redis_cache(redis_url, 60)
    l2.max_keys_per_user = 3
    sweep = [keys.recs_key(MODEL, 1, "sweeper", keys.params_digest(k=k)) for k in range(1, 6)]
    try:
        for k in sweep:  # a client sweeping k
            await l2.set(k, b"list", "sweeper", MODEL)
        assert [await l2.get(k) for k in sweep] == [b"list"] * 3 + [None] * 2
        await l2.set(sweep[0], b"new", "sweeper", MODEL)  # a key it holds is still rewritten
        assert await l2.get(sweep[0]) == b"new"
        index = await l2._redis.scard(keys.user_index_key(MODEL, "sweeper"))
        assert index == 3  # and so bounds the work of the user's next invalidation
        await l2.invalidate_user(MODEL, "sweeper")
        assert [await l2.get(k) for k in sweep] == [None] * 5
    finally:
        await l2.close()
