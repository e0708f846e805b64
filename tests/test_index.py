"""FAISS indexes against an exact numpy oracle on seeded data."""

from __future__ import annotations

import numpy as np
import pytest

from service.index import GPU_MAX_K, build_index, exact_topk, gpu_available, recall_at_10
from service.settings import IndexSettings


def embeddings(n_items: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((n_items + 1, dim)).astype(np.float32)
    emb[0] = 100.0  # a padding row that would win every search if it were indexed
    return emb


def queries(n: int, dim: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def numpy_top(emb: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    scores = q @ emb[1:].T
    return np.argsort(-scores, axis=1, kind="stable")[:, :k] + 1


def test_flat_index_is_exact_and_never_returns_padding() -> None:
    emb, q = embeddings(500, 16), queries(20, 16)
    index = build_index(emb, "flat", IndexSettings())
    scores, ids = index.search(q, 10)
    assert index.exact
    assert index.kind == "flat"
    np.testing.assert_array_equal(ids, numpy_top(emb, q, 10))
    np.testing.assert_allclose(scores, np.take_along_axis(q @ emb.T, ids, axis=1), rtol=1e-5)
    assert (ids > 0).all()


def test_auto_chooses_flat_for_small_catalogues_and_hnsw_above_the_threshold() -> None:
    emb = embeddings(300, 8)
    assert build_index(emb, "auto", IndexSettings(flat_max_items=300)).kind == "flat"
    assert build_index(emb, "auto", IndexSettings(flat_max_items=299)).kind == "hnsw"


def test_hnsw_recall_at_10_against_exact_is_at_least_095() -> None:
    """With the shipped HNSW parameters; a starved graph shows the measure can fail."""
    emb, q = embeddings(3000, 32), queries(200, 32)
    index = build_index(emb, "hnsw", IndexSettings())
    assert not index.exact
    _, ids = index.search(q, 10)
    assert (ids > 0).all()
    recall = recall_at_10(index, q)
    exact = numpy_top(emb, q, 10)
    overlap = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(ids, exact, strict=True)])
    assert recall == pytest.approx(overlap)
    assert recall >= 0.95
    starved = build_index(emb, "hnsw", IndexSettings(hnsw_m=4, ef_construction=8, ef_search=8))
    assert recall_at_10(starved, q) < 0.95


def test_ivf_recall_is_measured_and_exact_when_probing_every_list() -> None:
    emb, q = embeddings(2000, 16), queries(100, 16)
    few = build_index(emb, "ivf", IndexSettings(nlist=32, nprobe=1))
    every = build_index(emb, "ivf", IndexSettings(nlist=32, nprobe=32))
    assert few.kind == every.kind == "ivf"
    assert 0.0 < recall_at_10(few, q) < 1.0
    assert recall_at_10(every, q) == 1.0


def test_k_larger_than_the_catalogue_is_clipped() -> None:
    emb = embeddings(7, 4)
    _, ids = build_index(emb, "flat", IndexSettings()).search(queries(1, 4), 50)
    assert sorted(ids[0].tolist()) == list(range(1, 8))


def test_exact_topk_respects_an_allowed_mask() -> None:
    emb, q = embeddings(50, 8), queries(3, 8)
    allowed = np.zeros(51, dtype=bool)
    allowed[[3, 7, 11, 19]] = True
    scores, ids = exact_topk(emb, q, 10, allowed)
    for row, row_scores in zip(ids, scores, strict=True):
        kept = row[row > 0]
        assert set(kept.tolist()) == {3, 7, 11, 19}
        assert (row[len(kept) :] == -1).all()
        assert list(row_scores[: len(kept)]) == sorted(row_scores[: len(kept)], reverse=True)


@pytest.mark.skipif(gpu_available(), reason="this FAISS build has a GPU")
def test_gpu_kind_without_a_gpu_falls_back_to_cpu_with_a_reason() -> None:
    index = build_index(embeddings(100, 8), "gpu", IndexSettings())
    assert index.kind == "flat"
    assert index.fallback_reason is not None
    assert "GPU" in index.fallback_reason


def test_a_degenerate_matrix_is_refused() -> None:
    from service.errors import BundleLoadError

    with pytest.raises(BundleLoadError):
        build_index(np.zeros((1, 4), dtype=np.float32), "flat", IndexSettings())


def test_filtered_flat_search_equals_the_exact_oracle_over_allowed_items() -> None:
    emb, q = embeddings(800, 16), queries(30, 16)
    allowed = np.random.default_rng(2).random(801) < 0.3
    allowed[0] = False
    index = build_index(emb, "flat", IndexSettings())
    assert index.filters
    scores, ids = index.search(q, 10, allowed)
    want_scores, want_ids = exact_topk(emb, q, 10, allowed)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5)


@pytest.mark.parametrize(
    ("kind", "params"),
    [
        ("hnsw", IndexSettings(ef_search=128, filter_scan_max_items=0)),
        ("ivf", IndexSettings(nlist=16, nprobe=16, filter_scan_max_items=0)),  # every list: exact
    ],
)
def test_filtered_approximate_search_returns_only_allowed_items_with_high_recall(
    kind: str, params: IndexSettings
) -> None:
    """The index's own efSearch / nprobe are kept: FAISS parameter objects would otherwise
    reset them to defaults (efSearch 16, nprobe 1) and recall would fall."""
    emb, q = embeddings(2000, 16), queries(50, 16)
    allowed = np.random.default_rng(3).random(2001) < 0.5
    allowed[0] = False
    index = build_index(emb, kind, params)
    _, ids = index.search(q, 10, allowed)
    returned = ids[ids > 0]
    assert allowed[returned].all()
    _, want = exact_topk(emb, q, 10, allowed)
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(ids, want, strict=True)])
    assert recall >= (1.0 if kind == "ivf" else 0.95)
    carried = index._params(None)
    if kind == "hnsw":
        assert carried.efSearch == index.index.hnsw.efSearch == 128
    else:
        assert carried.nprobe == index.index.nprobe == 16


def test_an_index_that_cannot_filter_drops_disallowed_results_after_the_search() -> None:
    """The GPU indexes' path (no IDSelector), exercised on a CPU Flat index marked as such."""
    import threading
    from dataclasses import replace

    emb, q = embeddings(300, 8), queries(5, 8)
    allowed = np.random.default_rng(4).random(301) < 0.5
    allowed[0] = False
    flat = build_index(emb, "flat", IndexSettings())
    unfiltered = replace(flat, _gpu_lock=threading.Lock())
    assert not unfiltered.filters
    _, ids = unfiltered.search(q, 20, allowed)
    _, plain = flat.search(q, 20)
    np.testing.assert_array_equal(ids, np.where(allowed[plain], plain, -1))


def clustered(
    n_items: int, dim: int, clusters: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Items near one of `clusters` centres (row 0 = padding) and each item's cluster: a genre
    filter is such a cluster, which is what makes graph and list searches miss its best items."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    label = rng.integers(0, clusters, n_items + 1)
    emb = (centres[label] + 0.5 * rng.standard_normal((n_items + 1, dim))).astype(np.float32)
    emb[0] = 100.0
    label[0] = -1
    return emb, label


def overlap(ids: np.ndarray, want: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(e)) / len(e) for a, e in zip(ids, want, strict=True)]))


class CountingIndex:
    """A FAISS index that counts its searches (everything else is the real index's)."""

    def __init__(self, index: object) -> None:
        self.inner = index
        self.searches = 0

    def search(self, *args: object, **kwargs: object) -> object:
        self.searches += 1
        return self.inner.search(*args, **kwargs)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_a_narrow_filter_on_an_approximate_index_is_answered_by_an_exact_scan(kind: str) -> None:
    """A filter to one cluster, queried from another: inside FAISS the graph (or the probed
    lists) hardly reach the allowed items; the scan returns the exact oracle's items."""
    emb, label = clustered(4000, 16, 20)
    rng = np.random.default_rng(5)
    q = emb[rng.integers(1, 4001, 40)] + 0.1 * rng.standard_normal((40, 16)).astype(np.float32)
    allowed = label == 3
    params = IndexSettings(ef_search=16, nlist=64, nprobe=2)
    _, want = exact_topk(emb, q, 10, allowed)
    inside = build_index(emb, kind, params.model_copy(update={"filter_scan_max_items": 0}))
    _, got_inside = inside.search(q, 10, allowed)
    assert overlap(got_inside, want) < 0.9  # the failure the scan exists for
    scanned = build_index(emb, kind, params)
    scores, ids = scanned.search(q, 10, allowed)
    np.testing.assert_array_equal(ids, want)
    np.testing.assert_allclose(scores, np.take_along_axis(q @ emb.T, ids, axis=1), rtol=1e-5)


def test_the_scan_takes_narrow_filters_and_leaves_wide_ones_to_faiss() -> None:
    from dataclasses import replace

    emb, q = embeddings(1000, 8), queries(3, 8)
    allowed = np.zeros(1001, dtype=bool)
    allowed[1:301] = True
    allowed[0] = True  # row 0 is padding: never counted, never returned
    built = build_index(emb, "hnsw", IndexSettings(filter_scan_max_items=300))
    spy = CountingIndex(built.index)
    index = replace(built, index=spy)
    _, ids = index.search(q, 10, allowed)
    assert spy.searches == 0
    np.testing.assert_array_equal(ids, exact_topk(emb, q, 10, allowed)[1])
    assert (ids > 0).all()
    allowed[301] = True
    index.search(q, 10, allowed)
    assert spy.searches == 1
    index.search(q, 10)  # no filter: the index
    assert spy.searches == 2
    seen_only = np.ones(1001, dtype=bool)
    seen_only[1:102] = False  # 899 items left: 89.9% of the catalogue
    wide = replace(built, index=spy, scan_max_items=10_000)
    wide.search(q, 10, seen_only)
    assert spy.searches == 2
    seen_only[101] = True  # 90%: the index keeps its recall there (a user's seen items)
    wide.search(q, 10, seen_only)
    assert spy.searches == 3
    exact = build_index(emb, "flat", IndexSettings(filter_scan_max_items=10_000))
    flat_spy = CountingIndex(exact.index)
    replace(exact, index=flat_spy).search(q, 10, allowed)
    assert flat_spy.searches == 1  # an exact index filters inside FAISS: nothing to gain


@pytest.mark.parametrize("share", [0.0, 0.002, 0.05, 0.09, 0.11, 0.6, 1.0])
def test_exact_topk_with_a_filter_equals_a_brute_force_sort(share: float) -> None:
    """Few allowed rows are scored alone, many by the full product: both give the oracle's
    order, and fewer allowed rows than k leave ids of -1 with scores of -inf."""
    emb, q = embeddings(1000, 8), queries(4, 8)
    allowed = np.random.default_rng(6).random(1001) < share
    allowed[0] = False
    scores, ids = exact_topk(emb, q, 10, allowed)
    assert ids.shape == scores.shape == (4, 10)
    full = q @ emb.T
    for row in range(4):
        candidates = np.flatnonzero(allowed)
        order = candidates[np.argsort(-full[row, candidates], kind="stable")][:10]
        found = ids[row][ids[row] > 0]
        np.testing.assert_array_equal(found, order)
        assert (ids[row][len(order) :] == -1).all()
        assert np.isneginf(scores[row][len(order) :]).all()
        np.testing.assert_allclose(scores[row][: len(order)], full[row, order], rtol=1e-5)


class GpuLikeIndex(CountingIndex):
    """A CPU index that refuses what GPU FAISS refuses: more than 2048 results per search."""

    def search(self, *args: object, **kwargs: object) -> object:
        k = int(args[1])  # type: ignore[call-overload]
        if k > GPU_MAX_K:
            raise RuntimeError(f"GPU index only supports min/max-K selection up to 2048 ({k})")
        return super().search(*args, **kwargs)


def test_a_gpu_index_never_asks_faiss_for_more_than_it_can_select() -> None:
    """Over-fetching for a narrow filter on a GPU index (it cannot filter inside FAISS) may
    need a k over GPU FAISS's 2048: that search is an exact scan instead of an error."""
    import threading
    from dataclasses import replace

    emb, q = embeddings(5000, 8), queries(3, 8)
    built = build_index(emb, "flat", IndexSettings())
    spy = GpuLikeIndex(built.index)
    gpu = replace(built, index=spy, _gpu_lock=threading.Lock(), max_k=GPU_MAX_K)
    allowed = np.random.default_rng(7).random(5001) < 0.01
    allowed[0] = False
    scores, ids = gpu.search(q, 3000, allowed)
    assert spy.searches == 0
    want_scores, want_ids = exact_topk(emb, q, 3000, allowed)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5)
    gpu.search(q, 2048, allowed)  # within the limit: FAISS, disallowed results dropped after
    assert spy.searches == 1
    assert build_index(emb, "flat", IndexSettings()).max_k is None  # CPU FAISS: no limit
