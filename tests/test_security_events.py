"""Scenarios 23 and 24: event ingestion under bad input and abuse.

23: unknown items 404, timestamps beyond the configured clock skew 422, a repeat of the user's
last item collapses into one entry, a flood for one user stays within the per-user cap (memory
and Redis) and never touches another user's history, the number of users held is bounded.
24: per-client token bucket (429 + Retry-After), not bypassed by X-Forwarded-For from an
untrusted peer, honoured (right-most untrusted hop) from a trusted proxy; checked in process
and on the real `cinesync serve` process.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from conftest import RedisServer
from live_service import tiny_store
from service_fixtures import MODEL, make_settings, running_app, served_bundle

from loadtests.service_process import running
from service import keys
from service.ratelimit import ClientResolver, TokenBuckets

FAST = {"rate_per_s": 1e6, "burst": 10**6}  # no rate limit in the scenario-23 tests


def event(item_id: str, **extra: Any) -> dict[str, Any]:
    return {"item_id": item_id, "type": "view", **extra}


def app_of(client: httpx.AsyncClient) -> Any:
    transport = client._transport
    assert isinstance(transport, httpx.ASGITransport)
    return transport.app


@asynccontextmanager
async def peer(client: httpx.AsyncClient, host: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the same app whose socket peer is `host`."""
    transport = httpx.ASGITransport(app=app_of(client), client=(host, 40_000))
    async with httpx.AsyncClient(transport=transport, base_url="http://cinesync") as c:
        yield c


async def live_items(client: httpx.AsyncClient, user_id: str) -> list[str]:
    history = app_of(client).state.cinesync.history
    return list(await history.recent(user_id, 10_000))


async def rec_items(client: httpx.AsyncClient, user_id: str) -> list[str]:
    r = await client.get(f"/recommend/{user_id}", params={"k": 10})
    assert r.status_code == 200, r.text
    return [i["item_id"] for i in r.json()["items"]]


# --- 23: validation --------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_unknown_item_is_404_and_records_nothing(published_store: Path) -> None:
    async with running_app(make_settings(published_store, events=FAST)) as client:
        for item_id in ("no-such-film", "0", "-1", "201", "1 ", "x" * 256, 10**30):
            r = await client.post("/users/u-unknown/events", json=event(item_id))  # type: ignore[arg-type]
            assert r.status_code == 404, (item_id, r.text)
            assert "unknown item" in r.json()["detail"]
        assert await live_items(client, "u-unknown") == []
        assert (await client.get("/recommend/u-unknown")).json()["strategy"] == "popular"


@pytest.mark.asyncio
async def test_timestamps_beyond_the_configured_skew_are_422(published_store: Path) -> None:
    settings = make_settings(published_store, events={**FAST, "max_future_skew_s": 60})
    async with running_app(settings) as client:
        item = served_bundle(client).catalog.item_ids[1]
        now = time.time()
        accepted = [now - 86_400, now, now + 30]
        refused = [now + 120, now + 10 * 365 * 86_400, 1e300]
        for ts in accepted:
            r = await client.post("/users/u-ts/events", json=event(item, timestamp=ts))
            assert r.status_code == 202, (ts, r.text)
        for ts in refused:
            r = await client.post("/users/u-ts2/events", json=event(item, timestamp=ts))
            assert r.status_code == 422, (ts, r.text)
            assert "future" in r.json()["detail"]
        assert await live_items(client, "u-ts2") == []
        for bad in (-1, "yesterday", float("nan")):
            r = await client.post(
                "/users/u-ts2/events",
                content=json.dumps(event(item, timestamp=bad)),
                headers={"content-type": "application/json"},
            )
            assert r.status_code == 422, (bad, r.text)


@pytest.mark.asyncio
async def test_event_fields_are_json_typed_without_coercion(client: httpx.AsyncClient) -> None:
    """What the schema says: numbers are JSON numbers, no booleans or numeric strings."""
    for extra in ({"value": False}, {"value": "4.5"}, {"timestamp": True},
                  {"timestamp": "1700000000"}, {"item_id": True}, {"item_id": 5.5},
                  {"type": "VIEW"}, {"type": None}):  # fmt: skip
        r = await client.post("/users/u-typed/events", json={**event("1"), **extra})
        assert r.status_code == 422, (extra, r.text)
    assert await live_items(client, "u-typed") == []
    r = await client.post("/users/u-typed/events", json={**event("1"), "value": 4, "item_id": 1.0})
    assert r.status_code == 202, r.text  # 4 is a number and 1.0 an integer in JSON Schema


@pytest.mark.asyncio
async def test_a_repeat_of_the_last_item_collapses_and_a_rewatch_is_kept(
    published_store: Path,
) -> None:
    async with running_app(make_settings(published_store, events=FAST)) as client:
        a, b = served_bundle(client).catalog.item_ids[1:3]
        for _ in range(50):
            assert (await client.post("/users/u-dup/events", json=event(a))).status_code == 202
        assert await live_items(client, "u-dup") == [a]
        for item_id in (b, a, a):
            await client.post("/users/u-dup/events", json=event(item_id))
        assert await live_items(client, "u-dup") == [a, b, a]


# --- 23: floods --------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_a_flood_for_one_user_stays_capped_and_leaves_other_users_intact(
    published_store: Path, redis_server: RedisServer, backend: str
) -> None:
    cap = 20
    extra: dict[str, Any] = {"events": {**FAST, "history_cap": cap}}
    if backend == "redis":
        redis_server.flushall()
        extra["redis"] = {"url": redis_server.url, "socket_timeout_s": 2.0}  # not a fault test
    async with running_app(make_settings(published_store, **extra)) as client:
        catalog = served_bundle(client).catalog.item_ids[1:]
        victims = {f"victim-{i}": catalog[10 * i : 10 * i + 5] for i in range(4)}
        for user_id, items in victims.items():
            for item_id in items:
                await client.post(f"/users/{user_id}/events", json=event(item_id))
        before = {u: await rec_items(client, u) for u in victims}
        flood = [catalog[i % len(catalog)] for i in range(600)]
        for start in range(0, len(flood), 50):  # 50 at a time: under the concurrency limit
            codes = await asyncio.gather(
                *(client.post("/users/flooder/events", json=event(i))
                  for i in flood[start : start + 50])
            )  # fmt: skip
            assert {r.status_code for r in codes} == {202}
        kept = await live_items(client, "flooder")
        assert len(kept) == cap
        assert set(kept) <= set(flood)
        for user_id, items in victims.items():
            assert await live_items(client, user_id) == items
            assert await rec_items(client, user_id) == before[user_id]
        if backend == "redis":
            r = redis.Redis.from_url(redis_server.url)
            try:
                assert r.llen(keys.events_key(MODEL, "flooder")) == cap
                for user_id, items in victims.items():
                    raw = r.lrange(keys.events_key(MODEL, user_id), 0, -1)
                    assert [v.decode() for v in raw] == items
            finally:
                r.close()


@pytest.mark.asyncio
async def test_concurrent_events_of_many_users_never_mix(published_store: Path) -> None:
    async with running_app(make_settings(published_store, events=FAST)) as client:
        catalog = served_bundle(client).catalog.item_ids[1:]
        plans = {f"mix-{u}": [catalog[(7 * u + 3 * j) % len(catalog)] for j in range(8)]
                 for u in range(25)}  # fmt: skip

        async def post_all(user_id: str, items: list[str]) -> None:
            for item_id in items:
                r = await client.post(f"/users/{user_id}/events", json=event(item_id))
                assert r.status_code == 202
                await asyncio.sleep(0)

        await asyncio.gather(*(post_all(u, items) for u, items in plans.items()))
        for user_id, items in plans.items():
            assert await live_items(client, user_id) == items


@pytest.mark.asyncio
async def test_users_held_in_process_are_bounded(published_store: Path) -> None:
    settings = make_settings(published_store, events={**FAST, "max_users": 50})
    async with running_app(settings) as client:
        item = served_bundle(client).catalog.item_ids[1]
        for u in range(300):
            await client.post(f"/users/many-{u}/events", json=event(item))
        history = app_of(client).state.cinesync.history
        assert len(history) == 50
        assert await live_items(client, "many-299") == [item]  # most recent users are kept


# --- 24: rate limiting -----------------------------------------------------------------------


def test_client_identity_is_the_peer_unless_the_peer_is_a_trusted_proxy() -> None:
    none = ClientResolver([])
    assert none.identify("203.0.113.5", ["198.51.100.1"]) == "203.0.113.5"
    proxies = ClientResolver(["10.0.0.0/8", "::1"])
    assert proxies.identify("203.0.113.5", ["198.51.100.1"]) == "203.0.113.5"
    assert proxies.identify("10.1.2.3", ["198.51.100.1"]) == "198.51.100.1"
    # the client wrote the left entries; the right-most untrusted one was added by our proxy
    assert proxies.identify("10.1.2.3", ["6.6.6.6, 198.51.100.1"]) == "198.51.100.1"
    assert proxies.identify("10.1.2.3", ["6.6.6.6", "198.51.100.1, 10.9.9.9"]) == "198.51.100.1"
    assert proxies.identify("::1", ["2001:DB8::1"]) == "2001:db8::1"
    assert proxies.identify("10.1.2.3", []) == "10.1.2.3"
    assert proxies.identify("10.1.2.3", ["10.2.2.2"]) == "10.2.2.2"
    assert proxies.identify("10.1.2.3", ["x" * 1000]) == "invalid:" + "x" * 64
    with pytest.raises(ValueError, match="not an IP"):
        ClientResolver(["*"])


def test_token_buckets_refill_at_the_rate_and_hold_a_bounded_number_of_clients() -> None:
    now = [0.0]
    buckets = TokenBuckets(rate=2.0, burst=3, max_clients=100, clock=lambda: now[0])
    assert [buckets.take("a").allowed for _ in range(4)] == [True, True, True, False]
    refused = buckets.take("a")
    assert not refused.allowed
    assert refused.retry_after_s == pytest.approx(0.5)
    assert buckets.take("b").allowed  # another client has its own bucket
    now[0] += 0.5
    assert buckets.take("a").allowed
    assert not buckets.take("a").allowed
    for i in range(1000):
        buckets.take(f"c{i}")
    assert len(buckets) == 100


def limited(store: Path, rate_per_s: float = 0.1, **extra: Any) -> Any:
    """Burst 3; by default one token per 10 s, so no stall of a loaded machine between the
    requests of a test refills one and turns an expected 429 into a 202."""
    return make_settings(store, events={"rate_per_s": rate_per_s, "burst": 3}, **extra)


@pytest.mark.asyncio
async def test_a_spoofed_forwarded_for_from_an_untrusted_peer_does_not_reset_the_limit(
    published_store: Path,
) -> None:
    async with running_app(limited(published_store)) as client:
        item = served_bundle(client).catalog.item_ids[1]
        async with peer(client, "203.0.113.5") as attacker:
            codes = []
            for i in range(8):
                r = await attacker.post(
                    "/users/u1/events", json=event(item),
                    headers={"X-Forwarded-For": f"198.51.100.{i}"},
                )  # fmt: skip
                codes.append(r.status_code)
            assert codes == [202] * 3 + [429] * 5
            assert int(r.headers["retry-after"]) >= 1
            assert "too many events" in r.json()["detail"]
        async with peer(client, "203.0.113.6") as other:  # another client is unaffected
            assert (await other.post("/users/u1/events", json=event(item))).status_code == 202


@pytest.mark.asyncio
async def test_invalid_events_count_against_the_limit(published_store: Path) -> None:
    async with running_app(limited(published_store)) as client:
        for _ in range(3):
            r = await client.post("/users/u1/events", json={"item_id": 1.5})
            assert r.status_code == 422
        r = await client.post("/users/u1/events", json={"item_id": 1.5})
        assert r.status_code == 429


@pytest.mark.asyncio
async def test_retry_after_is_honest(published_store: Path) -> None:
    async with running_app(limited(published_store, rate_per_s=2.0)) as client:
        item = served_bundle(client).catalog.item_ids[1]
        for _ in range(3):
            await client.post("/users/u1/events", json=event(item))
        refused = await client.post("/users/u1/events", json=event(item))
        assert refused.status_code == 429
        wait = int(refused.headers["retry-after"])
        assert wait == 1  # 2 tokens per second: the next one within a second
        await asyncio.sleep(wait)
        assert (await client.post("/users/u1/events", json=event(item))).status_code == 202


@pytest.mark.asyncio
async def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_limit(
    published_store: Path,
) -> None:
    settings = limited(published_store, trusted_proxies=["10.0.0.0/8"])
    async with running_app(settings) as client:
        item = served_bundle(client).catalog.item_ids[1]
        async with peer(client, "10.0.0.2") as proxy:

            async def post(xff: str) -> int:
                r = await proxy.post(
                    "/users/u1/events", json=event(item), headers={"X-Forwarded-For": xff}
                )
                return r.status_code

            assert [await post("198.51.100.7") for _ in range(4)] == [202, 202, 202, 429]
            # the client prepends a fake hop: the proxy's own entry still names it
            assert await post("1.2.3.4, 198.51.100.7") == 429
            assert await post("198.51.100.7, 10.0.0.9") == 429  # through two proxies
            assert [await post("198.51.100.8") for _ in range(3)] == [202, 202, 202]
        # the limit follows the client, not the proxy it comes through
        async with peer(client, "10.0.0.3") as other_proxy:
            r = await other_proxy.post(
                "/users/u1/events", json=event(item), headers={"X-Forwarded-For": "198.51.100.7"}
            )
            assert r.status_code == 429


# --- 24 on the real process: uvicorn does not rewrite the peer from X-Forwarded-For ------------


@pytest.fixture(scope="module")
def limited_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CINESYNC_")}
    env.update({
        "CINESYNC_STORE_DIR": str(tiny_store(tmp_path_factory)), "CINESYNC_MODEL_NAME": MODEL,
        "CINESYNC_LOG_LEVEL": "WARNING", "CINESYNC_EVENTS__RATE_PER_S": "0.5",
        "CINESYNC_EVENTS__BURST": "3",
    })  # fmt: skip
    log = tmp_path_factory.mktemp("events-live") / "service.log"
    with running(env=env, log_path=log) as svc:
        yield svc.url


def _post(url: str, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
    body = json.dumps(event("1")).encode()
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json", **headers}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers)


@pytest.mark.asyncio
async def test_the_real_server_limits_a_client_that_rotates_forwarded_for(
    limited_service: str,
) -> None:
    item_url = f"{limited_service}/users/rotating/events"
    loop = asyncio.get_running_loop()
    results = []
    for i in range(6):
        headers = {"X-Forwarded-For": f"198.51.100.{i}", "X-Real-IP": f"192.0.2.{i}",
                   "Forwarded": f"for=192.0.2.{i}"}  # fmt: skip
        results.append(await loop.run_in_executor(None, _post, item_url, headers))
    assert [status for status, _ in results] == [202, 202, 202, 429, 429, 429]
    assert int(results[-1][1]["retry-after"]) >= 1
