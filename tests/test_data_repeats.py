"""One repeat policy for every loader: `build_dataset` keeps each (user, item)'s first interaction,
so no held-out target is ever in its own (masked) history."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from training.data import Dataset, leave_one_out, load_dataset, resolve_data_dir, temporal_split
from training.data.build import build_dataset
from training.data.movielens import BUNDLED_DIR, load_ml_latest_small

REPEAT_WARNING = r"dropped \d+ repeated \(user, item\) interaction\(s\); only each user's first"


def _frame(rows: list[tuple[str, str, int, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "rating"])


def _assert_no_target_in_its_history(ds: Dataset) -> None:
    """Every user, both splits, both stages: no target is an item of its own history."""
    for split in (leave_one_out(ds), temporal_split(ds)):
        for stage in (split.valid, split.test):
            for user, history, targets in zip(
                stage.users, stage.histories, stage.targets, strict=True
            ):
                assert not np.isin(targets, history).any(), (split.name, stage.stage, int(user))


def _assert_no_repeats(ds: Dataset) -> None:
    keys = ds.users.astype(np.int64) * (ds.n_items + 1) + ds.items
    assert len(np.unique(keys)) == ds.n_interactions


def test_the_audit_example_keeps_the_first_interaction_and_warns_once() -> None:
    rows = [("a", "1", 1, 5.0), ("a", "2", 2, 4.0), ("a", "1", 3, 1.0), ("a", "3", 4, 3.0)]
    with pytest.warns(UserWarning, match=r"^src: dropped 1 repeated \(user, item\)") as caught:
        ds = build_dataset("t", _frame(rows), source="src")
    assert len(caught) == 1
    assert ds.item_ids[ds.sequence(0)].tolist() == ["1", "2", "3"]
    assert ds.timestamps.tolist() == [1, 2, 4]
    assert ds.ratings is not None
    assert ds.ratings.tolist() == [5.0, 4.0, 3.0]
    split = leave_one_out(ds)
    assert ds.item_ids[split.test.targets[0]].tolist() == ["3"]
    assert ds.item_ids[split.test.histories[0]].tolist() == ["1", "2"]


def test_the_earliest_interaction_is_kept_whatever_the_row_order_and_ties_keep_row_order() -> None:
    rows = [
        ("u", "x", 50, 1.0),
        ("u", "x", 10, 2.0),  # earliest x
        ("u", "y", 20, 3.0),  # y at 20 twice: the first row wins
        ("u", "y", 20, 4.0),
        ("u", "z", 30, 5.0),
        ("v", "x", 99, 6.0),  # another user's x is not a repeat
    ]
    with pytest.warns(UserWarning, match=r"dropped 2 repeated"):
        ds = build_dataset("t", _frame(rows))
    assert ds.item_ids[ds.sequence(0)].tolist() == ["x", "y", "z"]
    assert ds.timestamps[: ds.offsets[1]].tolist() == [10, 20, 30]
    assert ds.ratings is not None
    assert ds.ratings.tolist() == [2.0, 3.0, 5.0, 6.0]
    assert ds.item_ids[ds.sequence(1)].tolist() == ["x"]


def test_a_dataset_built_with_many_repeats_has_no_target_in_its_own_history() -> None:
    rng = np.random.default_rng(0)
    n = 4000  # 60 users over 30 items: most (user, item) pairs repeat
    frame = pd.DataFrame(
        {
            "user_id": rng.integers(0, 60, n).astype(str),
            "item_id": rng.integers(0, 30, n).astype(str),
            "timestamp": rng.integers(0, 500, n),  # many ties in time
            "rating": rng.integers(1, 6, n).astype(np.float32),
        }
    )
    with pytest.warns(UserWarning, match=REPEAT_WARNING):
        ds = build_dataset("t", frame)
    _assert_no_repeats(ds)
    first = frame.sort_values("timestamp", kind="stable").drop_duplicates(["user_id", "item_id"])
    assert ds.n_interactions == len(first)
    kept = pd.DataFrame(
        {
            "user_id": ds.user_ids[ds.users],
            "item_id": ds.item_ids[ds.items],
            "timestamp": ds.timestamps,
            "rating": ds.ratings,
        }
    )
    on = ["user_id", "item_id"]
    merged = kept.merge(first, on=on, suffixes=("", "_first"), validate="one_to_one")
    assert (merged["timestamp"] == merged["timestamp_first"]).all()
    assert (merged["rating"] == merged["rating_first"]).all()
    assert len(leave_one_out(ds).test) == int((np.diff(ds.offsets) >= 3).sum())
    _assert_no_target_in_its_history(ds)


def test_a_movielens_loader_gets_the_same_policy(tmp_path: Path) -> None:
    """The MovieLens loaders call build_dataset directly, not the generic reader."""
    for name in ("movies.csv", "tags.csv"):
        shutil.copy(BUNDLED_DIR / name, tmp_path / name)
    (tmp_path / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n1,1,4.0,10\n1,2,3.0,20\n1,1,1.0,30\n1,3,5.0,40\n"
        "1,3,2.0,50\n",
        encoding="utf-8",
    )
    with pytest.warns(UserWarning, match=r"ratings\.csv: dropped 2 repeated"):
        ds = load_ml_latest_small(tmp_path)
    assert ds.item_ids[ds.sequence(0)].tolist() == ["1", "2", "3"]
    assert ds.ratings is not None
    assert ds.ratings.tolist() == [4.0, 3.0, 5.0]
    _assert_no_target_in_its_history(ds)


def test_the_generic_loader_still_drops_repeats_once(tmp_path: Path) -> None:
    (tmp_path / "interactions.csv").write_text(
        "user_id,item_id,timestamp\nu,a,1\nu,b,2\nu,a,3\nu,c,4\nu,b,5\n", encoding="utf-8"
    )
    with pytest.warns(UserWarning, match=REPEAT_WARNING) as caught:
        ds = load_dataset(str(tmp_path))
    assert len(caught) == 1
    assert "dropped 2 repeated" in str(caught[0].message)
    assert ds.item_ids[ds.sequence(0)].tolist() == ["a", "b", "c"]


def test_ml_latest_small_and_synthetic_load_unchanged_without_repeats() -> None:
    """pytest turns warnings into errors: a dropped repeat would fail the load."""
    ds = load_dataset("ml-latest-small")
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (610, 9742, 100836)
    _assert_no_repeats(ds)
    _assert_no_target_in_its_history(ds)
    synthetic = load_dataset("synthetic:users=300,items=200,interactions=6000,seed=0")
    _assert_no_repeats(synthetic)
    _assert_no_target_in_its_history(synthetic)


@pytest.mark.ml100k
def test_ml100k_loads_unchanged_without_repeats() -> None:
    directory = resolve_data_dir() / "ml-100k"
    if not (directory / "u.data").is_file():
        pytest.skip(f"MovieLens 100K not found at {directory} (set CINESYNC_DATA_DIR)")
    ds = load_dataset("ml-100k", directory.parent)
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (943, 1682, 100000)
    _assert_no_repeats(ds)
    _assert_no_target_in_its_history(ds)
