"""Scoring and top-k for one user (blocking; the recommender runs it in a worker thread).

Strategy by history length n: 0 -> features when the request gave user features and the bundle
has feature-only queries, else popular; 1..n_content -> content; < n_full -> blend of
content and collaborative scores with alpha = min(n / n_full, 1); otherwise sequential. The
collaborative part of a blend is the encoder's dot product divided by |query| * max item norm
(same ranking, bounded to [-1, 1] like the content cosine), so explain and recommend agree.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from service.bundle import Bundle
from service.index import ItemIndex

Strategy = Literal["sequential", "blend", "content", "features", "popular"]
FETCH_GROWTH = 4
EXACT_BLEND_MAX_ITEMS = 50_000  # blends over catalogues this small score every item exactly
NOT_FOUND = -1e38  # FAISS scores a missing result -FLT_MAX


@dataclass(frozen=True)
class Query:
    k: int
    exclude_seen: bool
    genres: tuple[str, ...]
    features: tuple[int, ...] | None = None  # user feature codes (bundle.features), if given


@dataclass(frozen=True)
class Ranked:
    strategy: Strategy
    ids: np.ndarray  # int64 internal ids, best first
    scores: np.ndarray  # float32
    encoder_seconds: float
    search_seconds: float


def choose_strategy(n: int, n_full: int, n_content: int, features: bool = False) -> Strategy:
    if n == 0:
        return "features" if features else "popular"
    if n <= n_content:
        return "content"
    if n < n_full:
        return "blend"
    return "sequential"


class Scorer:
    """Scores of any items for one (bundle, history, strategy)."""

    def __init__(
        self,
        bundle: Bundle,
        history: np.ndarray,
        strategy: Strategy,
        n_full: int,
        features: tuple[int, ...] | None = None,
    ):
        self.bundle, self.history, self.strategy = bundle, history, strategy
        self.alpha = {"sequential": 1.0, "features": 1.0, "content": 0.0, "popular": 0.0}.get(
            strategy, min(len(history) / n_full, 1.0)
        )
        self.encoder_seconds = self.search_seconds = 0.0
        self.query: np.ndarray | None = None
        self.attention: np.ndarray | None = None
        self.content_query: np.ndarray | None = None
        if strategy == "features":
            if bundle.features is None or features is None:
                raise ValueError("the features strategy needs feature codes and their table")
            self.query = bundle.features.query(features)
        if strategy in ("sequential", "blend"):
            started = time.perf_counter()
            out = bundle.encoder.encode([history])
            self.encoder_seconds = time.perf_counter() - started
            self.query = out.query[0]
            self.attention = out.attention[0] if out.attention is not None else None
        if strategy in ("blend", "content"):
            mean = bundle.content_embeddings[history].mean(axis=0)
            norm = float(np.linalg.norm(mean))
            self.content_query = (mean / norm if norm > 0 else mean).astype(np.float32)

    def _collab_query(self) -> np.ndarray:
        assert self.query is not None
        if self.strategy in ("sequential", "features"):
            return self.query
        scale = float(np.linalg.norm(self.query)) * self.bundle.max_item_norm
        return self.query / scale if scale > 0 else self.query

    def score(self, ids: np.ndarray) -> np.ndarray:
        """float32 scores of internal ids (higher is better)."""
        b = self.bundle
        if self.strategy == "popular":
            top = max(int(b.catalog.popularity.max(initial=0)), 1)
            return np.asarray(b.catalog.popularity[ids] / top, dtype=np.float32)
        total = np.zeros(len(ids), dtype=np.float32)
        if self.alpha > 0:
            total += self.alpha * (b.item_embeddings[ids] @ self._collab_query())
        if self.alpha < 1:
            assert self.content_query is not None
            total += (1 - self.alpha) * (b.content_embeddings[ids] @ self.content_query)
        return total

    def score_all(self) -> np.ndarray:
        """float32 scores of every row (row 0 included; callers mask it)."""
        b = self.bundle
        if self.strategy == "popular":
            top = max(int(b.catalog.popularity.max(initial=0)), 1)
            return np.asarray(b.catalog.popularity / top, dtype=np.float32)
        total = np.zeros(b.n_items + 1, dtype=np.float32)
        if self.alpha > 0:
            total += self.alpha * (b.item_embeddings @ self._collab_query())
        if self.alpha < 1:
            assert self.content_query is not None
            total += (1 - self.alpha) * (b.content_embeddings @ self.content_query)
        return total

    def candidates(self, fetch: int, allowed: np.ndarray | None) -> tuple[np.ndarray, float]:
        """Allowed ids worth scoring: each part's index top-`fetch` among the `allowed` items
        (bool [n + 1], None = all), filtered inside FAISS where the index can (popular: the
        most popular allowed items). An index that cannot filter returns its top-`fetch`
        minus the disallowed ones, so callers grow `fetch` until enough remain.

        Also the best score an item outside the candidates can have: for a blend, alpha times
        the collaborative list's last score plus (1 - alpha) times the content list's (an item
        in neither list scores at most that; one in either is a candidate), -inf for a list
        that holds every allowed item; -inf for one list alone (its top is the answer)."""
        b = self.bundle
        if self.strategy == "popular":
            order = b.catalog.popular_order
            return (order if allowed is None else order[allowed[order]])[:fetch], -np.inf
        started = time.perf_counter()
        parts, bound = [], 0.0
        if self.alpha > 0:
            ids, last = index_candidates(b.index, self._collab_query(), fetch, allowed)
            parts.append(ids)
            bound += self.alpha * last
        if self.alpha < 1:
            assert self.content_query is not None
            ids, last = index_candidates(b.content_index, self.content_query, fetch, allowed)
            parts.append(ids)
            bound += (1 - self.alpha) * last
        self.search_seconds += time.perf_counter() - started
        if len(parts) == 1:
            return parts[0], -np.inf
        return np.unique(np.concatenate(parts)), bound


def index_candidates(
    index: ItemIndex, query: np.ndarray, fetch: int, allowed: np.ndarray | None
) -> tuple[np.ndarray, float]:
    """One index's allowed top-`fetch` ids and its last score (the best any item it did not
    return can have), -inf when it came back with fewer than `fetch` results (it ran out)."""
    scores, ids = index.search(query[None, :], fetch, allowed)
    last = float(scores[0, -1])
    full = scores.shape[1] >= fetch and np.isfinite(last) and last > NOT_FOUND
    return ids[0][ids[0] > 0], (last if full else -np.inf)


def grow_candidates(
    candidates: Callable[[int], tuple[np.ndarray, float]],
    score: Callable[[np.ndarray], np.ndarray],
    k: int,
    n: int,
    fetch: int,
) -> tuple[np.ndarray, np.ndarray] | None:
    """The best k (ids, scores) of `candidates(fetch)` (ids and the best score an item outside
    them can have), fetching FETCH_GROWTH times more until the k-th is at least that bound or
    the whole catalogue of `n` items was fetched. None when even that gave fewer than k (an
    approximate index came back short): the caller scans exactly."""
    found = None
    while True:
        ids, bound = candidates(min(fetch, n))
        if len(ids) >= k:
            found = _top(ids, score(ids), k)
            if found[1][-1] >= bound or fetch >= n:  # nothing outside can beat the k-th
                return found
        elif fetch >= n:
            return found
        fetch *= FETCH_GROWTH


def _top(ids: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best (ties: lower id first)."""
    order = np.lexsort((ids, -scores))[:k]
    return ids[order], scores[order]


def _exact(scorer: Scorer, allowed: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k over every allowed item, scored exactly."""
    scores = scorer.score_all()
    ids = np.flatnonzero(allowed).astype(np.int64)
    scores = scores[ids]
    if len(ids) > 4 * k:  # keep the k best (and ties at the cut) before the exact sort
        cut = np.partition(scores, len(scores) - k)[len(scores) - k]
        keep = scores >= cut
        ids, scores = ids[keep], scores[keep]
    return _top(ids, scores, k)


def rank(bundle: Bundle, history: np.ndarray, query: Query, n_full: int, n_content: int) -> Ranked:
    """Top `query.k` items for a user with `history` (internal ids, chronological)."""
    strategy = choose_strategy(len(history), n_full, n_content, query.features is not None)
    scorer = Scorer(bundle, history, strategy, n_full, query.features)
    n = bundle.n_items
    k = min(query.k, n)
    seen = np.unique(history) if query.exclude_seen and len(history) else history[:0]
    allowed: np.ndarray | None = None  # None: every item may be returned
    if query.genres or len(seen):
        allowed = bundle.catalog.genre_mask(query.genres)  # a fresh array, ours to change
        allowed[seen] = False
    # over-fetch only where an index filters after the search, not inside FAISS
    filters = bundle.index.filters and bundle.content_index.filters
    fetch = k
    if allowed is not None and not filters:
        share = max(float(allowed.sum()) / max(n, 1), 1e-3)
        fetch = int((k + len(seen)) / share) + k
    exhaustive = strategy in ("blend", "content") and n <= EXACT_BLEND_MAX_ITEMS
    found = None
    if not exhaustive:
        found = grow_candidates(lambda f: scorer.candidates(f, allowed), scorer.score, k, n, fetch)
    if exhaustive or found is None:  # small blend, or an approximate index came back short
        mask = allowed if allowed is not None else bundle.catalog.all_items_mask()
        top_ids, top_scores = _exact(scorer, mask, k)
    else:
        top_ids, top_scores = found
    top_scores = np.nan_to_num(top_scores, nan=0.0, posinf=0.0, neginf=0.0)
    return Ranked(strategy, top_ids, top_scores, scorer.encoder_seconds, scorer.search_seconds)
