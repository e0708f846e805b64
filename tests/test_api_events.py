"""POST /users/{user_id}/events: accepted events change the very next recommendation."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from service_fixtures import make_settings, running_app, served_bundle

pytestmark = pytest.mark.asyncio


def _items(body: dict[str, object]) -> list[str]:
    return [item["item_id"] for item in body["items"]]  # type: ignore[attr-defined, index]


async def test_event_is_accepted_with_202(client: httpx.AsyncClient) -> None:
    r = await client.post("/users/7/events", json={"item_id": "5", "type": "view"})
    assert r.status_code == 202
    assert r.json() == {"status": "accepted", "user_id": "7", "item_id": "5", "model_version": 2}


async def test_integer_item_ids_are_accepted(client: httpx.AsyncClient) -> None:
    r = await client.post("/users/7/events", json={"item_id": 5, "type": "rating", "value": 4.5})
    assert r.status_code == 202
    assert r.json()["item_id"] == "5"


async def test_next_recommendation_reflects_the_event(client: httpx.AsyncClient) -> None:
    """Read-your-writes: a cached cold-start list is dropped, the event counts at once."""
    before = (await client.get("/recommend/fresh-user", params={"k": 10})).json()
    cached = (await client.get("/recommend/fresh-user", params={"k": 10})).json()
    assert (before["strategy"], cached["cache"]) == ("popular", "l1")
    watched = _items(before)[0]
    r = await client.post("/users/fresh-user/events", json={"item_id": watched, "type": "view"})
    assert r.status_code == 202
    after = (await client.get("/recommend/fresh-user", params={"k": 10})).json()
    assert after["cache"] == "miss"
    assert after["strategy"] == "blend"
    assert watched not in _items(after)


async def test_events_extend_a_known_users_history(client: httpx.AsyncClient) -> None:
    bundle = served_bundle(client)
    user_id = next(u for u in bundle.users.rows if len(bundle.users.get(u)) >= 10)
    before = _items((await client.get(f"/recommend/{user_id}", params={"k": 5})).json())
    for item_id in before[:3]:
        assert (
            await client.post(
                f"/users/{user_id}/events", json={"item_id": item_id, "type": "click"}
            )
        ).status_code == 202
    after = _items((await client.get(f"/recommend/{user_id}", params={"k": 5})).json())
    assert not set(before[:3]) & set(after)


async def test_unknown_item_is_404_and_changes_nothing(client: httpx.AsyncClient) -> None:
    r = await client.post("/users/new-7/events", json={"item_id": "no-such-film", "type": "view"})
    assert r.status_code == 404
    assert "no-such-film" in r.json()["detail"]
    assert (await client.get("/recommend/new-7")).json()["strategy"] == "popular"


@pytest.mark.parametrize(
    "body",
    [
        {"type": "view"},
        {"item_id": "5"},
        {"item_id": "5", "type": "purchase"},
        {"item_id": "", "type": "view"},
        {"item_id": "5", "type": "view", "timestamp": -1},
        {"item_id": "5", "type": "view", "value": "high"},
        {"item_id": "5", "type": "view", "extra": 1},
        {"item_id": None, "type": "view"},
        {"item_id": 1.5, "type": "view"},
        [],
    ],
)
async def test_malformed_event_is_422(client: httpx.AsyncClient, body: object) -> None:
    r = await client.post("/users/7/events", json=body)
    assert r.status_code == 422
    assert "detail" in r.json()


async def test_invalid_json_is_422(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/users/7/events", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 422


async def test_future_timestamp_is_422(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/users/7/events", json={"item_id": "5", "type": "view", "timestamp": time.time() + 86400}
    )
    assert r.status_code == 422
    assert "future" in r.json()["detail"]


async def test_oversized_body_is_413(client: httpx.AsyncClient) -> None:
    body = b'{"item_id": "5", "type": "view", "pad": "' + b"x" * 20_000 + b'"}'
    r = await client.post(
        "/users/7/events", content=body, headers={"content-type": "application/json"}
    )
    assert r.status_code == 413
    assert "exceeds" in r.json()["detail"]


async def test_streamed_oversized_body_is_413(client: httpx.AsyncClient) -> None:
    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(40):
            yield b"x" * 1024

    r = await client.post(
        "/users/7/events", content=chunks(), headers={"content-type": "application/json"}
    )
    assert r.status_code == 413


async def test_event_rate_is_limited_per_client(published_store: Path) -> None:
    settings = make_settings(published_store, events={"rate_per_s": 0.001, "burst": 3})
    async with running_app(settings) as client:
        codes = [
            (
                await client.post("/users/9/events", json={"item_id": "5", "type": "view"})
            ).status_code
            for _ in range(5)
        ]
        assert codes == [202, 202, 202, 429, 429]
        spoofed = await client.post(
            "/users/9/events",
            json={"item_id": "5", "type": "view"},
            headers={"X-Forwarded-For": "203.0.113.9"},
        )
        assert spoofed.status_code == 429
        metrics = (await client.get("/metrics")).text
        assert 'cinesync_events_total{result="accepted"} 3.0' in metrics
        assert 'cinesync_events_total{result="rejected"} 3.0' in metrics


async def test_a_flood_for_one_user_keeps_history_bounded(published_store: Path) -> None:
    settings = make_settings(
        published_store, events={"history_cap": 5, "rate_per_s": 1e6, "burst": 1000}
    )
    async with running_app(settings) as client:
        bundle = served_bundle(client)
        items = bundle.catalog.item_ids[1:41]
        for item_id in items:
            await client.post("/users/flood/events", json={"item_id": item_id, "type": "view"})
        transport = client._transport
        assert isinstance(transport, httpx.ASGITransport)
        history = transport.app.state.cinesync.history  # type: ignore[attr-defined]
        assert await history.recent("flood", 1000) == items[-5:]
        assert await history.recent("someone-else", 1000) == []
