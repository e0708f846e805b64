"""Dense item and user features from a Dataset, for models that read side information.

Items: multi-hot genres plus a one-hot release decade (`release_year` where the dataset has
one, as ml-100k's release dates, else `year`), float32 [n_items + 1, G] (row 0 zeros).
Users: one integer code per usable column of `ds.user_features`, int64 [n_users, F], where code 0
means unknown: age in the MovieLens-1M buckets, other numbers in quintiles, text columns with at
most MAX_CATEGORIES distinct values as categories (columns with more, such as zip codes, are
skipped).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from training.data.dataset import Dataset

AGE_EDGES = (18, 25, 35, 45, 50, 56)  # MovieLens-1M age groups
MAX_CATEGORIES = 64
DECADES = (1900, 2030)  # decades [1900, 1910) ... [2020, 2030); earlier years join the first


def item_content_matrix(ds: Dataset) -> np.ndarray:
    """float32 [n_items + 1, G]: multi-hot genres, then one-hot decades (present ones only)."""
    meta = ds.item_meta
    n = ds.n_items + 1
    raw: list[object] = list(meta["genres"]) if "genres" in meta else [[]] * n
    genre_lists: list[list[str]] = [
        [str(g) for g in value] if isinstance(value, list | tuple | np.ndarray) else []
        for value in raw
    ]
    vocab = sorted({g for genres in genre_lists for g in genres})
    column = {g: j for j, g in enumerate(vocab)}
    genres = np.zeros((n, len(vocab)), dtype=np.float32)
    for row, items in enumerate(genre_lists[:n]):
        genres[row, [column[g] for g in items]] = 1.0
    # a dataset's release year when it has one (ml-100k: the release date), else the film's year
    year_name = "release_year" if "release_year" in meta else "year"
    year_col = (
        pd.to_numeric(meta[year_name], errors="coerce") if year_name in meta else pd.Series([])
    )
    years = year_col.reindex(range(n)).to_numpy(dtype=np.float64, na_value=np.nan)
    known = np.isfinite(years)
    last = (DECADES[1] - DECADES[0]) // 10 - 1
    decade = np.clip((np.nan_to_num(years) - DECADES[0]) // 10, 0, last)
    present = np.unique(decade[known]).astype(np.int64)
    decades = np.zeros((n, len(present)), dtype=np.float32)
    rows = np.flatnonzero(known)
    decades[rows, np.searchsorted(present, decade[rows].astype(np.int64))] = 1.0
    matrix = np.concatenate([genres, decades], axis=1)
    matrix[0] = 0.0
    return matrix


# {"name", "kind": "bucket", "edges": [...]} or {"name", "kind": "category", "values": [...]}
FeatureSpec = dict[str, Any]


def _codes(column: pd.Series, name: str) -> tuple[np.ndarray, FeatureSpec] | None:
    """int64 codes 1..k (0 = missing) for one feature column and how values map to them, or
    None if the column is unusable. Buckets: code = 1 + number of edges <= value; categories:
    code = 1 + position in the sorted `values`."""
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        values = column.to_numpy(dtype=np.float64, na_value=np.nan)
        if name.lower() == "age":
            edges = np.asarray(AGE_EDGES, dtype=np.float64)
        else:
            edges = np.unique(np.nanquantile(values, [0.2, 0.4, 0.6, 0.8]))
        codes = np.searchsorted(edges, values, side="right") + 1
        spec: FeatureSpec = {"name": name, "kind": "bucket", "edges": edges.tolist()}
        return np.where(np.isfinite(values), codes, 0).astype(np.int64), spec
    text = column.astype("string")
    categories = sorted(text.dropna().unique().tolist())
    if not categories or len(categories) > MAX_CATEGORIES:
        return None
    lookup = {c: k + 1 for k, c in enumerate(categories)}
    codes = np.asarray([lookup.get(v, 0) if v is not pd.NA else 0 for v in text], dtype=np.int64)
    return codes, {"name": name, "kind": "category", "values": [str(c) for c in categories]}


def user_feature_specs(ds: Dataset) -> tuple[np.ndarray, list[FeatureSpec]]:
    """(codes int64 [n_users, F], one spec per usable column of `ds.user_features`)."""
    frame = ds.user_features
    columns: list[np.ndarray] = []
    specs: list[FeatureSpec] = []
    if frame is not None:
        for name in frame.columns:
            found = _codes(frame[name], str(name))
            if found is not None:
                columns.append(found[0])
                specs.append(found[1])
    if not columns:
        return np.zeros((ds.n_users, 0), dtype=np.int64), []
    return np.stack(columns, axis=1), specs


def user_feature_codes(ds: Dataset) -> tuple[np.ndarray, list[int], list[str]]:
    """(codes int64 [n_users, F], cardinality per column (codes 0..card-1), column names)."""
    codes, specs = user_feature_specs(ds)
    if not specs:
        return codes, [], []
    return codes, [int(c.max()) + 1 for c in codes.T], [str(s["name"]) for s in specs]
