"""training.evaluate: exclusion of seen items, chunking, hand-computed end-to-end figures."""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pandas as pd
import pytest

import training.evaluate as E
from training.data.dataset import Dataset
from training.data.splits import EvalSet
from training.errors import DivergedError


def tiny_dataset(sequences: list[list[int]], genres: list[list[str]], n_items: int) -> Dataset:
    """A hand-built Dataset: user u's sequence, item i's genres (genres[0] = padding)."""
    users = np.repeat(np.arange(len(sequences)), [len(s) for s in sequences]).astype(np.int32)
    items = np.concatenate([np.asarray(s, dtype=np.int32) for s in sequences])
    item_ids = np.array([""] + [str(i) for i in range(1, n_items + 1)])
    meta = pd.DataFrame(
        {
            "item_id": item_ids,
            "title": [""] * (n_items + 1),
            "genres": genres,
            "year": pd.array([pd.NA] * (n_items + 1), dtype="Int64"),
            "tags": [""] * (n_items + 1),
        }
    )
    return Dataset(
        name="tiny",
        user_ids=np.array([str(u) for u in range(len(sequences))]),
        item_ids=item_ids,
        users=users,
        items=items,
        timestamps=np.arange(len(items), dtype=np.int64),
        ratings=None,
        item_meta=meta,
    )


GENRES = [[], ["A"], ["A", "B"], ["B"], ["C"], ["(no genres listed)"]]
DS = tiny_dataset([[1, 2, 3, 4], [2, 3, 5]], GENRES, n_items=5)
EVAL = EvalSet(
    stage="test",
    users=np.array([0, 1]),
    histories=[np.array([1, 2, 3]), np.array([2, 3])],
    targets=[np.array([4]), np.array([5])],
)
# the model prefers higher item ids but loves the padding column and user 0's seen item 3
FIXED = np.array([[9.0, 0.1, 0.2, 8.0, 0.4, 0.5], [9.0, 0.1, 0.2, 0.3, 0.4, 0.5]], dtype=np.float32)


def fixed_scores(users: np.ndarray, histories: list[np.ndarray]) -> np.ndarray:
    return FIXED[users]


def test_fixed_scores_give_hand_computed_metrics() -> None:
    # user 0 ranks [5, 4] (1,2,3 seen): target 4 at rank 2; user 1 ranks [5, 4, 1]: target 5 at 1
    pop = np.array([0, 1, 2, 2, 1, 1])
    m = E.evaluate(fixed_scores, EVAL, DS, ks=(1, 2), train_popularity=pop)
    assert m["hr@1"] == pytest.approx(0.5)
    assert m["hr@2"] == pytest.approx(1.0)
    assert m["ndcg@2"] == pytest.approx((1 / math.log2(3) + 1.0) / 2)
    assert m["mrr@2"] == pytest.approx((0.5 + 1.0) / 2)
    assert m["recall@2"] == pytest.approx(1.0)
    assert m["coverage@1"] == pytest.approx(1 / 5)  # only item 5 is ever first
    assert m["coverage@2"] == pytest.approx(2 / 5)
    assert m["gini@1"] == pytest.approx(0.8)  # exposure [0,0,0,0,2]: (2*5-5-1)*2 / (5*2)
    # lists [5,4] and [5,4]: item 5 has no genres, so no pair is left -> undefined
    assert math.isnan(m["diversity@2"])
    info = -np.log2((pop + 1) / (pop[1:].sum() + 5))
    assert m["novelty@2"] == pytest.approx((info[5] + info[4]) / 2)
    # popularity lists (seen excluded, ties by index): user 0 [4, 5], user 1 [1, 4]
    # user 0's hit 4 is expected; user 1's hit 5 is not -> (0 + 1/2) / 2
    assert m["serendipity@2"] == pytest.approx(0.25)


def test_not_excluding_seen_items_changes_the_result(monkeypatch: pytest.MonkeyPatch) -> None:
    excluded = E.evaluate(fixed_scores, EVAL, DS, ks=(2,))

    def mask_padding_only(scores: np.ndarray, histories: list[np.ndarray]) -> None:
        scores[:, 0] = -np.inf

    monkeypatch.setattr(E, "mask_seen", mask_padding_only)
    leaky = E.evaluate(fixed_scores, EVAL, DS, ks=(2,))
    assert excluded["hr@2"] == pytest.approx(1.0)
    assert leaky["hr@2"] == pytest.approx(0.5)  # user 0's list becomes [3 (seen), 5]: a miss
    assert leaky["ndcg@2"] < excluded["ndcg@2"]


def test_a_target_inside_the_history_can_never_be_hit() -> None:
    rng = np.random.default_rng(1)
    n, m = 40, 30
    histories = [
        rng.choice(np.arange(1, n + 1), size=int(rng.integers(1, 35)), replace=False)
        for _ in range(m)
    ]
    ds = tiny_dataset([list(h) for h in histories], [[]] * (n + 1), n_items=n)
    seen_hit = EvalSet("test", np.arange(m), histories, [h[:1] for h in histories])
    m_ = E.evaluate(lambda u, h: rng.random((len(h), n + 1), dtype=np.float32), seen_hit, ds)
    assert m_["hr@20"] == 0.0  # every target is in its row's history, so it can never be hit


def test_batch_size_does_not_change_any_metric() -> None:
    rng = np.random.default_rng(2)
    n, m = 60, 45
    seqs = [list(rng.choice(np.arange(1, n + 1), size=6, replace=False)) for _ in range(m)]
    genres: list[list[str]] = [[]] + [[g for g in "ABCD" if rng.random() < 0.4] for _ in range(n)]
    ds = tiny_dataset(seqs, genres, n_items=n)
    table = rng.integers(0, 5, size=(m, n + 1)).astype(np.float32)  # many ties
    ev = EvalSet(
        "test", np.arange(m), [np.array(s[:-1]) for s in seqs], [np.array(s[-1:]) for s in seqs]
    )
    one = E.evaluate(lambda u, h: table[u], ev, ds, batch_size=1)
    many = E.evaluate(lambda u, h: table[u], ev, ds, batch_size=256)
    assert one.keys() == many.keys()
    for key in one:
        assert one[key] == pytest.approx(many[key], nan_ok=True), key


def test_multi_target_rows_use_hits_over_targets_and_rows_without_targets_are_skipped() -> None:
    ev = EvalSet(
        "test",
        np.array([0, 1]),
        [np.array([1]), np.array([1])],
        [np.array([2, 3, 4, 5]), np.array([], dtype=np.int64)],
    )
    scores = np.array([[0, 0, 5, 1, 4, 0]], dtype=np.float32)  # ranks 2, 4, 3, 5 (ties by index)
    m = E.evaluate(lambda u, h: np.repeat(scores, len(h), axis=0), ev, DS, ks=(2,))
    assert m["recall@2"] == pytest.approx(2 / 4)
    assert m["hr@2"] == 1.0
    assert m["ndcg@2"] == pytest.approx(1.0)


def test_equal_scores_give_chance_level_accuracy_whatever_the_item_index() -> None:
    # a constant model must score chance level (k / rankable items), not favour low item ids
    rng = np.random.default_rng(6)
    n, m, k = 40, 30, 10
    histories = [
        rng.choice(np.arange(1, n + 1), size=int(rng.integers(1, 20)), replace=False)
        for _ in range(m)
    ]
    targets = [rng.choice(np.setdiff1d(np.arange(1, n + 1), h), size=1) for h in histories]
    ds = tiny_dataset(
        [list(h) + list(t) for h, t in zip(histories, targets, strict=True)], [[]] * (n + 1), n
    )
    ev = EvalSet("test", np.arange(m), histories, targets)
    got = E.evaluate(lambda u, h: np.ones((len(h), n + 1), dtype=np.float32), ev, ds, ks=(k,))
    rankable = np.array([n - len(h) for h in histories], dtype=np.float64)
    assert got[f"hr@{k}"] == pytest.approx(float(np.mean(k / rankable)))
    assert got[f"recall@{k}"] == pytest.approx(float(np.mean(k / rankable)))
    dcg = sum(1 / math.log2(r + 1) for r in range(1, k + 1))
    assert got[f"ndcg@{k}"] == pytest.approx(float(np.mean(dcg / rankable)))
    harmonic = sum(1 / r for r in range(1, k + 1))
    assert got[f"mrr@{k}"] == pytest.approx(float(np.mean(harmonic / rankable)))


def test_a_target_tied_with_a_lower_index_item_gets_half_a_hit_at_one() -> None:
    # user 0 ranks its target 4 first; for user 1 (history 2, 3) items 4 and 5 tie on top and
    # its target 5 is first in half the orders (the index tie-break would always put it second)
    scores = np.array([[0, 0.1, 0.2, 0.3, 0.9, 0.5], [0, 0.1, 0.2, 0.3, 0.9, 0.9]])
    m = E.evaluate(lambda u, h: scores[u], EVAL, DS, ks=(1, 2))
    assert m["hr@1"] == pytest.approx((1.0 + 0.5) / 2)
    assert m["mrr@2"] == pytest.approx((1.0 + 0.75) / 2)
    assert m["hr@2"] == 1.0
    assert m["coverage@1"] == pytest.approx(1 / 5)  # the lists stay deterministic: [4], [4]


def test_float64_scores_are_not_rounded_into_ties() -> None:
    # each target beats the other top item by 1e-9, below float32 resolution at these values;
    # user 1's target 5 has the higher index, so float32 + index tie-break would rank it second
    scores = np.array(
        [[0, 0.1, 0.2, 0.3, 0.3 + 1e-9, 0.3], [0, 0.1, 0.2, 0.3, 0.5, 0.5 + 1e-9]], dtype=np.float64
    )
    assert np.float32(scores[1, 5]) == np.float32(scores[1, 4])
    m = E.evaluate(lambda u, h: scores[u], EVAL, DS, ks=(1, 2))
    assert m["hr@1"] == 1.0
    assert m["mrr@2"] == 1.0
    assert m["coverage@1"] == pytest.approx(2 / 5)  # lists [4] and [5]


def test_nan_scores_and_wrong_shapes_are_rejected() -> None:
    with pytest.raises(DivergedError, match="NaN: training diverged"):
        E.evaluate(lambda u, h: np.full((len(h), 6), np.nan, dtype=np.float32), EVAL, DS)
    with pytest.raises(ValueError, match="shape"):
        E.evaluate(lambda u, h: np.zeros((len(h), 5), dtype=np.float32), EVAL, DS)


def test_score_fn_is_called_in_bounded_chunks_and_peak_memory_stays_bounded() -> None:
    n, m, batch = 20_000, 2_000, 32
    rng = np.random.default_rng(3)
    ds = tiny_dataset([[1 + u % n, 2 + u % (n - 1)] for u in range(m)], [[]] * (n + 1), n_items=n)
    ev = EvalSet(
        "test",
        np.arange(m),
        [np.array([1 + u % n]) for u in range(m)],
        [np.array([2 + u % (n - 1)]) for u in range(m)],
    )
    sizes: list[int] = []

    def score(users: np.ndarray, histories: list[np.ndarray]) -> np.ndarray:
        sizes.append(len(users))
        return rng.random((len(users), n + 1), dtype=np.float32)

    tracemalloc.start()
    E.evaluate(score, ev, ds, batch_size=batch)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert max(sizes) == batch
    assert sum(sizes) == m
    one_batch = batch * (n + 1) * 4
    assert peak < 8 * one_batch  # measured ~4x; all scores at once would be 62x


@pytest.mark.slow
def test_100k_users_by_100k_items_runs_in_bounded_memory() -> None:
    n, m, batch = 100_000, 100_000, 256
    ds = tiny_dataset([[1 + u % n, 1 + (u * 7 + 3) % n] for u in range(m)], [[]] * (n + 1), n)
    ev = EvalSet(
        "test",
        np.arange(m),
        [np.array([1 + u % n]) for u in range(m)],
        [np.array([1 + (u * 7 + 3) % n]) for u in range(m)],
    )
    rng = np.random.default_rng(5)
    tracemalloc.start()
    result = E.evaluate(lambda u, h: rng.random((len(u), n + 1), dtype=np.float32), ev, ds)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 8 * batch * (n + 1) * 4  # ~0.8 GB; the full score matrix would be 40 GB
    assert result["hr@10"] < 0.01  # random scores: about 10 / 100k
