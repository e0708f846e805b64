"""Turn raw frames (external ids) into the one `Dataset`: shared by every file-based loader.

Internal ids are contiguous: users 0..n-1 and items 1..n (0 = padding), both assigned in
ascending external-id order (numeric order when every id is an integer, else string order).
Interactions are sorted by (user, timestamp, item), so ties in time fall back to the item id.
A user's repeat of an item is dropped (with one warning): only the first (earliest; ties: input
order) interaction of each (user, item) is kept, since the protocol excludes seen items from
ranking and a held-out repeat could never be hit. Every file-based loader builds through here.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from training.data.dataset import Dataset
from training.errors import DataError

META_COLUMNS = ("item_id", "title", "genres", "year", "tags")


def sorted_ids(ids: np.ndarray) -> np.ndarray:
    """Unique external ids (as str) in the canonical order: numeric when all are integers."""
    unique = np.unique(np.asarray(ids).astype(str))
    text = pd.Series(unique, dtype=object)
    if len(unique) and bool(text.str.fullmatch(r"[+-]?\d{1,18}").all()):
        order = np.lexsort((unique, text.astype(np.int64).to_numpy()))
        return unique[order]
    return unique


def empty_meta(item_ids: np.ndarray) -> pd.DataFrame:
    """Item metadata with only ids (title = "", no genres, no year, no tags); row 0 = padding."""
    n = len(item_ids)
    return pd.DataFrame(
        {
            "item_id": item_ids,
            "title": [""] * n,
            "genres": [[] for _ in range(n)],
            "year": pd.array([pd.NA] * n, dtype="Int64"),
            "tags": [""] * n,
        }
    )


def _align_meta(item_ids: np.ndarray, items: pd.DataFrame | None) -> pd.DataFrame:
    meta = empty_meta(item_ids)
    if items is None or items.empty:
        return meta
    src = items.set_index(items["item_id"].astype(str))
    pos = pd.Index(src.index).get_indexer(item_ids)
    found = pos >= 0
    for col in ("title", "genres", "year", "release_year", "tags"):
        if col not in src.columns:
            continue
        values = src[col].to_numpy(dtype=object)
        if col not in meta:  # optional: only datasets with a release date apart from the year
            meta[col] = pd.array([pd.NA] * len(meta), dtype="Int64")
        column = meta[col].to_numpy(dtype=object).copy()
        column[found] = values[pos[found]]
        if col in ("year", "release_year"):
            meta[col] = pd.array(column, dtype="Int64")
        else:
            meta[col] = column
    return meta  # row 0 (item id "") never matches an item: it stays the empty padding row


def _first_interactions(
    order: np.ndarray, users: np.ndarray, items: np.ndarray, n_items: int, source: str
) -> np.ndarray:
    """`order` (rows sorted by user, timestamp, item; stable) without each (user, item)'s later
    repeats, with one warning saying how many were dropped. Leave-one-out holds out a user's last
    item and the protocol never ranks items already in the history, so a repeated target could
    never be hit."""
    keys = users[order].astype(np.int64) * (n_items + 1) + items[order]
    repeat = pd.Series(keys).duplicated().to_numpy()
    dropped = int(repeat.sum())
    if not dropped:
        return order
    warnings.warn(
        f"{source}: dropped {dropped} repeated (user, item) interaction(s); only each user's "
        f"first interaction with an item is kept (seen items are never ranked, so a repeat "
        f"held out as a target could never be hit)",
        stacklevel=3,
    )
    kept: np.ndarray = order[~repeat]
    return kept


def build_dataset(
    name: str,
    interactions: pd.DataFrame,
    items: pd.DataFrame | None = None,
    user_features: pd.DataFrame | None = None,
    *,
    source: str = "interactions",
    items_source: str = "items",
) -> Dataset:
    """Build a Dataset from `interactions` (user_id, item_id, timestamp [int seconds], optional
    rating) and optional `items` (item_id, title, genres [list], year, tags).

    The catalogue is the items frame when given (items nobody interacted with are kept);
    interactions with an item missing from it are an error. Repeats of a (user, item) are dropped
    (see the module doc): only the earliest interaction, with its rating, is kept.
    `user_features` is indexed by external user id; it is reindexed to internal user order.
    """
    if interactions.empty:
        raise DataError(f"{source}: no interactions (the file is empty)")
    user_ext = interactions["user_id"].astype(str).to_numpy()
    item_ext = interactions["item_id"].astype(str).to_numpy()
    user_ids = sorted_ids(user_ext)
    catalogue = sorted_ids(item_ext if items is None else items["item_id"].astype(str).to_numpy())
    item_ids = np.concatenate([np.array([""]), catalogue]).astype(str)
    users = pd.Index(user_ids).get_indexer(user_ext).astype(np.int32)
    items_idx = (pd.Index(catalogue).get_indexer(item_ext) + 1).astype(np.int32)
    if (items_idx == 0).any():
        missing = np.unique(item_ext[items_idx == 0])
        raise DataError(
            f"{source}: {len(missing)} item id(s) are not in {items_source} "
            f"(e.g. {', '.join(map(repr, missing[:3].tolist()))}); every interacted item "
            f"must be listed in the items file"
        )
    timestamps = interactions["timestamp"].to_numpy(dtype=np.int64)
    order = np.lexsort((items_idx, timestamps, users))  # stable: equal rows keep input order
    order = _first_interactions(order, users, items_idx, len(catalogue), source)
    ratings = None
    if "rating" in interactions.columns:
        ratings = interactions["rating"].to_numpy(dtype=np.float32)[order]

    features = None
    if user_features is not None:
        features = user_features.copy()
        features.index = features.index.astype(str)
        features = features.reindex(user_ids).reset_index(drop=True)

    return Dataset(
        name=name,
        user_ids=user_ids,
        item_ids=item_ids,
        users=users[order],
        items=items_idx[order],
        timestamps=timestamps[order],
        ratings=ratings,
        item_meta=_align_meta(item_ids, items),
        user_features=features,
    )
