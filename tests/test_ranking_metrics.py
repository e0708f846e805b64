"""training.metrics (offline ranking metrics) against hand-computed tiny cases and an oracle."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from training import metrics as M


def test_top_k_breaks_score_ties_by_ascending_item_index() -> None:
    scores = np.array([[0.0, 1.0, 3.0, 3.0, 2.0, 3.0]], dtype=np.float32)
    assert M.top_k(scores, 2).tolist() == [[2, 3]]
    assert M.top_k(scores, 4).tolist() == [[2, 3, 5, 4]]


def test_top_k_matches_a_stable_full_sort_on_heavily_tied_scores() -> None:
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(50, 300)).astype(np.float32)
    scores[rng.random(scores.shape) < 0.3] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :17]
    expected = np.where(np.take_along_axis(scores, order, axis=1) == -np.inf, M.PAD, order)
    assert np.array_equal(M.top_k(scores, 17), expected)


def test_top_k_pads_rows_with_fewer_rankable_items_than_k() -> None:
    scores = np.array([[-np.inf, 0.5, -np.inf, 0.7]], dtype=np.float32)
    assert M.top_k(scores, 3).tolist() == [[3, 1, M.PAD]]


def test_relevance_marks_each_rows_own_targets_only() -> None:
    lists = np.array([[4, 2, 9], [2, 7, 0]])
    rel = M.relevance(lists, [np.array([2]), np.array([7, 4])])
    assert rel.tolist() == [[False, True, False], [False, True, False]]


def test_ndcg_single_target_at_rank_three_is_one_over_log2_four() -> None:
    rel = np.array([[False, False, True, False]])
    assert M.ndcg(rel, np.array([1]), 4)[0] == pytest.approx(0.5)
    assert M.ndcg(rel, np.array([1]), 2)[0] == 0.0


def test_ndcg_multi_target_uses_ideal_dcg_over_min_k_and_targets() -> None:
    rel = np.array([[True, False, True]])
    dcg = 1.0 + 1.0 / math.log2(4)
    ideal_two = 1.0 + 1.0 / math.log2(3)
    ideal_three = ideal_two + 1.0 / math.log2(4)
    assert M.ndcg(rel, np.array([2]), 3)[0] == pytest.approx(dcg / ideal_two)
    assert M.ndcg(rel, np.array([5]), 3)[0] == pytest.approx(dcg / ideal_three)


def test_hit_rate_recall_and_mrr_by_hand() -> None:
    rel = np.array([[False, True, False, True], [False, False, False, False]])
    n_targets = np.array([4, 1])
    assert M.hit_rate(rel, 1).tolist() == [0.0, 0.0]
    assert M.hit_rate(rel, 2).tolist() == [1.0, 0.0]
    assert M.recall(rel, n_targets, 4).tolist() == [0.5, 0.0]  # 2 hits of 4 targets
    assert M.mrr(rel, 4).tolist() == [0.5, 0.0]
    assert M.mrr(rel, 1).tolist() == [0.0, 0.0]


def test_gini_of_equal_exposure_is_zero_and_of_one_item_in_four_is_three_quarters() -> None:
    assert M.gini(np.array([3, 3, 3, 3])) == pytest.approx(0.0)
    # sorted x = [0,0,0,4]: sum (2i - n - 1) x_i = 3 * 4 = 12, / (n * sum x) = 16
    assert M.gini(np.array([0, 4, 0, 0])) == pytest.approx(0.75)
    assert M.gini(np.zeros(5)) == 0.0


def test_intra_list_diversity_skips_pairs_with_genre_less_items() -> None:
    # items: 1 {A,B}, 2 {B}, 3 {C}, 4 no genres
    genres = np.array([[0, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]], dtype=bool)
    lists = np.array([[1, 2, 3], [1, 4, 2], [4, 0, 3]])
    div, valid = M.intra_list_diversity(lists, genres)
    # row 0: J(1,2)=1/2, J(1,3)=0, J(2,3)=0 -> mean 1/6; row 1: only (1,2) -> 1/2
    assert div[:2] == pytest.approx([1 - 1 / 6, 0.5])
    assert valid.tolist() == [True, True, False]


def test_self_information_is_laplace_smoothed_training_share() -> None:
    info = M.self_information(np.array([0, 3, 1, 0]))  # 4 interactions, 3 items
    assert info[0] == 0.0
    assert info[1:] == pytest.approx([-math.log2(4 / 7), -math.log2(2 / 7), -math.log2(1 / 7)])


def test_novelty_averages_over_real_items_only() -> None:
    info = np.array([0.0, 1.0, 2.0, 6.0])
    values, valid = M.novelty(np.array([[1, 3, 0], [0, 0, 0]]), info)
    assert values[0] == pytest.approx(3.5)
    assert valid.tolist() == [True, False]


def test_serendipity_counts_hits_the_popularity_list_does_not_contain() -> None:
    lists = np.array([[5, 2, 7]])
    rel = M.relevance(lists, [np.array([2, 7])])
    expected = np.array([[2, 1, 3]])
    assert M.serendipity(lists, rel, expected)[0] == pytest.approx(1 / 3)
    assert M.serendipity(lists, rel, lists)[0] == 0.0


def test_first_unseen_equals_top_k_of_masked_popularity() -> None:
    rng = np.random.default_rng(4)
    n, b, k = 60, 40, 10
    popularity = rng.integers(0, 6, size=n + 1)  # many ties
    histories = [
        rng.choice(np.arange(1, n + 1), size=int(rng.integers(0, n)), replace=False)
        for _ in range(b)
    ]
    scores = np.tile(popularity.astype(np.float32), (b, 1))
    scores[:, M.PAD] = -np.inf
    for row, h in enumerate(histories):
        scores[row, h] = -np.inf
    got = M.first_unseen(M.popularity_order(popularity), histories, k)
    assert np.array_equal(got, M.top_k(scores, k))


# --- tie-aware accuracy (McSherry & Najork 2008): expectation over random orders of ties ---

ACCURACY = ("ndcg", "hr", "mrr", "recall")


def list_metrics(lists: np.ndarray, targets: list[np.ndarray], ks: tuple[int, ...]) -> dict:
    """The metrics of fixed lists (the pre-tie-aware evaluator's computation)."""
    rel = M.relevance(lists, targets)
    n_targets = np.array([len(t) for t in targets])
    out = {}
    for k in ks:
        out[f"ndcg@{k}"] = M.ndcg(rel, n_targets, k)
        out[f"hr@{k}"] = M.hit_rate(rel, k)
        out[f"mrr@{k}"] = M.mrr(rel, k)
        out[f"recall@{k}"] = M.recall(rel, n_targets, k)
    return out


def oracle(row: np.ndarray, targets: np.ndarray, ks: tuple[int, ...]) -> dict[str, float]:
    """Mean of the list metrics over every order of the tied rankable items (brute force)."""
    rankable = np.flatnonzero(row > -np.inf)
    rankable = rankable[rankable != M.PAD]
    values = sorted({float(row[i]) for i in rankable}, reverse=True)
    groups = [[int(i) for i in rankable if row[i] == v] for v in values]
    kmax = max(ks)
    sums: dict[str, float] = {f"{m}@{k}": 0.0 for m in ACCURACY for k in ks}
    orders = list(itertools.product(*(itertools.permutations(g) for g in groups)))
    for parts in orders:
        ranking = [i for part in parts for i in part][:kmax]
        lists = np.array([ranking + [M.PAD] * (kmax - len(ranking))])
        for name, v in list_metrics(lists, [targets], ks).items():
            sums[name] += float(v[0])
    return {name: total / len(orders) for name, total in sums.items()}


def test_tie_aware_accuracy_equals_the_mean_over_every_order_of_tied_items() -> None:
    rng = np.random.default_rng(7)
    n, b, ks = 8, 120, (1, 2, 3, 5)
    scores = rng.integers(0, 3, size=(b, n)).astype(np.float64)  # heavy ties
    scores[rng.random(scores.shape) < 0.25] = -np.inf  # seen items
    scores[:, M.PAD] = -np.inf
    targets = [
        rng.choice(
            np.arange(1, n), size=1 if r < b // 2 else int(rng.integers(2, 5)), replace=False
        )
        for r in range(b)
    ]
    got = M.tie_aware_accuracy(scores, targets, ks)
    for r in range(b):
        want = oracle(scores[r], targets[r], ks)
        for name, value in want.items():
            assert got[name][r] == pytest.approx(value, abs=1e-12), (r, name)


def test_tie_aware_accuracy_of_all_equal_scores_is_chance_level() -> None:
    rng = np.random.default_rng(8)
    n, b, k = 1_000, 30, 10
    scores = np.full((b, n + 1), 0.25, dtype=np.float32)
    scores[:, M.PAD] = -np.inf
    seen = [
        rng.choice(np.arange(1, n + 1), size=int(rng.integers(0, 300)), replace=False)
        for _ in range(b)
    ]
    for row, h in enumerate(seen):
        scores[row, h] = -np.inf
    targets = [rng.choice(np.setdiff1d(np.arange(1, n + 1), h), size=1) for h in seen]
    rankable = np.array([n - len(h) for h in seen])
    got = M.tie_aware_accuracy(scores, targets, (k,))
    assert got[f"hr@{k}"] == pytest.approx(k / rankable, rel=1e-12)
    assert got[f"recall@{k}"] == pytest.approx(k / rankable, rel=1e-12)
    harmonic = sum(1 / r for r in range(1, k + 1))
    assert got[f"mrr@{k}"] == pytest.approx(harmonic / rankable, rel=1e-12)
    dcg = sum(1 / math.log2(r + 1) for r in range(1, k + 1))
    assert got[f"ndcg@{k}"] == pytest.approx(dcg / rankable, rel=1e-12)


def test_without_ties_tie_aware_accuracy_equals_the_list_metrics() -> None:
    rng = np.random.default_rng(9)
    n, b, ks = 300, 64, (1, 5, 10, 20)
    scores = rng.standard_normal((b, n + 1))
    scores[rng.random(scores.shape) < 0.2] = -np.inf
    scores[:, M.PAD] = -np.inf
    single = [rng.choice(np.arange(1, n + 1), size=1) for _ in range(b)]
    multi = [
        rng.choice(np.arange(1, n + 1), size=int(rng.integers(1, 40)), replace=False)
        for _ in range(b)
    ]
    lists = M.top_k(scores, max(ks))
    got, want = M.tie_aware_accuracy(scores, single, ks), list_metrics(lists, single, ks)
    for name in want:
        assert np.array_equal(got[name], want[name]), name  # bit-identical for one target
    got, want = M.tie_aware_accuracy(scores, multi, ks), list_metrics(lists, multi, ks)
    for name in want:
        assert got[name] == pytest.approx(want[name], abs=1e-12), name


def test_a_target_scored_minus_inf_or_pad_scores_zero() -> None:
    scores = np.array(
        [[-np.inf, -np.inf, 1.0, 1.0], [-np.inf, 2.0, -np.inf, -np.inf], [-np.inf] * 4]
    )
    targets = [np.array([1]), np.array([2, 0]), np.array([3])]
    got = M.tie_aware_accuracy(scores, targets, (1, 3))
    for name, values in got.items():
        assert values.tolist() == [0.0, 0.0, 0.0], name
    # a -inf target still counts in |targets| (recall) next to a hit
    both = M.tie_aware_accuracy(scores[:1], [np.array([1, 2])], (3,))
    assert both["recall@3"][0] == pytest.approx(0.5)
    assert both["hr@3"][0] == 1.0


def test_hr_and_mrr_of_two_targets_in_one_tie_group_by_hand() -> None:
    # 4 tied items, 2 of them targets, one better item: first hit at group position 1 w.p. 1/2,
    # 2 w.p. 1/3, 3 w.p. 1/6 -> ranks 2, 3, 4
    scores = np.array([[-np.inf, 5.0, 1.0, 1.0, 1.0, 1.0]])
    got = M.tie_aware_accuracy(scores, [np.array([3, 5])], (2, 3, 4))
    assert got["hr@2"][0] == pytest.approx(1 / 2)
    assert got["hr@3"][0] == pytest.approx(5 / 6)
    assert got["hr@4"][0] == pytest.approx(1.0)
    assert got["mrr@4"][0] == pytest.approx(1 / 2 / 2 + 1 / 3 / 3 + 1 / 6 / 4)
    assert got["recall@3"][0] == pytest.approx(2 * (2 / 4) / 2)  # each target in top 3 w.p. 2/4
