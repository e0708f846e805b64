"""EASE (Steck 2019): closed-form item-item weights B = I - P diag(1/diag(P)), P = (X'X + lam I)^-1.

Only items with training interactions enter the dense matrix: an item without any has a zero
column in X, so its row and column of B are exactly zero and its score is 0 either way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
from scipy.linalg import blas, lapack

from training.baselines.base import binary_matrix
from training.errors import ConfigError

DENSE_GRAM_BYTES = 1 << 30  # X'X through dense BLAS when X fits in this (much faster than SpGEMM)


def _gram(x: sp.csr_matrix) -> np.ndarray:
    """X'X as a Fortran-ordered float64 array whose upper triangle is valid."""
    if x.shape[0] * x.shape[1] * 8 <= DENSE_GRAM_BYTES:
        return np.asarray(blas.dsyrk(1.0, x.toarray().astype(np.float64), trans=1, lower=0))
    return np.asarray((x.T @ x).toarray(), dtype=np.float64).T  # symmetric: .T is Fortran order


def _mirror_upper(a: np.ndarray, block: int = 1024) -> None:
    """In place: copy the upper triangle onto the lower one (LAPACK fills only one half)."""
    for start in range(0, a.shape[0], block):
        stop = min(a.shape[0], start + block)
        a[start:stop, :start] = a[:start, start:stop].T
        diag = np.triu(a[start:stop, start:stop])
        a[start:stop, start:stop] = diag + np.triu(diag, 1).T


class EASE:
    grid: ClassVar[dict[str, tuple[Any, ...]]] = {"lam": (10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0)}

    def __init__(self, lam: float = 250.0, max_items: int = 30_000) -> None:
        if lam <= 0:
            raise ConfigError(f"ease needs lam > 0 (got {lam})")
        self.lam, self.max_items = float(lam), max_items
        self.active: np.ndarray | None = None  # item indices with training interactions
        self.weights: np.ndarray | None = None  # float32 [a, a]
        self.n_items = 0

    def fit(self, train: Sequence[np.ndarray], n_items: int) -> EASE:
        x = binary_matrix(train, n_items)
        active = np.flatnonzero(np.asarray(x.sum(axis=0)).ravel() > 0)
        if len(active) > self.max_items:
            gb = len(active) ** 2 * 8 / 2**30
            raise ConfigError(
                f"ease needs a dense {len(active)} x {len(active)} matrix (~{gb:.1f} GB); "
                f"the limit is max_items={self.max_items} items with training interactions"
            )
        gram = _gram(x[:, active])
        gram[np.diag_indices_from(gram)] += self.lam
        # Fortran order lets LAPACK work in place; only the upper triangle is read.
        # G = U'U; P = G^-1 = U^-1 U^-T (dtrtri + dsyrk: dpotri's dlauum stalls on small n here)
        chol, info = lapack.dpotrf(gram, lower=0, clean=1, overwrite_a=1)
        if info != 0:
            raise ConfigError(f"ease: X'X + lam I is not positive definite (LAPACK info {info})")
        u_inv, info = lapack.dtrtri(chol, lower=0, overwrite_c=1)
        if info != 0:
            raise ConfigError(f"ease: inversion failed (LAPACK info {info})")
        del gram, chol
        p = blas.dsyrk(1.0, u_inv, lower=0)  # upper triangle of U^-1 U^-T
        del u_inv
        _mirror_upper(p)
        p /= -np.diag(p)[None, :]  # B = I - P diag(1/diag(P)), with diag(B) = 0
        np.fill_diagonal(p, 0.0)
        self.weights = np.ascontiguousarray(p, dtype=np.float32)
        self.active, self.n_items = active, n_items
        return self

    def score(self, users: np.ndarray, histories: list[np.ndarray]) -> np.ndarray:
        if self.weights is None or self.active is None:
            raise RuntimeError("EASE.score called before fit")
        h = binary_matrix(histories, self.n_items)[:, self.active]
        out = np.zeros((len(histories), self.n_items + 1), dtype=np.float32)
        out[:, self.active] = np.asarray(h @ self.weights, dtype=np.float32)
        return out

    def params(self) -> dict[str, Any]:
        return {"lam": self.lam}
