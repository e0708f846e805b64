"""With a real Redis: the L2 tier, shared live history, and Redis failures that never cost a 5xx."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import RedisServer, free_port
from service_fixtures import make_settings, running_app

pytestmark = [pytest.mark.asyncio, pytest.mark.redis]


async def until_blend(client: object, path: str, attempts: int, pause_s: float) -> dict[str, Any]:
    """Ask `path` until the answer's strategy is `blend` (or attempts run out); the last answer."""
    for _ in range(attempts):
        answer: dict[str, Any] = (await client.get(path)).json()  # type: ignore[attr-defined]
        if answer["strategy"] == "blend":
            break
        await asyncio.sleep(pause_s)
    return answer


def redis_settings(store: Path, url: str, **extra: object) -> object:
    return make_settings(
        store, redis={"url": url, "breaker_failures": 2, "breaker_reset_s": 0.2}, **extra
    )


async def test_a_second_replica_gets_an_l2_hit(published_store: Path, redis_url: str) -> None:
    settings = redis_settings(published_store, redis_url)
    async with running_app(settings) as a, running_app(settings) as b:  # type: ignore[arg-type]
        first = (await a.get("/recommend/11", params={"k": 8})).json()
        second = (await b.get("/recommend/11", params={"k": 8})).json()
        third = (await b.get("/recommend/11", params={"k": 8})).json()
        assert [x["cache"] for x in (first, second, third)] == ["miss", "l2", "l1"]
        assert first["items"] == second["items"] == third["items"]
        text = (await b.get("/metrics")).text
        assert 'cinesync_cache_requests_total{result="hit",tier="l2"} 1.0' in text


async def test_an_event_on_one_replica_is_read_on_another(
    published_store: Path, redis_url: str
) -> None:
    settings = redis_settings(published_store, redis_url)
    async with running_app(settings) as a, running_app(settings) as b:  # type: ignore[arg-type]
        before = (await a.get("/recommend/shared-user")).json()
        assert (await b.get("/recommend/shared-user")).json()["cache"] == "l2"
        watched = before["items"][0]["item_id"]
        r = await a.post("/users/shared-user/events", json={"item_id": watched, "type": "view"})
        assert r.status_code == 202
        assert (await a.get("/recommend/shared-user")).json()["strategy"] == "blend"
        # the other replica hears of it over pub/sub within milliseconds
        after = await until_blend(b, "/recommend/shared-user", 100, 0.01)
        assert after["strategy"] == "blend"
        assert watched not in [i["item_id"] for i in after["items"]]


async def test_an_event_taken_while_redis_was_away_reaches_the_other_replica_when_it_is_back(
    published_store: Path, redis_server: RedisServer, redis_url: str
) -> None:
    settings = redis_settings(published_store, redis_url, events={"sync_interval_s": 0.05})
    async with running_app(settings) as a, running_app(settings) as b:  # type: ignore[arg-type]
        before = (await b.get("/recommend/partitioned")).json()
        watched = before["items"][0]["item_id"]
        redis_server.pause()
        try:
            r = await a.post("/users/partitioned/events", json={"item_id": watched, "type": "view"})
            assert r.status_code == 202  # accepted, kept in A's process until Redis answers
        finally:
            redis_server.resume()
        # no further request reaches A: its background sync pushes the event and invalidates
        # the user everywhere (B's L1 over pub/sub, the L2 entry B wrote)
        after = await until_blend(b, "/recommend/partitioned", 300, 0.02)
        assert after["strategy"] == "blend"
        assert watched not in [i["item_id"] for i in after["items"]]


async def test_an_event_still_pending_at_shutdown_reaches_redis_before_the_replica_exits(
    published_store: Path, redis_server: RedisServer, redis_url: str
) -> None:
    # no background sync in this test's time: only the shutdown flush can deliver the event
    settings = redis_settings(published_store, redis_url, events={"sync_interval_s": 3600})
    async with running_app(settings) as b:  # type: ignore[arg-type]
        async with running_app(settings) as a:  # type: ignore[arg-type]
            before = (await a.get("/recommend/leaving")).json()
            watched = before["items"][0]["item_id"]
            redis_server.pause()
            try:
                r = await a.post("/users/leaving/events", json={"item_id": watched, "type": "view"})
                assert r.status_code == 202  # kept in A's process: Redis did not answer
            finally:
                redis_server.resume()
        # A has shut down; its flush pushed the event and invalidated the user
        after = (await b.get("/recommend/leaving")).json()
        assert after["strategy"] == "blend"
        assert watched not in [i["item_id"] for i in after["items"]]


async def test_a_replica_applies_an_announcement_without_a_redis_call_of_its_own(
    published_store: Path, private_redis: RedisServer
) -> None:
    import redis.asyncio as aioredis

    settings = redis_settings(published_store, private_redis.url)
    admin = aioredis.from_url(private_redis.url)

    async def script_calls() -> int:
        stats = await admin.info("commandstats")
        return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("eval", "evalsha"))

    try:
        async with running_app(settings) as a, running_app(settings) as b:  # type: ignore[arg-type]
            item = (await b.get("/recommend/announced")).json()["items"][0]["item_id"]
            receiver = b._transport.app.state.cinesync.invalidations  # type: ignore[attr-defined]

            async def post(user: str, received: int) -> None:
                r = await a.post(f"/users/{user}/events", json={"item_id": item, "type": "view"})
                assert r.status_code == 202
                for _ in range(200):
                    if receiver.received == received:
                        break
                    await asyncio.sleep(0.01)
                assert receiver.received == received

            await post("warm-up", 1)  # A's scripts are loaded into Redis (SCRIPT LOAD) now
            await b._transport.app.state.cinesync.cache.drain()  # type: ignore[attr-defined]
            before = await script_calls()
            await post("announced", 2)
            # A's append (which also dropped the L2 lists) and A's own invalidation; none from B
            assert await script_calls() - before == 2
            assert (await b.get("/recommend/announced")).json()["cache"] == "miss"
    finally:
        await admin.aclose()


async def test_every_key_expires_and_cached_lists_expire_before_histories(
    published_store: Path, redis_url: str
) -> None:
    """Compose runs Redis with `volatile-ttl`: under memory pressure it evicts the keys closest to
    expiry first. So every key must carry a TTL (a key without one is never evicted, and a full
    Redis would refuse writes), and the L2 lists must expire before the live histories."""
    import redis.asyncio as aioredis

    settings = redis_settings(published_store, redis_url)
    admin = aioredis.from_url(redis_url)
    try:
        async with running_app(settings) as client:  # type: ignore[arg-type]
            item = (await client.get("/recommend/ttl-user")).json()["items"][0]["item_id"]
            r = await client.post("/users/ttl-user/events", json={"item_id": item, "type": "view"})
            assert r.status_code == 202
            await client.get("/recommend/ttl-user")
            await client.get("/recommend/other-user", params={"k": 3})
            await client._transport.app.state.cinesync.cache.drain()  # type: ignore[attr-defined]
            ttls = {key.decode(): await admin.ttl(key) async for key in admin.scan_iter()}
    finally:
        await admin.aclose()
    assert len(ttls) >= 4, ttls  # the user's events, their generation, the L2 lists, ...
    assert all(ttl > 0 for ttl in ttls.values()), ttls
    l2 = [ttl for key, ttl in ttls.items() if ":recs:" in key]
    history = [ttl for key, ttl in ttls.items() if ":events:" in key]
    assert l2, ttls
    assert history, ttls
    assert max(l2) <= settings.cache.l2_ttl_s < min(history)  # type: ignore[attr-defined]


async def test_redis_absent_at_start_still_serves_from_l1(
    published_store: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    async with running_app(redis_settings(published_store, url)) as client:  # type: ignore[arg-type]
        codes = [(await client.get(f"/recommend/{u}")).status_code for u in range(5)]
        assert codes == [200] * 5
        assert (await client.get("/recommend/1")).json()["cache"] == "l1"
        assert (
            await client.post("/users/1/events", json={"item_id": "5", "type": "view"})
        ).status_code == 202
    assert any("L1 only" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("fault", ["stop", "pause"])
async def test_redis_failing_mid_run_costs_no_5xx(
    published_store: Path, private_redis: RedisServer, fault: str
) -> None:
    settings = redis_settings(published_store, private_redis.url)
    async with running_app(settings) as client:  # type: ignore[arg-type]
        assert (await client.get("/recommend/1")).json()["cache"] == "miss"
        private_redis.stop() if fault == "stop" else private_redis.pause()
        started = time.perf_counter()
        bodies = []
        for i in range(20):
            r = await client.get(f"/recommend/during-{i}")
            assert r.status_code == 200
            bodies.append(r.json())
            event = await client.post(
                f"/users/during-{i}/events", json={"item_id": "5", "type": "view"}
            )
            assert event.status_code == 202
        elapsed = time.perf_counter() - started
        assert all(b["cache"] == "miss" for b in bodies)
        assert elapsed < 5.0  # socket timeouts are bounded and the breaker opens
        text = (await client.get("/metrics")).text
        assert "cinesync_redis_breaker_open 1.0" in text
        assert 'cinesync_cache_requests_total{result="error",tier="l2"}' in text
        after = (await client.get("/recommend/during-0")).json()
        assert after["strategy"] == "blend"  # the event was kept in process
        private_redis.resume()
