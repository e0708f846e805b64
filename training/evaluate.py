"""Full-ranking evaluation, chunked over users (DESIGN 6).

For each batch of eval rows: ask the model for scores over every item [B, n_items + 1] (kept in
the model's precision, float64 included, so close scores do not become ties; at least float32),
set the padding column and every item of the row's history to -inf, and accumulate the metrics.
Accuracy metrics (ndcg, hr, mrr, recall) are tie-aware: the expectation over a uniformly random
order of items with equal scores (training.metrics.tie_aware_accuracy). The beyond-accuracy
metrics below use the deterministic top-K lists (score descending, ties by ascending item index;
training.metrics.top_k). Peak memory is O(batch_size * n_items) plus O(n_items) accumulators,
independent of the number of users.

Beyond-accuracy definitions (all over the top-K lists of the evaluated rows):
- coverage@K: distinct real items in any list / n_items.
- gini@K: Gini coefficient of how often each of the n_items items appears in the lists.
- diversity@K: mean over lists of 1 - mean pairwise genre Jaccard; pairs with an item without
  genres are skipped, lists with no pair left are skipped (NaN if no list has a pair).
- novelty@K: mean over lists of the mean self-information -log2 p(i), p(i) the Laplace-smoothed
  share of training interactions (training.metrics.self_information).
- serendipity@K: mean over rows of |hits not in the popularity recommender's top K| / K, where
  the popularity recommender ranks by training popularity with the same exclusions (Ge et al.).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from training import metrics as M
from training.data.dataset import Dataset
from training.errors import DivergedError

if TYPE_CHECKING:
    from training.data.splits import EvalSet

ScoreFn = Callable[[np.ndarray, list[np.ndarray]], np.ndarray]

NO_GENRES = {"", "(no genres listed)"}


def genre_matrix(dataset: Dataset) -> np.ndarray:
    """bool [n_items + 1, G]: item i has genre g. Row 0 (padding) and genre-less items are empty."""
    meta = dataset.item_meta
    column = meta["genres"].tolist() if "genres" in meta.columns else []
    per_item = [list(g) if isinstance(g, list | tuple | np.ndarray) else [] for g in column]
    per_item += [[]] * (dataset.n_items + 1 - len(per_item))
    vocab = sorted({g for gs in per_item for g in gs if g not in NO_GENRES})
    index = {g: j for j, g in enumerate(vocab)}
    matrix = np.zeros((dataset.n_items + 1, len(vocab)), dtype=bool)
    rows = [i for i, gs in enumerate(per_item) for g in gs if g in index]
    cols = [index[g] for gs in per_item for g in gs if g in index]
    matrix[rows, cols] = True
    matrix[M.PAD] = False
    return matrix


def mask_seen(scores: np.ndarray, histories: Sequence[np.ndarray]) -> None:
    """In place: padding column and every history item of each row -> -inf."""
    scores[:, M.PAD] = -np.inf
    lengths = np.fromiter((len(h) for h in histories), dtype=np.int64, count=len(histories))
    if lengths.sum():
        rows = np.repeat(np.arange(len(histories)), lengths)
        scores[rows, np.concatenate(histories).astype(np.int64)] = -np.inf


def _ranked(scores: np.ndarray, histories: Sequence[np.ndarray], k: int) -> np.ndarray:
    if np.isnan(scores).any():
        raise DivergedError(
            "the model scored items as NaN: training diverged (lower train.lr, keep "
            "train.grad_clip on, or try train.amp = 'off')"
        )
    mask_seen(scores, histories)
    return M.top_k(scores, k)


def evaluate(
    score_fn: ScoreFn,
    eval_set: EvalSet,
    dataset: Dataset,
    ks: Sequence[int] = (10, 20),
    batch_size: int = 256,
    train_popularity: np.ndarray | None = None,
) -> dict[str, float]:
    """Full-ranking metrics over the rows of eval_set that have at least one target.

    train_popularity: int counts [n_items + 1] from the training split (novelty, serendipity);
    defaults to dataset.item_popularity(), which also counts held-out interactions.
    """
    n = dataset.n_items
    ks = sorted(set(ks))
    if not ks or ks[0] < 1 or batch_size < 1:
        raise ValueError(f"need ks >= 1 and batch_size >= 1 (got ks={ks}, batch_size={batch_size})")
    kmax = ks[-1]
    pop = dataset.item_popularity() if train_popularity is None else np.asarray(train_popularity)
    if pop.shape != (n + 1,):
        raise ValueError(f"train_popularity must have shape ({n + 1},), got {pop.shape}")
    info = M.self_information(pop)
    pop_order = M.popularity_order(pop)
    genres = genre_matrix(dataset)
    rows = [r for r, t in enumerate(eval_set.targets) if len(t) > 0]

    per_row = ("ndcg", "hr", "mrr", "recall", "diversity", "novelty", "serendipity")
    sums = {f"{m}@{k}": 0.0 for m in per_row for k in ks}
    counts = dict.fromkeys(sums, 0)
    exposure = {k: np.zeros(n + 1, dtype=np.int64) for k in ks}

    def add(name: str, values: np.ndarray, valid: np.ndarray | None = None) -> None:
        chosen = values if valid is None else values[valid]
        sums[name] += float(chosen.sum())
        counts[name] += len(chosen)

    for start in range(0, len(rows), batch_size):
        idx = rows[start : start + batch_size]
        users = np.asarray(eval_set.users)[idx].astype(np.int64)
        histories = [np.asarray(eval_set.histories[r]) for r in idx]
        targets = [np.asarray(eval_set.targets[r], dtype=np.int64) for r in idx]
        raw = np.asarray(score_fn(users, histories))
        # float64 stays float64: casting down would turn close scores into ties
        scores = np.array(raw, dtype=np.result_type(raw.dtype, np.float32), copy=True)
        del raw
        if scores.shape != (len(idx), n + 1):
            want = (len(idx), n + 1)
            raise ValueError(f"score_fn must return shape {want}, got {scores.shape}")
        lists = _ranked(scores, histories, kmax)
        for name, values in M.tie_aware_accuracy(scores, targets, ks).items():
            add(name, values)
        del scores
        expected = M.first_unseen(pop_order, histories, kmax)  # the popularity recommender
        rel = M.relevance(lists, targets)  # hits of the deterministic lists (serendipity)
        for k in ks:
            top = lists[:, :k]
            add(f"diversity@{k}", *M.intra_list_diversity(top, genres))
            add(f"novelty@{k}", *M.novelty(top, info))
            add(f"serendipity@{k}", M.serendipity(top, rel[:, :k], expected[:, :k]))
            exposure[k] += np.bincount(top.ravel(), minlength=n + 1)

    out = {name: (sums[name] / counts[name] if counts[name] else float("nan")) for name in sums}
    for k in ks:
        real = exposure[k][1:]
        out[f"coverage@{k}"] = float((real > 0).sum() / n) if n else 0.0
        out[f"gini@{k}"] = M.gini(real)
    return dict(sorted(out.items()))
