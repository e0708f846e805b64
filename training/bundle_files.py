"""The data files of a bundle (Bundle contract in notes/COMMON.md): item table, histories,
embeddings and bundle.json. Everything numeric is a plain .npy/.npz (no pickles)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from training.data.dataset import Dataset
from training.errors import CineSyncError

ITEMS = "items.jsonl"
HISTORIES = "histories.npz"
ITEM_EMBEDDINGS = "item_embeddings.npy"
CONTENT_EMBEDDINGS = "content_embeddings.npy"
BUNDLE_JSON = "bundle.json"
ENCODER = "encoder.onnx"
ENCODER_INT8 = "encoder.int8.onnx"


class BundleError(CineSyncError):
    """A bundle folder is missing a file or holds a malformed one."""


BUNDLE_FILES = (
    ENCODER,
    ENCODER_INT8,
    ITEM_EMBEDDINGS,
    CONTENT_EMBEDDINGS,
    ITEMS,
    HISTORIES,
    BUNDLE_JSON,
)


def _year(value: object) -> int | None:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return int(str(value))


def _genres(value: object) -> list[str]:
    if isinstance(value, str):
        return [g for g in value.split("|") if g]
    if value is None or value is pd.NA:
        return []
    return [str(g) for g in value]  # type: ignore[attr-defined]


def write_items(dataset: Dataset, path: Path) -> None:
    """items.jsonl: one object per real item (index 1..n_items, in order)."""
    meta = dataset.item_meta
    popularity = dataset.item_popularity()
    titles = meta["title"] if "title" in meta.columns else pd.Series([""] * len(meta))
    genres = meta["genres"] if "genres" in meta.columns else pd.Series([[]] * len(meta))
    years = meta["year"] if "year" in meta.columns else pd.Series([None] * len(meta))
    with path.open("w", encoding="utf-8") as f:
        for index in range(1, dataset.n_items + 1):
            row = {
                "index": index,
                "item_id": str(dataset.item_ids[index]),
                "title": str(titles.iloc[index] or ""),
                "genres": _genres(genres.iloc[index]),
                "year": _year(years.iloc[index]),
                "popularity": int(popularity[index]),
            }
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def write_histories(dataset: Dataset, path: Path) -> None:
    """histories.npz: user_ids (unicode [U]), offsets int64 [U+1], items int32 [N]; each known
    user's full chronological sequence (internal item ids)."""
    np.savez(
        path,
        user_ids=np.asarray([str(u) for u in dataset.user_ids], dtype=np.str_),
        offsets=np.asarray(dataset.offsets, dtype=np.int64),
        items=np.asarray(dataset.items, dtype=np.int32),
    )


def read_histories(path: Path) -> dict[str, list[int]]:
    """External user id -> chronological internal item ids (allow_pickle=False)."""
    with np.load(path, allow_pickle=False) as data:
        user_ids, offsets, items = data["user_ids"], data["offsets"], data["items"]
        return {str(u): items[offsets[i] : offsets[i + 1]].tolist() for i, u in enumerate(user_ids)}


def write_embeddings(matrix: np.ndarray, path: Path, n_rows: int) -> None:
    """float32 [n_rows, D] with row 0 (padding) forced to zeros."""
    matrix = np.array(matrix, dtype=np.float32, copy=True)
    if matrix.ndim != 2 or matrix.shape[0] != n_rows:
        raise BundleError(f"{path.name}: expected [{n_rows}, D], got {list(matrix.shape)}")
    if not np.isfinite(matrix).all():
        raise BundleError(f"{path.name}: non-finite values")
    matrix[0] = 0.0
    np.save(path, matrix, allow_pickle=False)


def write_bundle_json(path: Path, content: dict[str, Any]) -> None:
    path.write_text(
        json.dumps(content, indent=2, sort_keys=False, allow_nan=False) + "\n", encoding="utf-8"
    )
