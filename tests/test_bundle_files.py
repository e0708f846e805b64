"""Bundle data files: items.jsonl, histories.npz (no pickles) and embedding matrices."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from training.bundle_files import (
    BundleError,
    read_histories,
    write_embeddings,
    write_histories,
    write_items,
)
from training.data import Dataset, load_dataset


@pytest.fixture(scope="module")
def ds() -> Dataset:
    return load_dataset("synthetic:users=40,items=60,interactions=400,seed=5")


def test_histories_load_without_pickle_and_round_trip(ds: Dataset, tmp_path: Path) -> None:
    path = tmp_path / "histories.npz"
    write_histories(ds, path)
    with np.load(path, allow_pickle=False) as data:
        assert data["user_ids"].dtype.kind == "U"
        assert data["offsets"].dtype == np.int64
        assert data["items"].dtype == np.int32
        assert len(data["offsets"]) == ds.n_users + 1
    back = read_histories(path)
    assert list(back) == [str(u) for u in ds.user_ids]
    for user in range(ds.n_users):
        assert back[str(ds.user_ids[user])] == ds.sequence(user).tolist()


def test_items_jsonl_has_one_row_per_item_in_index_order(ds: Dataset, tmp_path: Path) -> None:
    path = tmp_path / "items.jsonl"
    write_items(ds, path)
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [r["index"] for r in rows] == list(range(1, ds.n_items + 1))
    popularity = ds.item_popularity()
    for row in rows:
        assert set(row) == {"index", "item_id", "title", "genres", "year", "popularity"}
        assert row["item_id"] == ds.item_ids[row["index"]]
        assert row["title"] == ds.item_meta["title"].iloc[row["index"]]
        assert row["genres"] == list(ds.item_meta["genres"].iloc[row["index"]])
        assert row["year"] is None or isinstance(row["year"], int)
        assert row["popularity"] == popularity[row["index"]]


def test_embeddings_are_float32_with_a_zero_padding_row(tmp_path: Path) -> None:
    matrix = np.random.default_rng(0).normal(size=(5, 3))
    write_embeddings(matrix, tmp_path / "e.npy", 5)
    saved = np.load(tmp_path / "e.npy", allow_pickle=False)
    assert saved.dtype == np.float32
    assert not saved[0].any()
    assert np.allclose(saved[1:], matrix[1:])


@pytest.mark.parametrize("bad", [np.zeros((4, 3)), np.full((5, 3), np.nan)])
def test_malformed_embeddings_are_refused(tmp_path: Path, bad: np.ndarray) -> None:
    with pytest.raises(BundleError, match=r"e\.npy"):
        write_embeddings(bad, tmp_path / "e.npy", 5)
