"""The one dataset object every loader returns and every model, split and evaluator reads.

Ids: users are 0..n_users-1, items are 1..n_items (0 is the padding item and never a real item).
External ids are kept as strings (`user_ids[u]`, `item_ids[i]`; `item_ids[0] == ""`).
Interactions are sorted by (user, timestamp, external item id ascending, numerically when every
item id is numeric), so each user's slice is that user's chronological sequence.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

PAD = 0


@dataclass(frozen=True)
class Dataset:
    name: str
    user_ids: np.ndarray  # str [n_users]; external user id of internal user u
    item_ids: np.ndarray  # str [n_items + 1]; external item id of internal item i; [0] == ""
    users: np.ndarray  # int32 [n_interactions], internal user index, sorted (see module doc)
    items: np.ndarray  # int32 [n_interactions], internal item index in 1..n_items
    timestamps: np.ndarray  # int64 [n_interactions], seconds since the epoch
    ratings: np.ndarray | None  # float32 [n_interactions] or None
    # item metadata, one row per internal item 0..n_items (row 0 = padding, empty strings):
    # columns item_id (str), title (str), genres (list[str]), year (Int64, may be <NA>), tags (str)
    item_meta: pd.DataFrame
    # user features, one row per internal user 0..n_users-1 (e.g. age, gender, occupation), or None
    user_features: pd.DataFrame | None = None
    # int64 [n_users + 1]: user u's interactions are rows offsets[u]:offsets[u+1]
    offsets: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        counts = np.bincount(self.users, minlength=len(self.user_ids))
        offsets = np.zeros(len(self.user_ids) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        object.__setattr__(self, "offsets", offsets)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        """Real items, padding excluded."""
        return len(self.item_ids) - 1

    @property
    def n_interactions(self) -> int:
        return len(self.items)

    def sequence(self, user: int) -> np.ndarray:
        """The user's items in chronological order (int32, internal ids)."""
        return self.items[self.offsets[user] : self.offsets[user + 1]]

    def sequences(self) -> list[np.ndarray]:
        return [self.sequence(u) for u in range(self.n_users)]

    def item_popularity(self) -> np.ndarray:
        """Interaction count per internal item, int64 [n_items + 1] (padding = 0)."""
        return np.bincount(self.items, minlength=self.n_items + 1).astype(np.int64)

    def stats(self) -> dict[str, float | int | str]:
        n = self.n_interactions
        return {
            "name": self.name,
            "users": self.n_users,
            "items": self.n_items,
            "interactions": n,
            "density": n / max(1, self.n_users * self.n_items),
            "mean_sequence_length": n / max(1, self.n_users),
        }
