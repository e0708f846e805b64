"""The interface every baseline implements, and the sparse matrices they are built from."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp


class Baseline(Protocol):
    """fit on per-user training sequences, then score any batch of histories."""

    def fit(self, train: Sequence[np.ndarray], n_items: int) -> Baseline: ...

    def score(self, users: np.ndarray, histories: list[np.ndarray]) -> np.ndarray:
        """float32 [B, n_items + 1]; column 0 (padding) is ignored by the evaluator."""
        ...

    def params(self) -> dict[str, Any]: ...


def binary_matrix(sequences: Sequence[np.ndarray], n_items: int) -> sp.csr_matrix:
    """Binary rows x items CSR (float32, n_items + 1 columns, column 0 = padding, never set).

    Repeated items in a sequence count once.
    """
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    rows = np.repeat(np.arange(len(sequences), dtype=np.int64), lengths)
    cols = (
        np.concatenate([np.asarray(s, dtype=np.int64) for s in sequences])
        if lengths.sum()
        else np.zeros(0, dtype=np.int64)
    )
    keep = cols != 0
    m = sp.csr_matrix(
        (np.ones(int(keep.sum()), dtype=np.float32), (rows[keep], cols[keep])),
        shape=(len(sequences), n_items + 1),
    )
    m.sum_duplicates()
    m.data[:] = 1.0
    return m


def item_counts(sequences: Sequence[np.ndarray], n_items: int) -> np.ndarray:
    """Interaction count per item over the sequences, int64 [n_items + 1] (padding = 0)."""
    if not sequences:
        return np.zeros(n_items + 1, dtype=np.int64)
    counts = np.bincount(np.concatenate(sequences).astype(np.int64), minlength=n_items + 1)
    counts[0] = 0
    return counts.astype(np.int64)
