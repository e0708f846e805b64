"""ItemKNN: cosine item-item similarity on the binary user x item matrix, top-k neighbours.

score(u, j) = sum of sim(i, j) over the items i in u's history among j's k most similar items,
sim(i, j) = |users(i) & users(j)| / (sqrt(|users(i)|) * sqrt(|users(j)|) + shrink); ties among
neighbours are broken by the lower item index.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from training.baselines.base import binary_matrix
from training.errors import ConfigError
from training.metrics import top_k

BLOCK_BYTES = 64 * 2**20  # dense similarity block held at a time


class ItemKNN:
    grid: ClassVar[dict[str, tuple[Any, ...]]] = {"k": (10, 25, 50, 100, 200, 400)}

    def __init__(self, k: int = 100, shrink: float = 0.0) -> None:
        if k < 1 or shrink < 0:
            raise ConfigError(f"itemknn needs k >= 1 and shrink >= 0 (got k={k}, shrink={shrink})")
        self.k, self.shrink = k, shrink
        self.weights: sp.csr_matrix | None = None  # [n+1, n+1]: W[i, j] = sim(i, j), i in knn(j)

    def fit(self, train: Sequence[np.ndarray], n_items: int) -> ItemKNN:
        x = binary_matrix(train, n_items)
        xt = x.T.tocsr()
        norms = np.sqrt(np.asarray(x.sum(axis=0)).ravel())
        n = n_items + 1
        k = min(self.k, n - 1)
        block = max(1, BLOCK_BYTES // (4 * n))
        rows, cols, vals = [], [], []
        for start in range(0, n, block):
            stop = min(n, start + block)
            sim = (xt @ x[:, start:stop]).toarray()  # [n, b] co-occurrence counts
            sim /= norms[:, None] * norms[None, start:stop] + self.shrink + 1e-12
            sim[np.arange(start, stop), np.arange(stop - start)] = 0.0  # no self-similarity
            # [b, k] top-k neighbours per item, ties by ascending index (deterministic)
            nbrs = top_k(np.ascontiguousarray(sim.T), k)
            w = np.take_along_axis(sim.T, nbrs, axis=1)
            keep = w > 0
            rows.append(nbrs[keep])
            cols.append(np.broadcast_to(np.arange(start, stop)[:, None], nbrs.shape)[keep])
            vals.append(w[keep].astype(np.float32))
        self.weights = sp.csr_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)
        )
        return self

    def score(self, users: np.ndarray, histories: list[np.ndarray]) -> np.ndarray:
        if self.weights is None:
            raise RuntimeError("ItemKNN.score called before fit")
        h = binary_matrix(histories, self.weights.shape[0] - 1)
        return np.asarray((h @ self.weights).toarray(), dtype=np.float32)

    def params(self) -> dict[str, Any]:
        return {"k": self.k, "shrink": self.shrink}
