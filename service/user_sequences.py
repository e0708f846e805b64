"""Known users' histories at training time (histories.npz, loaded without pickles)."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from service.errors import BundleLoadError

EMPTY = np.zeros(0, dtype=np.int64)


@dataclass(frozen=True)
class UserSequences:
    """External user id -> chronological internal item ids."""

    rows: dict[str, int]
    offsets: np.ndarray  # int64 [U + 1]
    items: np.ndarray  # int64 [N]

    def __len__(self) -> int:
        return len(self.rows)

    def get(self, user_id: str) -> np.ndarray:
        """The user's history (empty for unknown users)."""
        row = self.rows.get(user_id)
        if row is None:
            return EMPTY
        return self.items[self.offsets[row] : self.offsets[row + 1]]

    def sample(self, n: int, seed: int = 0, min_len: int = 1) -> list[np.ndarray]:
        """Up to `n` real histories of at least `min_len` items (seeded)."""
        lengths = np.diff(self.offsets)
        eligible = np.flatnonzero(lengths >= min_len)
        if len(eligible) == 0 or n <= 0:
            return []
        rng = np.random.default_rng(seed)
        rows = rng.choice(eligible, size=min(n, len(eligible)), replace=False)
        return [self.items[self.offsets[r] : self.offsets[r + 1]] for r in sorted(rows)]


def read_user_sequences(data: bytes, n_items: int) -> UserSequences:
    """Parse histories.npz: user_ids (unicode [U]), offsets int64 [U+1], items int32 [N]."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            user_ids, offsets, items = npz["user_ids"], npz["offsets"], npz["items"]
    except (ValueError, KeyError, OSError) as exc:
        raise BundleLoadError(f"histories.npz is unreadable: {exc}") from exc
    if user_ids.ndim != 1 or user_ids.dtype.kind != "U":
        raise BundleLoadError(
            f"histories.npz: user_ids must be a unicode vector, got {user_ids.dtype}"
        )
    if offsets.shape != (len(user_ids) + 1,) or offsets.dtype.kind not in "iu":
        raise BundleLoadError("histories.npz: offsets must be integers of length users + 1")
    if items.ndim != 1 or items.dtype.kind not in "iu":
        raise BundleLoadError("histories.npz: items must be an integer vector")
    offsets = offsets.astype(np.int64)
    if offsets[0] != 0 or offsets[-1] != len(items) or np.any(np.diff(offsets) < 0):
        raise BundleLoadError("histories.npz: offsets are not a non-decreasing 0..len(items)")
    if len(items) and (items.min() < 1 or items.max() > n_items):
        raise BundleLoadError(f"histories.npz: item ids outside 1..{n_items}")
    rows = {str(u): i for i, u in enumerate(user_ids.tolist())}
    if len(rows) != len(user_ids):
        raise BundleLoadError("histories.npz: duplicate user ids")
    return UserSequences(rows, offsets, items.astype(np.int64))
