"""The ranking and the request path against exact oracles on a real bundle: strategies by
history length, exclude-seen, genre filters with refill, single-flight, read-your-writes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
from service_fixtures import MODEL, make_settings

import service.ranking
import service.recommender
from model_store.store import ModelStore
from service.bundle import Bundle, load_bundle
from service.cache import NullCache, TieredCache
from service.cache_l1 import L1Cache
from service.history import MemoryHistory
from service.metrics import ServiceMetrics
from service.ranking import Query, choose_strategy, rank
from service.recommender import Recommender
from service.registry import ModelRegistry

N_FULL = 10


@pytest.fixture(scope="module")
def bundle(published_store: Path) -> Bundle:
    return load_bundle(ModelStore(published_store), MODEL, 1, make_settings(published_store))


@pytest.fixture(scope="module")
def hnsw_bundle(published_store: Path) -> Bundle:
    settings = make_settings(published_store, index={"kind": "hnsw", "ef_search": 8, "hnsw_m": 4})
    return load_bundle(ModelStore(published_store), MODEL, 1, settings)


def long_history(bundle: Bundle, at_least: int = 20) -> np.ndarray:
    return next(h for u in bundle.users.rows if len(h := bundle.users.get(u)) >= at_least)


def oracle(scores: np.ndarray, exclude: np.ndarray, k: int, allowed: np.ndarray | None = None):  # type: ignore[no-untyped-def]
    scores = scores.astype(np.float64).copy()
    scores[0] = -np.inf
    scores[exclude] = -np.inf
    if allowed is not None:
        scores[~allowed] = -np.inf
    order = sorted(np.flatnonzero(np.isfinite(scores)), key=lambda i: (-scores[i], i))
    return np.asarray(order[:k])


@pytest.mark.parametrize(
    ("n", "n_content", "expected"),
    [(0, 0, "popular"), (1, 0, "blend"), (9, 0, "blend"), (10, 0, "sequential"),
     (50, 0, "sequential"), (1, 2, "content"), (2, 2, "content"), (3, 2, "blend")],
)  # fmt: skip
def test_strategy_by_history_length(n: int, n_content: int, expected: str) -> None:
    assert choose_strategy(n, N_FULL, n_content) == expected


def test_sequential_top_k_equals_the_exact_oracle_without_seen_items(bundle: Bundle) -> None:
    history = long_history(bundle)
    ranked = rank(bundle, history, Query(10, True, ()), N_FULL, 0)
    assert ranked.strategy == "sequential"
    query = bundle.encoder.encode([history]).query[0]
    expected = oracle(bundle.item_embeddings @ query, np.unique(history), 10)
    np.testing.assert_array_equal(ranked.ids, expected)
    assert not set(ranked.ids.tolist()) & set(history.tolist())


def test_blend_mixes_content_and_collaborative_scores_by_alpha(bundle: Bundle) -> None:
    history = long_history(bundle)[:4]
    ranked = rank(bundle, history, Query(10, True, ()), N_FULL, 0)
    assert ranked.strategy == "blend"
    alpha = 4 / N_FULL
    query = bundle.encoder.encode([history]).query[0]
    collab = bundle.item_embeddings @ query / (np.linalg.norm(query) * bundle.max_item_norm)
    mean = bundle.content_embeddings[history].mean(axis=0)
    content = bundle.content_embeddings @ (mean / np.linalg.norm(mean))
    blended = alpha * collab + (1 - alpha) * content
    expected = oracle(blended, np.unique(history), 10)
    np.testing.assert_array_equal(ranked.ids, expected)
    np.testing.assert_allclose(ranked.scores, blended[expected], rtol=1e-4, atol=1e-5)


def blend_oracle(bundle: Bundle, history: np.ndarray, n_full: int, k: int) -> np.ndarray:
    alpha = len(history) / n_full
    query = bundle.encoder.encode([history]).query[0]
    collab = bundle.item_embeddings @ query / (np.linalg.norm(query) * bundle.max_item_norm)
    mean = bundle.content_embeddings[history].mean(axis=0)
    content = bundle.content_embeddings @ (mean / np.linalg.norm(mean))
    return oracle(alpha * collab + (1 - alpha) * content, np.unique(history), k)


@pytest.mark.parametrize("n_full", [4, 8, 40])
def test_a_blend_from_index_candidates_equals_the_exact_blend(
    bundle: Bundle, n_full: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On catalogues too large to score every item, a blend ranks the union of both indexes'
    top items, fetched until no item outside it can beat its k-th (the threshold of the two
    lists' last scores): the exact blend, not an approximation of it."""
    monkeypatch.setattr(service.ranking, "EXACT_BLEND_MAX_ITEMS", 0)
    users = [u for u in bundle.users.rows if len(bundle.users.get(u)) >= 3][:30]
    for user in users:
        history = bundle.users.get(user)[: min(3, n_full - 1)]
        ranked = rank(bundle, history, Query(10, True, ()), n_full, 0)
        assert ranked.strategy == "blend"
        np.testing.assert_array_equal(ranked.ids, blend_oracle(bundle, history, n_full, 10))


def test_content_only_for_the_shortest_histories_when_configured(bundle: Bundle) -> None:
    history = long_history(bundle)[:1]
    ranked = rank(bundle, history, Query(5, True, ()), N_FULL, 1)
    assert ranked.strategy == "content"
    mean = bundle.content_embeddings[history].mean(axis=0)
    content = bundle.content_embeddings @ (mean / np.linalg.norm(mean))
    np.testing.assert_array_equal(ranked.ids, oracle(content, history, 5))


def test_popular_for_an_empty_history_within_genres(bundle: Bundle) -> None:
    genre = next(iter(bundle.catalog.genre_masks))
    ranked = rank(bundle, np.zeros(0, dtype=np.int64), Query(5, True, (genre,)), N_FULL, 0)
    assert ranked.strategy == "popular"
    mask = bundle.catalog.genre_masks[genre]
    expected = oracle(bundle.catalog.popularity, np.zeros(0, dtype=np.int64), 5, mask)
    np.testing.assert_array_equal(ranked.ids, expected)


def test_exclude_seen_false_may_return_history_items(bundle: Bundle) -> None:
    history = long_history(bundle)
    ranked = rank(bundle, history, Query(bundle.n_items, False, ()), N_FULL, 0)
    assert len(ranked.ids) == bundle.n_items
    assert set(history.tolist()) <= set(ranked.ids.tolist())


def test_genre_filter_refills_to_every_allowed_item(bundle: Bundle) -> None:
    history = long_history(bundle)
    genre = min(bundle.catalog.genre_masks, key=lambda g: bundle.catalog.genre_masks[g].sum())
    allowed = bundle.catalog.genre_masks[genre].copy()
    allowed[history] = False
    ranked = rank(bundle, history, Query(100, True, (genre,)), N_FULL, 0)
    assert set(ranked.ids.tolist()) == set(np.flatnonzero(allowed).tolist())


def test_a_short_approximate_search_is_refilled_exactly(hnsw_bundle: Bundle) -> None:
    history = long_history(hnsw_bundle)
    k = hnsw_bundle.n_items - len(np.unique(history))
    ranked = rank(hnsw_bundle, history, Query(k, True, ()), N_FULL, 0)
    assert len(ranked.ids) == k
    assert len(set(ranked.ids.tolist())) == k
    assert not set(ranked.ids.tolist()) & set(history.tolist())


def make_recommender(bundle: Bundle) -> Recommender:
    registry = ModelRegistry(lambda version: bundle)
    registry.current = bundle
    metrics = ServiceMetrics()
    cache = TieredCache(L1Cache(1000, 60.0, metrics), NullCache())
    return Recommender(
        registry,
        cache,
        MemoryHistory(),
        metrics,
        metrics.online_exposure(100, bundle.n_items),
        n_full=N_FULL,
        n_content=0,
    )


@pytest.fixture
def rank_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per call of the recommender's ranking (a computation)."""
    calls: list[int] = []
    real_rank = service.recommender.rank

    def counting_rank(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        return real_rank(*args, **kwargs)

    monkeypatch.setattr(service.recommender, "rank", counting_rank)
    return calls


@pytest.mark.asyncio
async def test_a_stampede_for_one_uncached_user_computes_once(
    bundle: Bundle, rank_calls: list[int]
) -> None:
    rec = make_recommender(bundle)
    served = await asyncio.gather(*(rec.recommend("stampede", 10, True, None) for _ in range(200)))
    assert len(rank_calls) == 1
    assert len({s.body for s in served}) == 1
    assert {s.tier for s in served} == {"miss"}


@pytest.mark.asyncio
async def test_other_users_invalidations_do_not_split_a_stampede(
    bundle: Bundle, rank_calls: list[int]
) -> None:
    rec = make_recommender(bundle)
    ask = [rec.recommend("stampede", 10, True, None) for _ in range(100)]
    # events of other users (here or over pub/sub) land while the computation is in flight
    others = [rec.cache.invalidate_user(MODEL, f"someone-else-{i}") for i in range(3)]
    more = [rec.recommend("stampede", 10, True, None) for _ in range(100)]
    await asyncio.gather(*ask, *others, *more)
    assert len(rank_calls) == 1


@pytest.mark.asyncio
async def test_an_event_during_a_computation_is_not_lost(bundle: Bundle) -> None:
    rec = make_recommender(bundle)
    first = asyncio.create_task(rec.recommend("racer", 10, True, None))
    await asyncio.sleep(0)
    item = bundle.catalog.item_ids[int(bundle.catalog.popular_order[0])]
    await rec.record_event("racer", item, 0.0)
    await first
    after = await rec.recommend("racer", 10, True, None)
    assert after.strategy == "blend"
    assert item not in [i["item_id"] for i in json.loads(after.body)["items"]]


def test_the_served_ranking_reproduces_the_offline_metrics_of_its_bundle(bundle: Bundle) -> None:
    """The bundle's manifest holds NDCG@10 and HR@10 measured offline with the torch model; the
    service's path (ONNX encoder, FAISS, seen-item exclusion, id mapping) gives the same lists,
    so the same figures, for every validation and test user of the split it was trained on."""
    from training.data import leave_one_out, load_dataset
    from training.tiny_bundle import INTERACTIONS_PER_USER

    users, items = 300, 200  # make_tiny_bundle's defaults (the shared test bundle)
    spec = (
        f"synthetic:users={users},items={items},interactions={users * INTERACTIONS_PER_USER},seed=0"
    )
    dataset = load_dataset(spec)
    split = leave_one_out(dataset)
    external = dataset.item_meta["item_id"]
    to_bundle = np.asarray(
        [0] + [bundle.catalog.index_of[external.iloc[i]] for i in range(1, items + 1)]
    )
    metrics = bundle.manifest.metrics
    for stage, rows, offline in (
        ("valid", split.valid, metrics.valid),
        ("test", split.test, metrics.test),
    ):
        ndcg, hits = [], []
        for history, targets in zip(rows.histories, rows.targets, strict=True):
            served = rank(bundle, to_bundle[history], Query(10, True, ()), 1, 0)  # sequential
            assert served.strategy == "sequential"
            found = served.ids.tolist()
            target = int(to_bundle[targets[0]])
            hits.append(target in found)
            ndcg.append(1 / np.log2(found.index(target) + 2) if target in found else 0.0)
        assert np.mean(ndcg) == pytest.approx(offline["ndcg@10"], abs=1e-9), stage
        assert np.mean(hits) == pytest.approx(offline["hr@10"], abs=1e-9), stage
