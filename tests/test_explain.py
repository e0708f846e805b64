"""Explanations agree with the ranking and name real contributors, for every strategy."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
from service_fixtures import MODEL, make_settings, served_bundle

from model_store.store import ModelStore
from service.bundle import Bundle, load_bundle
from service.explain import BECAUSE_MAX, explain
from service.ranking import Query, rank

N_FULL = 10


@pytest.fixture(scope="module")
def bundle(published_store: Path) -> Bundle:
    return load_bundle(ModelStore(published_store), MODEL, 2, make_settings(published_store))


def history_of(bundle: Bundle, length: int) -> np.ndarray:
    return next(h for u in bundle.users.rows if len(h := bundle.users.get(u)) >= length)[:length]


@pytest.mark.parametrize(
    ("length", "n_content", "strategy"),
    [(0, 0, "popular"), (1, 1, "content"), (4, 0, "blend"), (30, 0, "sequential")],
)
def test_explained_score_is_the_ranking_score(
    bundle: Bundle, length: int, n_content: int, strategy: str
) -> None:
    history = history_of(bundle, length)
    ranked = rank(bundle, history, Query(5, True, ()), N_FULL, n_content)
    assert ranked.strategy == strategy
    for item, score in zip(ranked.ids.tolist(), ranked.scores.tolist(), strict=True):
        ex = explain(bundle, history, item, N_FULL, n_content)
        assert ex.strategy == strategy
        assert ex.score == pytest.approx(score, rel=1e-4, abs=1e-5)


def sequential_oracle(bundle: Bundle, history: np.ndarray, item: int) -> list[tuple[int, float]]:
    """Attention of the final position times the embedding cosine with the item (>= 0), summed
    per history item, strongest first (ties: lower id), positive only, the item itself out."""
    attention = bundle.encoder.encode([history]).attention
    assert attention is not None
    emb = bundle.item_embeddings.astype(np.float64)
    per_item: dict[int, float] = {}
    for hist_item, weight in zip(history.tolist(), attention[0].tolist(), strict=True):
        cos = (
            emb[hist_item]
            @ emb[item]
            / (np.linalg.norm(emb[hist_item]) * np.linalg.norm(emb[item]))
        )
        per_item[hist_item] = per_item.get(hist_item, 0.0) + weight * max(float(cos), 0.0)
    ranked = sorted(per_item.items(), key=lambda kv: (-kv[1], kv[0]))
    return [(i, w) for i, w in ranked if w > 0 and i != item][:BECAUSE_MAX]


def test_sequential_because_is_attention_times_similarity_to_the_item(bundle: Bundle) -> None:
    history = history_of(bundle, 30)
    items = rank(bundle, history, Query(10, True, ()), N_FULL, 0).ids.tolist()
    lists = []
    for item in items:
        ex = explain(bundle, history, item, N_FULL, 0)
        best = sequential_oracle(bundle, history, item)
        assert [i for i, _ in ex.because] == [i for i, _ in best]
        assert [w for _, w in ex.because] == pytest.approx([w for _, w in best], abs=1e-5)
        assert sum(w for _, w in ex.because) <= 1.0 + 1e-5
        lists.append(tuple(i for i, _ in ex.because))
    assert len(set(lists)) > 1  # the reasons depend on what is explained


def test_blend_because_ranks_history_items_by_similarity(bundle: Bundle) -> None:
    history = history_of(bundle, 4)
    item = int(rank(bundle, history, Query(1, True, ()), N_FULL, 0).ids[0])
    ex = explain(bundle, history, item, N_FULL, 0)
    assert ex.because
    assert {i for i, _ in ex.because} <= set(history.tolist())
    weights = [w for _, w in ex.because]
    assert weights == sorted(weights, reverse=True)
    assert all(0 < w <= 1 + 1e-6 for w in weights)
    history_genres = {g for i in history.tolist() for g in bundle.catalog.genres[i]}
    assert set(ex.shared_genres) == set(bundle.catalog.genres[item]) & history_genres


def test_popular_has_no_contributors_and_says_why(bundle: Bundle) -> None:
    item = int(bundle.catalog.popular_order[0])
    ex = explain(bundle, np.zeros(0, dtype=np.int64), item, N_FULL, 0)
    assert (ex.strategy, ex.because, ex.shared_genres, ex.score) == ("popular", [], [], 1.0)
    assert "no history" in ex.reason


@pytest.mark.asyncio
async def test_explain_endpoint_shape_and_errors(client: httpx.AsyncClient) -> None:
    bundle = served_bundle(client)
    user_id = next(u for u in bundle.users.rows if len(bundle.users.get(u)) >= 10)
    top = (await client.get(f"/recommend/{user_id}", params={"k": 1})).json()["items"][0]
    r = await client.get(f"/explain/{user_id}/{top['item_id']}")
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {
        "user_id",
        "model_version",
        "item",
        "strategy",
        "because",
        "shared_genres",
        "score",
        "reason",
    }
    assert body["item"] == {k: top[k] for k in ("item_id", "title", "genres")}
    assert body["strategy"] == "sequential"
    assert body["score"] == pytest.approx(top["score"], abs=1e-5)
    assert all(set(b) == {"item_id", "title", "weight"} for b in body["because"])
    cold = (await client.get(f"/explain/nobody/{top['item_id']}")).json()
    assert (cold["strategy"], cold["because"]) == ("popular", [])
    missing = await client.get(f"/explain/{user_id}/no-such-item")
    assert missing.status_code == 404
    assert "no-such-item" in missing.json()["detail"]
    assert (await client.get("/explain/%00/1")).status_code == 422


def test_an_item_already_in_the_history_is_never_its_own_reason(bundle: Bundle) -> None:
    history = history_of(bundle, 30)
    attention = bundle.encoder.encode([history]).attention
    assert attention is not None
    item = int(history[int(np.argmax(attention[0]))])  # the strongest contributor of all
    ex = explain(bundle, history, item, N_FULL, 0)
    assert ex.because
    assert item not in {i for i, _ in ex.because}
