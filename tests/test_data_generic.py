"""The generic interactions/items format: loads, and every bad file is named with its problem."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from training.data import load_dataset
from training.errors import DataError

GOOD = "user_id,item_id,timestamp,rating\nu1,10,100,4\nu1,9,100,3.5\nu2,10,2020-01-01T00:00:00Z,5\n"
ITEMS = "item_id,title,genres\n9,Nine (1999),Drama|Comedy\n10,Ten,\n11,Unwatched (2001),Horror\n"


def _write(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def test_folder_with_interactions_and_items_loads(tmp_path: Path) -> None:
    good = GOOD.replace("2020-01-01T00:00:00Z", "200")
    ds = load_dataset(str(_write(tmp_path / "d", {"interactions.csv": good, "items.csv": ITEMS})))
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (2, 3, 3)
    assert ds.item_ids[ds.sequence(0)].tolist() == ["9", "10"]
    meta = ds.item_meta.set_index("item_id")
    assert meta.loc["9", "genres"] == ["Drama", "Comedy"]
    assert meta.loc["9", "year"] == 1999
    assert meta.loc["10", "genres"] == []
    assert meta.loc["11", "title"] == "Unwatched"


def test_iso_timestamps_become_epoch_seconds(tmp_path: Path) -> None:
    text = "user_id,item_id,timestamp\na,1,2020-01-01T00:00:00Z\na,2,2020-01-01T00:00:01+00:00\n"
    ds = load_dataset(str(_write(tmp_path, {"interactions.csv": text}) / "interactions.csv"))
    assert ds.timestamps.tolist() == [1577836800, 1577836801]


def test_fractions_of_a_second_are_dropped_with_a_warning(tmp_path: Path) -> None:
    text = (
        "user_id,item_id,timestamp\na,20,2020-01-01T00:00:00.100Z\na,10,2020-01-01T00:00:00.900Z\n"
    )
    path = _write(tmp_path, {"interactions.csv": text}) / "interactions.csv"
    with pytest.warns(UserWarning, match="orders events by whole seconds"):
        ds = load_dataset(str(path))
    assert ds.timestamps.tolist() == [1577836800, 1577836800]
    assert ds.item_ids[ds.sequence(0)].tolist() == ["10", "20"]  # the tie-break, not the time


def test_parquet_interactions_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "log.parquet"
    stamps = pd.to_datetime(["2020-01-02", "2020-01-01"], utc=True)
    pd.DataFrame({"user_id": [7, 7], "item_id": [1, 2], "timestamp": stamps}).to_parquet(path)
    ds = load_dataset(str(path))
    assert ds.item_ids[ds.sequence(0)].tolist() == ["2", "1"]
    assert ds.timestamps.tolist() == [1577836800, 1577923200]


CASES = {
    "missing_file": ({"other.csv": GOOD}, "interactions.csv", "no interactions.csv"),
    "missing_column": (
        {"interactions.csv": "user_id,item_id\n1,2\n"},
        "interactions.csv",
        "missing column(s) timestamp",
    ),
    "empty_file": ({"interactions.csv": ""}, "interactions.csv", "empty"),
    "header_only": (
        {"interactions.csv": "user_id,item_id,timestamp\n"},
        "interactions.csv",
        "empty",
    ),
    "bad_timestamp": (
        {"interactions.csv": "user_id,item_id,timestamp\n1,2,100\n1,3,yesterday\n"},
        "interactions.csv",
        "column 'timestamp'",
    ),
    "bad_rating": (
        {"interactions.csv": "user_id,item_id,timestamp,rating\n1,2,100,4\n1,3,101,five\n"},
        "interactions.csv",
        "column 'rating'",
    ),
    "empty_user_id": (
        {"interactions.csv": "user_id,item_id,timestamp\n1,2,100\n,3,101\n"},
        "interactions.csv",
        "column 'user_id'",
    ),
    "duplicate_item": (
        {"interactions.csv": GOOD, "items.csv": ITEMS + "9,Nine again,\n"},
        "items.csv",
        "duplicate item_id '9'",
    ),
    "item_not_in_items_file": (
        {"interactions.csv": GOOD + "u3,12,300,1\n", "items.csv": ITEMS},
        "interactions.csv",
        "'12'",
    ),
    "items_missing_title": (
        {"interactions.csv": GOOD, "items.csv": "item_id,genres\n9,A\n"},
        "items.csv",
        "missing column(s) title",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_files_raise_an_error_naming_file_and_problem(tmp_path: Path, case: str) -> None:
    files, file_name, problem = CASES[case]
    folder = _write(tmp_path / case, files)
    with pytest.raises(DataError) as info:
        load_dataset(str(folder))
    message = str(info.value)
    assert file_name in message
    assert problem in message


def test_bad_value_message_gives_an_example_and_its_row(tmp_path: Path) -> None:
    text = "user_id,item_id,timestamp\n1,2,100\n1,3,101\n1,4,soon\n"
    with pytest.raises(DataError, match=r"got 'soon' at row 3 \(line 4\)"):
        load_dataset(str(_write(tmp_path, {"interactions.csv": text})))


def test_unknown_path_says_it_is_neither_a_file_nor_a_dataset_name(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file or folder"):
        load_dataset(str(tmp_path / "nope"))


def test_both_csv_and_parquet_present_is_ambiguous(tmp_path: Path) -> None:
    _write(tmp_path, {"interactions.csv": GOOD, "interactions.parquet": ""})
    with pytest.raises(DataError, match="keep only one"):
        load_dataset(str(tmp_path))


@pytest.mark.parametrize(
    ("rows", "line"),
    [
        ("1,10,978300760,5\n1,11,978300761,4\n", 2),  # every row: pandas took field 1 as index
        ("1,10,978300760\n1,11,978300761,4\n", 3),
        ("1,10,978300760\n\n1,11\n", 4),  # too few fields (after a blank line)
    ],
)
def test_a_row_whose_field_count_differs_from_the_header_is_refused_naming_its_line(
    tmp_path: Path, rows: str, line: int
) -> None:
    path = _write(tmp_path, {"interactions.csv": "user_id,item_id,timestamp\n" + rows})
    with pytest.raises(DataError, match=rf"interactions\.csv: line {line} has \d field\(s\)"):
        load_dataset(str(path))


def test_a_quoted_comma_and_an_empty_last_value_are_not_field_count_errors(
    tmp_path: Path,
) -> None:
    text = 'user_id,item_id,timestamp\nu1,"a,b",100\nu1,c,101\n'
    items = 'item_id,title,tags\n"a,b",AB,\nc,C,x\n'
    ds = load_dataset(str(_write(tmp_path, {"interactions.csv": text, "items.csv": items})))
    assert ds.item_ids[ds.sequence(0)].tolist() == ["a,b", "c"]


def test_a_repeated_item_keeps_only_the_users_first_interaction(tmp_path: Path) -> None:
    text = (
        "user_id,item_id,timestamp,rating\n"
        "u1,1,400,1\nu1,1,100,5\nu1,2,200,4\nu1,3,300,3\nu1,1,500,2\nu2,1,100,4\n"
    )
    path = _write(tmp_path, {"interactions.csv": text})
    with pytest.warns(UserWarning, match=r"dropped 2 repeated \(user, item\) interaction"):
        ds = load_dataset(str(path))
    assert ds.item_ids[ds.sequence(0)].tolist() == ["1", "2", "3"]
    assert ds.timestamps[: ds.offsets[1]].tolist() == [100, 200, 300]
    assert ds.ratings is not None
    assert ds.ratings[: ds.offsets[1]].tolist() == [5, 4, 3]  # the first interaction's rating
    assert ds.item_ids[ds.sequence(1)].tolist() == ["1"]  # another user's same item is kept


@pytest.mark.parametrize("stamp", ["99999999999999999999", "-9223372036854775809"])
def test_a_timestamp_beyond_int64_is_a_data_error_naming_the_column(
    tmp_path: Path, stamp: str
) -> None:
    text = f"user_id,item_id,timestamp\n1,2,100\n1,3,{stamp}\n"
    with pytest.raises(DataError, match=rf"column 'timestamp'.*got '{stamp}' at row 2"):
        load_dataset(str(_write(tmp_path, {"interactions.csv": text})))


def test_an_unsigned_parquet_timestamp_beyond_int64_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "log.parquet"
    stamps = np.array([5, 2**64 - 1], dtype=np.uint64)
    pd.DataFrame({"user_id": [1, 1], "item_id": [1, 2], "timestamp": stamps}).to_parquet(path)
    with pytest.raises(DataError, match=r"column 'timestamp'.* at row 2"):
        load_dataset(str(path))


def test_datetimes_past_the_nanosecond_range_become_epoch_seconds(tmp_path: Path) -> None:
    path = tmp_path / "log.parquet"
    stamps = np.array(["3000-01-01", "2020-01-01"], dtype="datetime64[us]")
    pd.DataFrame({"user_id": [1, 1], "item_id": [1, 2], "timestamp": stamps}).to_parquet(path)
    assert load_dataset(str(path)).timestamps.tolist() == [1577836800, 32503680000]


def test_parquet_list_genres_are_the_genre_list_not_one_stringified_genre(
    tmp_path: Path,
) -> None:
    pd.DataFrame({"user_id": [1, 1], "item_id": [1, 2], "timestamp": [1, 2]}).to_parquet(
        tmp_path / "interactions.parquet"
    )
    pd.DataFrame(
        {
            "item_id": [1, 2, 3],
            "title": ["One (1990)", "Two", "Three"],
            "genres": [["Drama", " Comedy ", None], [], None],
            "tags": [["funny", "dark"], None, []],
        }
    ).to_parquet(tmp_path / "items.parquet")
    meta = load_dataset(str(tmp_path)).item_meta.set_index("item_id")
    assert meta.loc["1", "genres"] == ["Drama", "Comedy"]
    assert meta.loc["2", "genres"] == []
    assert meta.loc["3", "genres"] == []
    assert meta.loc["1", "tags"] == "funny|dark"
    assert meta.loc["2", "tags"] == ""
