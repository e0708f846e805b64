"""Why an item would be recommended to a user: the strategy, the history items that contributed
most, the genres the item shares with the history, and the score `recommend` would give it.

`because` weights: sequential = the encoder's attention of the final position over each history
item times that item's embedding cosine with the explained item (attention alone would name the
same items whatever is explained; only items pointing the item's way count); content = content
cosine similarity to the item; blend = alpha * embedding cosine + (1 - alpha) * content cosine
(alpha as in ranking); popular and features = none (no history)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.bundle import Bundle
from service.ranking import Scorer, Strategy, choose_strategy

BECAUSE_MAX = 5
REASONS: dict[str, str] = {
    "popular": "no history for this user: ranked by popularity within the catalogue",
    "content": "short history: ranked by content similarity (genres, tags, title) to it",
    "blend": "short history: content similarity blended with the collaborative model",
    "sequential": "ranked by the sequential model over the user's recent history",
    "features": "no history for this user: ranked by the model's query for the given user features",
}


@dataclass(frozen=True)
class Explanation:
    item: int
    strategy: Strategy
    score: float
    because: list[tuple[int, float]]  # (internal id, weight), strongest first
    shared_genres: list[str]
    reason: str


def _cosine_rows(matrix: np.ndarray, rows: np.ndarray, item: int) -> np.ndarray:
    target = matrix[item]
    norms = np.linalg.norm(matrix[rows], axis=1) * float(np.linalg.norm(target))
    dots = matrix[rows] @ target
    return np.asarray(np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0))


def _weights(scorer: Scorer, bundle: Bundle, tail: np.ndarray, item: int) -> np.ndarray:
    if scorer.strategy == "sequential" and scorer.attention is not None:
        attention = scorer.attention[-len(tail) :] if len(tail) else scorer.attention[:0]
        similarity = np.maximum(_cosine_rows(bundle.item_embeddings, tail, item), 0.0)
        return np.asarray(attention * similarity, dtype=np.float32)
    content = _cosine_rows(bundle.content_embeddings, tail, item)
    if scorer.strategy == "content":
        return content
    collab = _cosine_rows(bundle.item_embeddings, tail, item)
    return scorer.alpha * collab + (1 - scorer.alpha) * content


def explain(
    bundle: Bundle,
    history: np.ndarray,
    item: int,
    n_full: int,
    n_content: int,
    features: tuple[int, ...] | None = None,
) -> Explanation:
    """Explain internal `item` for a user with `history` (internal ids, chronological) and, for
    a user without one, the feature codes the request gave (bundle.features)."""
    strategy = choose_strategy(len(history), n_full, n_content, features is not None)
    scorer = Scorer(bundle, history, strategy, n_full, features)
    score = float(scorer.score(np.asarray([item], dtype=np.int64))[0])
    because: list[tuple[int, float]] = []
    if strategy not in ("popular", "features"):
        tail = history[-bundle.encoder.max_len :] if strategy == "sequential" else history
        weights = _weights(scorer, bundle, tail, item)
        totals: dict[int, float] = {}
        for hist_item, weight in zip(tail.tolist(), weights.tolist(), strict=True):
            totals[hist_item] = totals.get(hist_item, 0.0) + float(weight)
        ranked = sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))
        # the item itself (already in the history) explains nothing about itself
        because = [(i, w) for i, w in ranked if w > 0 and i != item][:BECAUSE_MAX]
    history_genres = {g for i in np.unique(history).tolist() for g in bundle.catalog.genres[i]}
    shared = [g for g in bundle.catalog.genres[item] if g in history_genres]
    return Explanation(item, strategy, score, because, shared, REASONS[strategy])
