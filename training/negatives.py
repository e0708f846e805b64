"""Negatives for retrieval training: in-batch softmax with logQ correction, and hard negatives
mined from the model's own top-scored items.

In-batch: each position's candidates are the batch's distinct target items, minus the other
targets of its own row (the same user's items: a positive of theirs is no negative); an item's
chance of being a candidate grows with its popularity, so its logit is corrected by -log Q(item)
(Yi et al., 2019, "Sampling-bias-corrected neural modeling"), with Q the probability that the
item is among the batch's distinct targets: 1 - (1 - p)^N for N targets drawn with the item's
share p of training interactions (N * p alone over-corrects popular items, which are candidates
in nearly every batch however often they are drawn). Hard negatives (per sequence, no logQ:
chosen by score, not by popularity) join the candidates; entries 0 (none mined) or equal to the
position's target are masked out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from training.losses import smoothed_nll

ItemVectors = Callable[[torch.Tensor], torch.Tensor]  # item ids (...) -> vectors (..., D)


def log_q(item_counts: np.ndarray) -> torch.Tensor:
    """log of each item's share of training interactions, float32 [n_items + 1] (unseen items
    count as seen once; row 0 is never a candidate)."""
    counts = np.maximum(np.asarray(item_counts, dtype=np.float64), 1.0)
    return torch.as_tensor(np.log(counts / counts[1:].sum()), dtype=torch.float32)


def inclusion_log_q(log_share: torch.Tensor, draws: int) -> torch.Tensor:
    """log P(item among `draws` targets) = log(1 - (1 - p)^draws) for items of share p = exp
    (`log_share`), computed stably (log of -expm1(draws * log1p(-p)))."""
    p = log_share.exp().clamp(max=1.0 - 1e-7)
    return torch.log(-torch.expm1(draws * torch.log1p(-p)))


def in_batch_softmax(
    queries: torch.Tensor,
    targets: torch.Tensor,
    item_vectors: ItemVectors,
    log_q: torch.Tensor | None,
    temperature: float,
    hard: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Mean softmax cross-entropy of every target against the batch's other distinct targets
    that are not its row's (logQ-corrected) and its row's hard negatives. queries (B, L, D);
    targets (B, L) in 0..n_items, 0 = no target at that position; hard (B, H) item ids per row
    (shared by the row's positions: one item-tower pass per row, not per position) or None."""
    mask = targets != 0
    q, t = queries[mask], targets[mask]  # (N, D), (N,)
    candidates, label = torch.unique(t, return_inverse=True)  # (U,), (N,)
    scores = q @ item_vectors(candidates).T / temperature  # (N, U)
    if log_q is not None:
        scores = scores - inclusion_log_q(log_q.to(scores.device)[candidates], len(t))[None, :]
    positive = scores.gather(1, label[:, None])  # (N, 1)
    row = mask.nonzero()[:, 0]  # (N,) the row of each position
    in_row = torch.zeros(targets.shape[0], len(candidates), dtype=torch.bool, device=t.device)
    in_row[row, label] = True  # (B, U): the items each row holds as targets
    others = ~in_row[row]  # neither the target's own column nor the row's other items
    logits, valid = [positive, scores], [torch.ones_like(positive, dtype=torch.bool), others]
    if hard is not None and hard.shape[1] > 0:
        vectors = item_vectors(hard)  # (B, H, D)
        hard_scores = queries @ vectors.transpose(1, 2) / temperature  # (B, L, H)
        ids = hard[:, None, :].expand(-1, targets.shape[1], -1)[mask]  # (N, H)
        logits.append(hard_scores[mask])
        valid.append((ids != 0) & (ids != t[:, None]))
    return smoothed_nll(torch.cat(logits, dim=1), torch.cat(valid, dim=1), label_smoothing)


def hard_count(hard_ratio: float, n_in_batch: int, pool: int) -> int:
    """Hard negatives per row so they make up `hard_ratio` of its negatives (at most `pool`)."""
    if hard_ratio <= 0.0:
        return 0
    return min(pool, int(np.ceil(hard_ratio / (1.0 - hard_ratio) * max(1, n_in_batch - 1))))


def mine_hard_negatives(
    queries: torch.Tensor,
    items: torch.Tensor,
    positives: Sequence[np.ndarray],
    pool: int,
    skip: int,
    chunk: int = 1024,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Per query, the items ranked skip+1 .. skip+pool by score once the query's positives are
    removed: (int64 [Q, pool], 0 where fewer items remain; statistics). queries (Q, D), items
    (n_items + 1, D) with row 0 padding (never mined); positives: item ids per query."""
    n = items.shape[0]
    k = min(skip + pool, n - 1)
    mined, ranks, scores_kept, pos_scores, pos_in_top = [], [], [], [], []
    for start in range(0, len(queries), chunk):
        q = queries[start : start + chunk]
        scores = (q @ items.T).float()  # (C, n)
        scores[:, 0] = float("-inf")
        is_pos = torch.zeros_like(scores, dtype=torch.bool)
        for row, items_of in enumerate(positives[start : start + chunk]):
            is_pos[row, torch.as_tensor(np.asarray(items_of, dtype=np.int64))] = True
        is_pos[:, 0] = False
        raw_top = scores.topk(k, dim=1).indices
        pos_in_top.append(is_pos.gather(1, raw_top).float().mean(dim=1))
        pos_scores.append(
            torch.where(is_pos, scores, 0.0).sum(dim=1) / is_pos.sum(dim=1).clamp_min(1)
        )
        filtered = scores.masked_fill(is_pos, float("-inf"))
        top_scores, top = filtered.topk(k, dim=1)
        top_scores, top = top_scores[:, skip:], top[:, skip:]
        top = top.masked_fill(~torch.isfinite(top_scores), 0)
        order = scores.argsort(dim=1, descending=True)
        rank = torch.empty_like(order).scatter_(1, order, torch.arange(n).expand_as(order))
        kept = top != 0
        ranks.append((rank.gather(1, top) + 1).float()[kept])
        scores_kept.append(top_scores[kept])
        mined.append(torch.nn.functional.pad(top, (0, pool - top.shape[1])))
    all_ranks, all_scores = torch.cat(ranks), torch.cat(scores_kept)
    stats = {
        "queries": len(queries),
        "per_query": pool,
        "mean_rank": float(all_ranks.mean()) if len(all_ranks) else float("nan"),
        "mean_score": float(all_scores.mean()) if len(all_scores) else float("nan"),
        "positive_mean_score": float(torch.cat(pos_scores).mean()),
        "positives_filtered_frac": float(torch.cat(pos_in_top).mean()),
    }
    return torch.cat(mined), stats
