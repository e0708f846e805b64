"""Feature-only queries: a user with no history and `features=name:value,...` is served the
model's feature query (strategy `features`) from a real two-tower bundle trained with user
features; bad features are 422s; models without the table ignore them."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import pytest_asyncio
from service_fixtures import AUTH, MODEL, make_settings, running_app, served_bundle

from model_store.store import ModelStore

pytestmark = pytest.mark.asyncio


@pytest.fixture(scope="session")
def two_tower_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from training.tiny_bundle import make_tiny_two_tower_bundle

    return make_tiny_two_tower_bundle(tmp_path_factory.mktemp("tt") / "bundle", seed=0)


@pytest.fixture(scope="session")
def two_tower_store(two_tower_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    bundle = two_tower_bundle
    root = tmp_path_factory.mktemp("tt-store")
    ModelStore(root).publish(MODEL, bundle)
    return root


@pytest_asyncio.fixture
async def tt_client(two_tower_store: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(make_settings(two_tower_store)) as c:
        yield c


def exact_top(client: httpx.AsyncClient, codes: tuple[int, ...], k: int) -> list[str]:
    """The oracle: every item scored against the table row, best first (ties: lower id)."""
    bundle = served_bundle(client)
    scores = bundle.item_embeddings[1:] @ bundle.features.query(codes)
    order = np.lexsort((np.arange(len(scores)), -scores))[:k] + 1
    return [bundle.catalog.item_ids[i] for i in order.tolist()]


async def test_a_new_user_with_features_gets_the_feature_query(
    tt_client: httpx.AsyncClient,
) -> None:
    r = await tt_client.get("/recommend/newcomer", params={"k": 8, "features": "taste:Horror"})
    assert r.status_code == 200
    body = r.json()
    assert (body["strategy"], body["cache"]) == ("features", "miss")
    bundle = served_bundle(tt_client)
    codes = bundle.features.codes({"taste": "Horror"})
    assert codes[0] == 0
    assert codes[1] > 0
    assert [item["item_id"] for item in body["items"]] == exact_top(tt_client, codes, 8)
    again = (
        await tt_client.get("/recommend/newcomer", params={"k": 8, "features": "taste:Horror"})
    ).json()
    assert again["cache"] == "l1"
    assert again["items"] == body["items"]


async def test_different_features_give_different_lists_and_none_gives_popular(
    tt_client: httpx.AsyncClient,
) -> None:
    lists = {}
    for taste in ("Horror", "Children", "Western"):
        body = (
            await tt_client.get("/recommend/x", params={"features": f"age:30,taste:{taste}"})
        ).json()
        assert body["strategy"] == "features"
        lists[taste] = [item["item_id"] for item in body["items"]]
    assert len({tuple(v) for v in lists.values()}) == 3
    plain = (await tt_client.get("/recommend/x")).json()
    assert plain["strategy"] == "popular"


async def test_the_feature_query_keeps_genre_filters(tt_client: httpx.AsyncClient) -> None:
    params = {"k": 5, "features": "taste:Horror", "genres": "Comedy"}
    body = (await tt_client.get("/recommend/y", params=params)).json()
    assert body["strategy"] == "features"
    assert len(body["items"]) == 5
    assert all("Comedy" in item["genres"] for item in body["items"])


async def test_a_user_with_history_ignores_features(tt_client: httpx.AsyncClient) -> None:
    bundle = served_bundle(tt_client)
    user_id = next(u for u in bundle.users.rows if len(bundle.users.get(u)) >= 10)
    body = (await tt_client.get(f"/recommend/{user_id}", params={"features": "age:20"})).json()
    assert body["strategy"] == "sequential"
    # one answer, one cache entry: other features (or none) are hits on it
    for features in ("age:60", "taste:Horror", None):
        params = {} if features is None else {"features": features}
        again = (await tt_client.get(f"/recommend/{user_id}", params=params)).json()
        assert (again["cache"], again["items"]) == ("l1", body["items"])


@pytest.mark.parametrize(
    ("features", "message"),
    [
        ("height:180", "unknown feature 'height'"),
        ("taste:Cooking", "unknown value 'Cooking' for feature 'taste'"),
        ("age:old", "feature 'age' takes a number"),
        ("age:nan", "feature 'age' takes a number"),
        ("age", "String should match pattern"),
        (" ", "String should match pattern"),
        ("age:20,age:30", "given twice"),
    ],
)
async def test_bad_features_are_422_with_the_reason(
    tt_client: httpx.AsyncClient, features: str, message: str
) -> None:
    for path in ("/recommend/z", "/explain/z/1"):
        r = await tt_client.get(path, params={"features": features})
        assert r.status_code == 422, (path, r.text)
        assert message in str(r.json()["detail"])


async def test_the_parser_accepts_exactly_the_documented_pattern() -> None:
    from service.errors import InvalidRequestError
    from service.user_features import FEATURES_PATTERN, parse_features

    cases = [
        "",
        "a:1",
        "a:1,b:x y",
        "a:1:2",
        " a: 1",
        "a",
        ":1",
        "a:",
        "a:1,",
        ",a:1",
        " ",
        "a:1,,b:2",
    ]
    for text in cases:
        matches = re.fullmatch(FEATURES_PATTERN, text) is not None
        try:
            parse_features(text)
            parsed = True
        except InvalidRequestError:
            parsed = False
        assert parsed == matches, text
    assert parse_features(" a: 1,b:x y") == {" a": " 1", "b": "x y"}  # verbatim


async def test_oversized_features_are_422(tt_client: httpx.AsyncClient) -> None:
    r = await tt_client.get("/recommend/z", params={"features": "taste:" + "x" * 600})
    assert r.status_code == 422


async def test_explain_names_the_features_strategy_and_its_score(
    tt_client: httpx.AsyncClient,
) -> None:
    top = (await tt_client.get("/recommend/w", params={"k": 1, "features": "taste:War"})).json()
    item = top["items"][0]
    r = await tt_client.get(f"/explain/w/{item['item_id']}", params={"features": "taste:War"})
    assert r.status_code == 200
    body = r.json()
    assert body["strategy"] == "features"
    assert body["because"] == []
    assert body["shared_genres"] == []
    assert body["score"] == pytest.approx(item["score"], abs=1e-5)


async def test_admin_models_lists_the_features_the_model_reads(
    tt_client: httpx.AsyncClient,
) -> None:
    served = (await tt_client.get("/admin/models", headers=AUTH)).json()["served"]
    features = {f["name"]: f for f in served["user_features"]}
    assert set(features) == {"age", "taste"}
    assert features["age"]["kind"] == "bucket"
    assert features["age"]["edges"]
    assert "Horror" in features["taste"]["values"]


async def test_a_model_without_feature_queries_ignores_well_formed_features(
    client: httpx.AsyncClient,
) -> None:
    body = (await client.get("/recommend/newbie", params={"features": "taste:Horror"})).json()
    assert body["strategy"] == "popular"
    r = await client.get("/recommend/newbie", params={"features": "taste"})
    assert r.status_code == 422  # malformed is malformed whatever the model


async def test_a_bundle_with_half_the_feature_files_is_refused(
    two_tower_bundle: Path, tmp_path: Path
) -> None:
    from service.bundle import load_bundle
    from service.errors import BundleLoadError

    store = ModelStore(tmp_path / "store")
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    for f in two_tower_bundle.iterdir():
        if f.name != "feature_queries.npy":
            (bundle / f.name).write_bytes(f.read_bytes())
    store.publish(MODEL, bundle)
    with pytest.raises(BundleLoadError, match=r"user_features\.json without its companion"):
        load_bundle(store, MODEL, None, make_settings(tmp_path / "store"))


async def test_feature_queries_can_be_switched_off(two_tower_store: Path) -> None:
    async with running_app(make_settings(two_tower_store, feature_queries=False)) as client:
        params = {"features": "taste:Horror"}
        body = (await client.get("/recommend/newcomer", params=params)).json()
        assert body["strategy"] == "popular"
        bad = await client.get("/recommend/newcomer", params={"features": "taste:Cooking"})
        assert bad.status_code == 422  # still validated against the model


async def test_both_routes_answer_feature_requests_alike(two_tower_store: Path) -> None:
    urls = ["/recommend/n?features=taste:Horror", "/recommend/n?k=3&features=age:61,taste:War",
            "/recommend/n?features=taste:Cooking", "/recommend/n?features=height:2"]  # fmt: skip
    answers = {}
    for fast in (True, False):
        settings = make_settings(two_tower_store, fast_path=fast)
        async with running_app(settings) as client:
            answers[fast] = [
                (r.status_code, r.content) for u in urls for r in [await client.get(u)]
            ]
    assert answers[True] == answers[False]
    assert [status for status, _ in answers[True]] == [200, 200, 422, 422]
