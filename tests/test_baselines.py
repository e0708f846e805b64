"""Baselines against dense brute-force oracles, and selection on validation only."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pytest

from training.baselines import BASELINES, EASE, ItemKNN, Popularity
from training.baselines.base import binary_matrix
from training.baselines.selection import select_on_validation
from training.data import load_dataset
from training.data.splits import EvalSet, Split, leave_one_out
from training.errors import ConfigError


def random_sequences(n_users: int, n_items: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    # items n_items-1 and n_items never occur: EASE/ItemKNN must handle empty columns
    return [
        rng.choice(np.arange(1, n_items - 1), size=int(rng.integers(2, 12)), replace=False).astype(
            np.int32
        )
        for _ in range(n_users)
    ]


def test_popularity_scores_are_training_counts_for_every_user() -> None:
    model = Popularity().fit([np.array([1, 2]), np.array([2, 3]), np.array([2])], n_items=4)
    scores = model.score(np.array([0, 1]), [np.array([1]), np.array([3])])
    assert scores.dtype == np.float32
    assert scores.tolist() == [[0, 1, 3, 1, 0], [0, 1, 3, 1, 0]]


def test_itemknn_matches_a_dense_cosine_oracle_with_top_k_neighbours() -> None:
    n, k = 30, 5
    train = random_sequences(40, n, seed=0)
    x = binary_matrix(train, n).toarray().astype(np.float64)
    norms = np.sqrt(x.sum(axis=0))
    sim = (x.T @ x) / (np.outer(norms, norms) + 1e-12)
    np.fill_diagonal(sim, 0.0)
    w = np.zeros_like(sim)
    for j in range(n + 1):  # keep the k most similar items i of every item j
        best = np.argsort(-sim[:, j], kind="stable")[:k]
        w[best, j] = sim[best, j]
    histories = [np.array([1, 4, 7]), np.array([2]), np.array([], dtype=np.int32)]
    expected = binary_matrix(histories, n).toarray() @ w
    got = ItemKNN(k=k).fit(train, n).score(np.arange(3), histories)
    assert got.shape == (3, n + 1)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_ease_matches_the_dense_closed_form_over_the_whole_catalogue() -> None:
    n, lam = 25, 7.0
    train = random_sequences(60, n, seed=1)
    x = binary_matrix(train, n).toarray().astype(np.float64)[:, 1:]  # every real item
    p = np.linalg.inv(x.T @ x + lam * np.eye(n))
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    histories = [np.array([1, 3, 5]), np.array([n - 1, 2])]  # n-1 has no training interaction
    expected = binary_matrix(histories, n).toarray()[:, 1:] @ b
    got = EASE(lam=lam).fit(train, n).score(np.arange(2), histories)
    np.testing.assert_allclose(got[:, 1:], expected, rtol=1e-4, atol=1e-5)


def test_ease_refuses_a_catalogue_too_large_for_a_dense_matrix() -> None:
    with pytest.raises(ConfigError, match="max_items"):
        EASE(max_items=10).fit(random_sequences(30, 40, seed=2), 40)
    with pytest.raises(ConfigError, match="lam"):
        EASE(lam=0)


class _Oracle:
    """Scores one fixed item first; its `item` is the hyper-parameter."""

    grid: ClassVar[dict[str, tuple[Any, ...]]] = {"item": (1, 2, 3)}

    def __init__(self, item: int) -> None:
        self.item, self.n = item, 0

    def fit(self, train: list[np.ndarray], n_items: int) -> _Oracle:
        self.n = n_items
        return self

    def score(self, users: np.ndarray, histories: list[np.ndarray]) -> np.ndarray:
        out = np.zeros((len(users), self.n + 1), dtype=np.float32)
        out[:, self.item] = 1.0
        return out

    def params(self) -> dict[str, Any]:
        return {"item": self.item}


def test_selection_uses_validation_and_ignores_test() -> None:
    ds = load_dataset("synthetic:users=20,items=10,interactions=100,seed=0")
    one = np.zeros(1, dtype=np.int32)
    valid = EvalSet("valid", np.arange(3), [one] * 3, [np.array([2])] * 3)
    test = EvalSet("test", np.arange(3), [one] * 3, [np.array([3])] * 3)  # would favour item=3
    split = Split("loo-time", ds, [one] * ds.n_users, valid, test)
    chosen = select_on_validation(_Oracle, split, ds.item_popularity())
    assert chosen.params == {"item": 2}
    # for item = 1 or 3, target 2 ties at 0 with the 8 other unscored items, one item above:
    # its rank is uniform over 2..10 (ties are a random order, not an index order)
    tied = float(np.mean(1 / np.log2(np.arange(2, 11) + 1)))
    got = [t["valid ndcg@10"] for t in chosen.trials]
    assert got == pytest.approx([tied, 1.0, tied])


def test_ease_and_itemknn_beat_popularity_on_structured_synthetic_data() -> None:
    split = leave_one_out(load_dataset("synthetic:users=300,items=120,interactions=3000,seed=0"))
    pop = np.bincount(np.concatenate(split.train), minlength=split.dataset.n_items + 1)
    ndcg = {
        name: select_on_validation(BASELINES[name], split, pop).trials
        for name in ("itemknn", "ease")
    }
    base = select_on_validation(Popularity, split, pop).model
    from training.evaluate import evaluate

    pop_ndcg = evaluate(base.score, split.valid, split.dataset, train_popularity=pop)["ndcg@10"]
    for name, trials in ndcg.items():
        assert max(t["valid ndcg@10"] for t in trials) > pop_ndcg, name
