"""Pure ranking-metric math on one batch of rows (no I/O, no model, no chunking).

Conventions (DESIGN 6):
- Top-K lists (top_k; the beyond-accuracy metrics: coverage, gini, diversity, novelty,
  serendipity) use a total order: higher score first, ties broken by the lower item index.
- Accuracy metrics (NDCG@K, HR@K, MRR@K, recall@K; tie_aware_accuracy) do not depend on a
  tie-break: each is the expectation over a uniformly random order of the items that share a
  score (McSherry & Najork, ECIR 2008). A target with `better` rankable items strictly above it
  and `tied` other rankable items at its score has a rank uniform over better+1 ..
  better+tied+1. Item ids correlate with age and popularity, so breaking ties by index would
  favour some targets. Without ties the values equal those of the deterministic list.
- An item scored -inf (seen items, the padding column) is never recommended and never counts as
  better than or tied with a target; a target scored -inf (or PAD) scores 0. A row with fewer
  than K rankable items gets a shorter list, padded with item 0 (padding), which is never
  relevant and never counted as exposure.
- Multi-target rows (temporal split; targets distinct): recall@K = hits / |targets|, HR@K = 1 if
  any hit, NDCG@K uses the ideal DCG of min(K, |targets|) hits, MRR@K = 1 / rank of the first
  hit; all exact expectations under the random order of ties (HR and MRR from the
  hypergeometric law of the first target in the best-scored group holding a target).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PAD = 0


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Item indices of the k best columns of every row, best first, int64 [B, k].

    Deterministic: higher score first, equal scores by ascending item index. Entries whose score
    is -inf are replaced by PAD. Cost O(B * n) time and memory (argpartition, no full sort).
    """
    b, n = scores.shape
    k = min(k, n)
    if k <= 0 or b == 0:
        return np.zeros((b, max(k, 0)), dtype=np.int64)
    # k-th best value per row; everything strictly better is in, ties at the threshold by index.
    kth = -np.partition(-scores, k - 1, axis=1)[:, k - 1]
    above = scores > kth[:, None]
    at = scores == kth[:, None]
    need = k - above.sum(axis=1)
    crowded = np.flatnonzero(at.sum(axis=1) > need)  # rows where the threshold tie spills over
    if crowded.size:
        rank_at = np.cumsum(at[crowded], axis=1, dtype=np.int32)
        at[crowded] &= rank_at <= need[crowded, None]
    chosen = np.nonzero(above | at)[1].reshape(b, k)  # row-major: ascending index within a row
    chosen_scores = np.take_along_axis(scores, chosen, axis=1)
    order = np.argsort(-chosen_scores, axis=1, kind="stable")  # stable keeps index order on ties
    lists = np.take_along_axis(chosen, order, axis=1)
    lists[np.take_along_axis(chosen_scores, order, axis=1) == -np.inf] = PAD
    return lists


def popularity_order(popularity: np.ndarray) -> np.ndarray:
    """Real items (1..n) by popularity descending, ties by ascending index, int64 [n]."""
    items = np.arange(1, len(popularity), dtype=np.int64)
    return items[np.argsort(-np.asarray(popularity)[1:], kind="stable")]


def first_unseen(order: np.ndarray, histories: list[np.ndarray], k: int) -> np.ndarray:
    """Per row, the first k items of `order` not in the row's history, PAD-filled, int64 [B, k].

    Equals top_k over one shared score vector with each history masked, in O(B * (k + L)) for
    L the longest history instead of O(B * n).
    """
    b = len(histories)
    lengths = np.fromiter((len(h) for h in histories), dtype=np.int64, count=b)
    depth = min(len(order), k + int(lengths.max(initial=0)))
    cand = np.concatenate(
        [np.broadcast_to(order[:depth], (b, depth)), np.full((b, k), PAD, dtype=np.int64)], axis=1
    )
    if lengths.sum():
        width = np.int64(
            max(int(order.max(initial=0)), *(int(h.max()) for h in histories if len(h))) + 1
        )
        hist_keys = np.repeat(np.arange(b, dtype=np.int64), lengths) * width + np.concatenate(
            histories
        ).astype(np.int64)
        seen = np.isin(np.arange(b, dtype=np.int64)[:, None] * width + cand, hist_keys)
        seen[:, depth:] = False
    else:
        seen = np.zeros(cand.shape, dtype=bool)
    keep = np.argsort(seen, axis=1, kind="stable")[:, :k]  # unseen first, in order
    return np.take_along_axis(cand, keep, axis=1)


def relevance(lists: np.ndarray, targets: list[np.ndarray]) -> np.ndarray:
    """bool [B, K]: whether lists[r, j] is one of row r's targets (PAD never is)."""
    b, k = lists.shape
    lengths = np.fromiter((len(t) for t in targets), dtype=np.int64, count=b)
    if b == 0 or lengths.sum() == 0:
        return np.zeros((b, k), dtype=bool)
    top_target = max(int(t.max()) for t in targets if len(t))
    width = np.int64(max(int(lists.max(initial=0)), top_target) + 1)
    target_keys = np.repeat(np.arange(b, dtype=np.int64), lengths) * width + np.concatenate(targets)
    list_keys = np.arange(b, dtype=np.int64)[:, None] * width + lists
    return np.asarray(np.isin(list_keys, target_keys) & (lists != PAD), dtype=bool)


def tie_aware_accuracy(
    scores: np.ndarray, targets: Sequence[np.ndarray], ks: Sequence[int]
) -> dict[str, np.ndarray]:
    """Per-row expected ndcg@k, hr@k, mrr@k and recall@k (float64 [B] each, keys like "hr@10")
    under a uniformly random order of equal scores (module docstring).

    scores: [B, n] with seen items and the padding column already -inf (never NaN); targets: per
    row, distinct item indices. A target's `better` and `tied` counts come from the kmax best
    values of its row (anything better than a target that can still reach the top kmax is among
    them) plus, per row, the number of items equal to the kmax-th best value: O(B * n) for the
    partition and that count, O(T * kmax) for the T targets of the batch, O(B * kmax) for HR/MRR.
    """
    b, n = scores.shape
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError(f"need ks >= 1 (got {ks})")
    kmax = ks[-1]
    lengths = np.fromiter((len(t) for t in targets), dtype=np.int64, count=b)
    total = int(lengths.sum())
    out = {f"{m}@{k}": np.zeros(b) for m in ("ndcg", "hr", "mrr", "recall") for k in ks}
    if b == 0 or n == 0 or total == 0:
        return out
    rows = np.repeat(np.arange(b), lengths)
    items = np.concatenate([np.asarray(t, dtype=np.int64) for t in targets])
    s = scores[rows, items]
    ok = (items != PAD) & (s > -np.inf)  # rankable targets

    depth = min(kmax, n)
    best = -np.sort(np.partition(-scores, depth - 1, axis=1)[:, :depth], axis=1)  # [B, depth] desc
    kth = best[:, -1]
    at_kth = (scores == kth[:, None]).sum(axis=1)  # group size of the kmax-th value
    reach = ok & (s >= kth[rows])  # targets that can land in the top kmax
    # better: rankable items strictly above; size: the target's group (itself + tied items).
    # Targets that cannot reach the top kmax get better = kmax, size = 1: they never count.
    better = np.full(total, kmax, dtype=np.int64)
    size = np.ones(total, dtype=np.int64)
    if reach.any():
        top, sr = best[rows[reach]], s[reach][:, None]
        better[reach] = (top > sr).sum(axis=1)
        size[reach] = np.where(
            sr[:, 0] > kth[rows[reach]], (top == sr).sum(axis=1), at_kth[rows[reach]]
        )

    # Linear metrics (recall, NDCG): each target's rank is uniform over its group's positions.
    disc = 1.0 / np.log2(np.arange(2, kmax + 2))
    cum = np.concatenate([[0.0], np.cumsum(disc)])  # cum[j] = sum of the first j discounts
    disc0 = np.concatenate([disc, [0.0]])
    for k in ks:
        lo = np.minimum(better, k)
        inside = np.clip(k - better, 0, size)  # how many of the group's positions are <= k
        share = inside / size
        # exact single discount for an untied target (bit-identical to the list-based ndcg)
        gain = np.where(
            size == 1, np.where(inside > 0, disc0[lo], 0.0), (cum[lo + inside] - cum[lo]) / size
        )
        hits = np.bincount(rows, weights=share, minlength=b)
        dcg = np.bincount(rows, weights=gain, minlength=b)
        ideal = cum[np.minimum(lengths, k)]
        out[f"recall@{k}"] = np.divide(hits, lengths, out=np.zeros(b), where=lengths > 0)
        out[f"ndcg@{k}"] = np.divide(dcg, ideal, out=np.zeros(b), where=ideal > 0)

    # HR and MRR depend on the first hit only: it lies in the best-scored group holding a target
    # (g items, m of them targets, `lead` items above). With P(first > j) = C(g-m, j) / C(g, j),
    # HR@k = 1 - P(first > k - lead) and MRR@k = sum_j P(first = j) / (lead + j), j <= k - lead.
    top_s = np.full(b, -np.inf)
    np.maximum.at(top_s, rows[ok], s[ok])
    first = ok & (s == top_s[rows])
    m = np.bincount(rows[first], minlength=b)
    lead = np.full(b, kmax, dtype=np.int64)  # rows without a rankable target never hit
    g = np.ones(b, dtype=np.int64)
    lead[rows[first]] = better[first]
    g[rows[first]] = size[first]
    survive = np.ones((b, kmax + 1))  # survive[:, j] = P(first hit's position in group > j)
    for j in range(1, kmax + 1):
        left = np.maximum(g - m - (j - 1), 0) / np.maximum(g - (j - 1), 1)
        survive[:, j] = survive[:, j - 1] * left
    term = (survive[:, :-1] - survive[:, 1:]) / (lead[:, None] + np.arange(1, kmax + 1))
    mrr_cum = np.concatenate([np.zeros((b, 1)), np.cumsum(term, axis=1)], axis=1)
    r = np.arange(b)
    for k in ks:
        c = np.clip(k - lead, 0, g)
        c = np.minimum(c, kmax)
        out[f"hr@{k}"] = 1.0 - survive[r, c]
        out[f"mrr@{k}"] = mrr_cum[r, c]
    return out


def ndcg(rel: np.ndarray, n_targets: np.ndarray, k: int) -> np.ndarray:
    """Per-row NDCG@k of one fixed list, float64 [B]; ideal DCG over min(k, |targets|) hits.
    (ndcg / hit_rate / recall / mrr score the deterministic top_k list; the evaluator reports
    tie_aware_accuracy, which equals them when no relevant score ties.)"""
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = rel[:, :k] @ discounts[: rel[:, :k].shape[1]]
    ideal = np.concatenate([[0.0], np.cumsum(discounts)])[np.minimum(n_targets, k)]
    return np.asarray(np.divide(dcg, ideal, out=np.zeros_like(dcg), where=ideal > 0))


def hit_rate(rel: np.ndarray, k: int) -> np.ndarray:
    """Per-row HR@k: 1 if any target is in the top k."""
    return np.asarray(rel[:, :k].any(axis=1), dtype=np.float64)


def recall(rel: np.ndarray, n_targets: np.ndarray, k: int) -> np.ndarray:
    """Per-row Recall@k = hits / |targets| (equals HR@k for one target)."""
    hits = rel[:, :k].sum(axis=1).astype(np.float64)
    return np.asarray(np.divide(hits, n_targets, out=np.zeros_like(hits), where=n_targets > 0))


def mrr(rel: np.ndarray, k: int) -> np.ndarray:
    """Per-row MRR@k: 1 / (1-based rank of the first hit), 0 without a hit in the top k."""
    top = rel[:, :k]
    first = top.argmax(axis=1)
    return np.asarray(np.where(top.any(axis=1), 1.0 / (first + 1.0), 0.0), dtype=np.float64)


def gini(exposure: np.ndarray) -> float:
    """Gini coefficient of exposure counts over the whole catalogue (0 = equal, ~1 = one item)."""
    x = np.sort(np.asarray(exposure, dtype=np.float64))
    n, total = len(x), x.sum()
    if n == 0 or total == 0:
        return 0.0
    ranks = np.arange(1, n + 1)
    return float(((2 * ranks - n - 1) * x).sum() / (n * total))


def intra_list_diversity(lists: np.ndarray, genres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row 1 - mean pairwise genre Jaccard; genres is bool [n_items + 1, G].

    Pairs where either item has no genres (or is PAD) are left out. Returns (diversity [B],
    valid [B]): valid is False for a row with no pair left, whose diversity is 0 and must be
    skipped when averaging.
    """
    g = genres[lists].astype(np.float32)  # [B, K, G]
    inter = g @ g.transpose(0, 2, 1)  # [B, K, K]
    size = g.sum(axis=2)  # [B, K]
    union = size[:, :, None] + size[:, None, :] - inter
    k = lists.shape[1]
    upper = np.triu(np.ones((k, k), dtype=bool), 1)[None]
    pair = upper & (size[:, :, None] > 0) & (size[:, None, :] > 0)
    jaccard = np.divide(inter, union, out=np.zeros_like(inter), where=pair)
    n_pairs = pair.sum(axis=(1, 2))
    total = jaccard.sum(axis=(1, 2), dtype=np.float64)
    mean_j = np.divide(total, n_pairs, out=np.zeros(len(lists)), where=n_pairs > 0)
    return np.where(n_pairs > 0, 1.0 - mean_j, 0.0), n_pairs > 0


def self_information(train_popularity: np.ndarray) -> np.ndarray:
    """-log2 p(i) per item, p(i) = (c_i + 1) / (sum c + n_items): Laplace-smoothed share of
    training interactions (finite for items never seen in training). Index 0 (PAD) -> 0."""
    counts = np.asarray(train_popularity, dtype=np.float64).copy()
    counts[PAD] = 0.0
    n_items = len(counts) - 1
    info = np.asarray(-np.log2((counts + 1.0) / (counts.sum() + n_items)), dtype=np.float64)
    info[PAD] = 0.0
    return info


def novelty(lists: np.ndarray, info: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row mean self-information of the recommended (non-PAD) items; (values, valid)."""
    real = lists != PAD
    n = real.sum(axis=1)
    total = np.where(real, info[lists], 0.0).sum(axis=1)
    return np.divide(total, n, out=np.zeros(len(lists)), where=n > 0), n > 0


def serendipity(lists: np.ndarray, rel: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """Per-row serendipity@K (Ge et al. 2010): |relevant items in the list that the primitive
    recommender's list `expected` [B, K] does not contain| / K."""
    k = lists.shape[1]
    unexpected = ~(lists[:, :, None] == expected[:, None, :]).any(axis=2)
    return np.asarray((rel & unexpected).sum(axis=1) / float(k), dtype=np.float64)
