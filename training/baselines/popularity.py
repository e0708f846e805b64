"""Most-popular baseline: every user gets the items ranked by training interaction count."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from training.baselines.base import item_counts


class Popularity:
    """score(u, i) = number of training interactions with item i (ties: lower index first)."""

    grid: ClassVar[dict[str, tuple[Any, ...]]] = {}

    def __init__(self) -> None:
        self.counts: np.ndarray | None = None

    def fit(self, train: Sequence[np.ndarray], n_items: int) -> Popularity:
        self.counts = item_counts(train, n_items).astype(np.float32)
        return self

    def score(self, users: np.ndarray, histories: list[np.ndarray]) -> np.ndarray:
        if self.counts is None:
            raise RuntimeError("Popularity.score called before fit")
        return np.tile(self.counts, (len(histories), 1))

    def params(self) -> dict[str, Any]:
        return {}
