"""GET /recommend/{user_id}: shape, strategies, filters, bounds and cache tiers (real bundle)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from service_fixtures import make_settings, running_app, served_bundle

pytestmark = pytest.mark.asyncio

ITEM_KEYS = {"item_id", "title", "genres", "score"}


def user_with_history(client: httpx.AsyncClient, at_least: int) -> tuple[str, list[str]]:
    bundle = served_bundle(client)
    for user_id in bundle.users.rows:
        history = bundle.users.get(user_id)
        if len(history) >= at_least:
            return user_id, [bundle.catalog.item_ids[i] for i in history.tolist()]
    raise AssertionError(f"no user with {at_least} interactions in the tiny bundle")


async def test_recommend_returns_the_documented_shape(client: httpx.AsyncClient) -> None:
    user_id, _ = user_with_history(client, 10)
    r = await client.get(f"/recommend/{user_id}", params={"k": 7})
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"user_id", "model_version", "strategy", "cache", "items"}
    assert body["user_id"] == user_id
    assert body["model_version"] == 2
    assert body["strategy"] == "sequential"
    assert body["cache"] == "miss"
    assert len(body["items"]) == 7
    assert all(set(item) == ITEM_KEYS and item["title"] for item in body["items"])
    scores = [item["score"] for item in body["items"]]
    assert scores == sorted(scores, reverse=True)


async def test_second_identical_request_is_an_l1_hit_with_the_same_items(
    client: httpx.AsyncClient,
) -> None:
    first = (await client.get("/recommend/42", params={"k": 5})).json()
    second = (await client.get("/recommend/42", params={"k": 5})).json()
    assert (first["cache"], second["cache"]) == ("miss", "l1")
    assert second["items"] == first["items"]
    other_k = (await client.get("/recommend/42", params={"k": 6})).json()
    assert other_k["cache"] == "miss"


async def test_seen_items_are_never_returned_when_excluded(client: httpx.AsyncClient) -> None:
    user_id, history = user_with_history(client, 20)
    n_items = served_bundle(client).n_items
    k = min(100, n_items - len(set(history)))
    body = (await client.get(f"/recommend/{user_id}", params={"k": k})).json()
    returned = [item["item_id"] for item in body["items"]]
    assert len(returned) == k
    assert not set(returned) & set(history)
    assert len(set(returned)) == len(returned)


async def test_live_events_older_than_the_encoder_window_are_still_excluded(
    client: httpx.AsyncClient,
) -> None:
    bundle = served_bundle(client)
    max_len = bundle.encoder.max_len
    posted = bundle.catalog.item_ids[1 : max_len + 11]  # row 0 is padding; more than it reads
    for item_id in posted:
        event = {"item_id": item_id, "type": "view"}
        r = await client.post("/users/long-session/events", json=event)
        assert r.status_code == 202, r.text
    k = min(100, bundle.n_items - len(posted))
    body = (await client.get("/recommend/long-session", params={"k": k})).json()
    returned = {item["item_id"] for item in body["items"]}
    assert len(returned) == k
    assert not returned & set(posted)


async def test_seen_items_may_return_when_exclude_seen_is_false(client: httpx.AsyncClient) -> None:
    user_id, history = user_with_history(client, 20)
    body = (
        await client.get(f"/recommend/{user_id}", params={"k": 100, "exclude_seen": "false"})
    ).json()
    assert set(item["item_id"] for item in body["items"]) & set(history)


async def test_unknown_user_is_a_cold_start_user_served_popular_items(
    client: httpx.AsyncClient,
) -> None:
    r = await client.get("/recommend/never-seen-before", params={"k": 5})
    assert r.status_code == 200
    body = r.json()
    assert body["strategy"] == "popular"
    bundle = served_bundle(client)
    expected = [bundle.catalog.item_ids[i] for i in bundle.catalog.popular_order[:5].tolist()]
    assert [item["item_id"] for item in body["items"]] == expected


async def test_strategy_follows_history_length(client: httpx.AsyncClient) -> None:
    bundle = served_bundle(client)
    lengths = {u: len(bundle.users.get(u)) for u in bundle.users.rows}
    short = next(u for u, n in lengths.items() if 0 < n < 10)
    long = next(u for u, n in lengths.items() if n >= 10)
    assert (await client.get(f"/recommend/{short}")).json()["strategy"] == "blend"
    assert (await client.get(f"/recommend/{long}")).json()["strategy"] == "sequential"
    assert (await client.get("/recommend/nobody-at-all")).json()["strategy"] == "popular"


async def test_genre_filter_returns_only_unseen_items_of_those_genres(
    client: httpx.AsyncClient,
) -> None:
    user_id, history = user_with_history(client, 10)
    catalog = served_bundle(client).catalog
    for genres, wanted in (("Drama", {"Drama"}), ("comedy,War", {"Comedy", "War"})):
        allowed = {
            catalog.item_ids[i]
            for i in range(1, catalog.n_items + 1)
            if set(catalog.genres[i]) & wanted
        } - set(history)
        body = (
            await client.get(f"/recommend/{user_id}", params={"k": 100, "genres": genres})
        ).json()
        returned = {item["item_id"] for item in body["items"]}
        assert returned == allowed  # all of them: k exceeds what the filter allows
        small = (
            await client.get(f"/recommend/{user_id}", params={"k": 5, "genres": genres})
        ).json()
        assert [i["item_id"] for i in small["items"]] == [i["item_id"] for i in body["items"][:5]]


async def test_popular_within_genres_for_cold_users(client: httpx.AsyncClient) -> None:
    body = (await client.get("/recommend/cold", params={"k": 5, "genres": "Western"})).json()
    assert body["strategy"] == "popular"
    assert all("Western" in item["genres"] for item in body["items"])
    pops = [item["score"] for item in body["items"]]
    assert pops == sorted(pops, reverse=True)


async def test_unknown_genre_is_a_422_naming_it(client: httpx.AsyncClient) -> None:
    r = await client.get("/recommend/1", params={"genres": "Drama,Telenovela"})
    assert r.status_code == 422
    assert "Telenovela" in r.json()["detail"]


@pytest.mark.parametrize("k", ["0", "-1", "1.5", "ten", "101", str(10**9)])
async def test_k_out_of_range_or_not_an_integer_is_422(client: httpx.AsyncClient, k: str) -> None:
    r = await client.get("/recommend/1", params={"k": k})
    assert r.status_code == 422
    assert "detail" in r.json()


async def test_k_at_the_configured_maximum_is_accepted(client: httpx.AsyncClient) -> None:
    r = await client.get("/recommend/1", params={"k": 100})
    assert r.status_code == 200
    assert len(r.json()["items"]) == 100


@pytest.mark.parametrize(
    ("user_id", "status"),
    [("a" * 129, 422), ("a" * 10_000, 422), ("%00", 422), ("%20%20", 422), ("tab%09id", 422),
     ("%2F", 404), ("..%2F..", 404), ("Zoë-🎬", 200), ("a" * 128, 200), ("..", 404), ("a..b", 200)],
)  # fmt: skip
async def test_user_id_edge_cases_are_4xx_or_a_cold_start_answer(
    client: httpx.AsyncClient, user_id: str, status: int
) -> None:
    r = await client.get(f"/recommend/{user_id}")
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    if status == 200:
        assert r.json()["strategy"] == "popular"


async def test_every_response_names_its_own_user(client: httpx.AsyncClient) -> None:
    users = [f"u{i}" for i in range(20)] + ["1", "2", "3"]
    for user_id in users:
        assert (await client.get(f"/recommend/{user_id}")).json()["user_id"] == user_id


async def test_no_bundle_means_503_with_a_reason(tmp_path: Path) -> None:
    async with running_app(make_settings(tmp_path / "empty-store"), ready=False) as client:
        await _until_load_attempted(client)
        r = await client.get("/recommend/1")
        assert r.status_code == 503
        assert "no model bundle is loaded" in r.json()["detail"]
        assert (await client.get("/readyz")).status_code == 503
        assert (await client.get("/healthz")).status_code == 200


async def _until_load_attempted(client: httpx.AsyncClient) -> None:
    import asyncio

    transport = client._transport
    assert isinstance(transport, httpx.ASGITransport)
    registry = transport.app.state.cinesync.registry  # type: ignore[attr-defined]
    for _ in range(500):
        if registry.last_error is not None:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the start-up load never finished")
