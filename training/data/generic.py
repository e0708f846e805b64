"""The generic format: an interactions file and an optional items file (CSV or Parquet).

A PATH is a folder holding interactions.csv|interactions.parquet (and optionally
items.csv|items.parquet), or a single interactions file.
- interactions: user_id, item_id, timestamp (integer seconds or ISO 8601 datetime, per row),
  optional rating.
- items: item_id, title, optional genres ("A|B", or a list per row in Parquet), optional year
  (else parsed from "Title (1995)"), optional tags. Item ids must be unique.
Policy: when an items file is given it is the catalogue, and an interaction with an item that is
not in it is an error (a mismatched pair of files is far more likely than intended blanks).
A user's repeat of an item is dropped (with one warning) by `build_dataset`, as for every loader:
only the first (earliest) interaction of each (user, item) is kept.
Every problem raises DataError naming the file, the column, an example value and its row; a CSV
row whose number of fields differs from the header's is an error naming its line.
"""

from __future__ import annotations

import csv
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from training.data.build import build_dataset
from training.data.dataset import Dataset
from training.data.movielens import split_title
from training.errors import DataError

SUFFIXES = (".csv", ".parquet")


def _where(path: Path, row: int) -> str:
    return f"row {row + 1} (line {row + 2})" if path.suffix == ".csv" else f"row {row + 1}"


def _check_field_counts(path: Path) -> None:
    """Raise DataError naming the first line whose number of fields differs from the header's."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f, skipinitialspace=True)
            header = next(reader, None)
            if header is None:
                return
            for row in reader:
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue  # a blank line: pandas skips it too
                if len(row) != len(header):
                    raise DataError(
                        f"{path}: line {reader.line_num} has {len(row)} field(s) but the header "
                        f"has {len(header)} ({', '.join(header)}); every row needs exactly one "
                        f"value per column (quote a value that contains a comma)"
                    )
    except (csv.Error, UnicodeDecodeError):
        return  # pandas' own parse error (if any) describes the problem


def _read_csv(path: Path) -> pd.DataFrame:
    """Read every column as text. index_col=False: pandas would otherwise silently take the
    leading fields of rows longer than the header as the index and shift every column."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", pd.errors.ParserWarning)
        try:
            frame = pd.read_csv(
                path, dtype=str, keep_default_na=False, skipinitialspace=True, index_col=False
            )
        except pd.errors.ParserError:
            _check_field_counts(path)  # names the line of a row with too many fields
            raise
    too_long = False
    for w in caught:
        if issubclass(w.category, pd.errors.ParserWarning):
            too_long = True  # "Length of header or names does not match length of data"
        else:
            warnings.warn(w.message, w.category, stacklevel=3)
    # a row with too few fields reads as "" in its last column(s): only then is a scan needed
    if too_long or (len(frame.columns) > 0 and bool((frame.iloc[:, -1] == "").any())):
        _check_field_counts(path)
        if too_long:
            raise DataError(f"{path}: some rows have more fields than the header")
    return frame


def read_table(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.suffix not in SUFFIXES:
        raise DataError(f"{path}: unsupported file type {path.suffix!r} (use .csv or .parquet)")
    try:
        frame = _read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{path}: the file is empty") from exc
    except (ValueError, OSError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: cannot parse the file ({exc})") from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)} "
            f"(found: {', '.join(frame.columns) or 'none'}; required: {', '.join(required)})"
        )
    if frame.empty:
        raise DataError(f"{path}: the file is empty (a header but no rows)")
    return frame


def _bad(path: Path, column: str, values: pd.Series, bad: np.ndarray, expected: str) -> DataError:
    row = int(np.flatnonzero(bad)[0])
    return DataError(
        f"{path}: column {column!r} has {int(bad.sum())} bad value(s); expected {expected}, "
        f"got {values.iloc[row]!r} at {_where(path, row)}"
    )


def _ids(path: Path, frame: pd.DataFrame, column: str) -> pd.Series:
    values = frame[column]
    if pd.api.types.is_float_dtype(values):
        bad = (values.isna() | (values != np.round(values))).to_numpy()
        if bad.any():
            raise _bad(path, column, values, bad, "an id (integer or text)")
        return values.astype(np.int64).astype(str)
    text = values.astype(str).str.strip()
    bad = (values.isna() | (text == "")).to_numpy()
    if bad.any():
        raise _bad(path, column, values, bad, "a non-empty id")
    return text


def _seconds(stamps: pd.Series) -> np.ndarray:
    """UTC datetimes -> integer seconds since the epoch, in the datetimes' own resolution (so a
    date past 2262 does not overflow nanoseconds). A warning says when a fraction of a second is
    dropped: events of one user within the same second are then ordered by item id, as the
    protocol breaks ties, not by their exact time."""
    naive = stamps.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy()
    whole = naive.astype("datetime64[s]")  # floors, like integer division
    if (naive != whole).any():
        warnings.warn(
            "timestamps have fractions of a second; CineSync orders events by whole seconds "
            "(ties by item id), so events within one second may change order",
            stacklevel=2,
        )
    seconds: np.ndarray = whole.astype(np.int64)
    return seconds


_INT64_RANGE = "integer seconds within the int64 range or an ISO 8601 datetime"


def _timestamps(path: Path, values: pd.Series) -> np.ndarray:
    if pd.api.types.is_datetime64_any_dtype(values):
        stamps = pd.to_datetime(values, utc=True)
        bad = stamps.isna().to_numpy()
        if bad.any():
            raise _bad(path, "timestamp", values, bad, "a datetime")
        return _seconds(stamps)
    if pd.api.types.is_integer_dtype(values):
        missing = values.isna().to_numpy(dtype=bool)  # a nullable (Int64) Parquet column
        if missing.any():
            raise _bad(path, "timestamp", values, missing, "integer seconds")
        if pd.api.types.is_unsigned_integer_dtype(values):
            bad = (values > np.iinfo(np.int64).max).to_numpy(dtype=bool)
            if bad.any():
                raise _bad(path, "timestamp", values, bad, _INT64_RANGE)
        return values.to_numpy(dtype=np.int64)
    text = values.astype(str).str.strip()
    is_int = text.str.fullmatch(r"[+-]?\d+").to_numpy(dtype=bool)
    long = is_int & (text.str.len() > 18).to_numpy(dtype=bool)  # may not fit in int64
    if long.any():
        limit = np.iinfo(np.int64)
        bad = np.zeros(len(text), dtype=bool)
        bad[long] = [not limit.min <= int(v) <= limit.max for v in text[long]]
        if bad.any():
            raise _bad(path, "timestamp", values, bad, _INT64_RANGE)
    out = np.zeros(len(text), dtype=np.int64)
    out[is_int] = text[is_int].astype(np.int64).to_numpy()
    if not is_int.all():
        stamps = pd.to_datetime(text[~is_int], errors="coerce", format="ISO8601", utc=True)
        bad = np.zeros(len(text), dtype=bool)
        bad[~is_int] = stamps.isna().to_numpy()
        if bad.any():
            raise _bad(path, "timestamp", values, bad, "integer seconds or an ISO 8601 datetime")
        out[~is_int] = _seconds(stamps)
    return out


def _checked_timestamps(path: Path, values: pd.Series) -> np.ndarray:
    try:
        return _timestamps(path, values)
    except (OverflowError, pd.errors.OutOfBoundsDatetime, pd.errors.OutOfBoundsTimedelta) as exc:
        raise DataError(
            f"{path}: column 'timestamp' has a value out of range ({exc}); expected {_INT64_RANGE}"
        ) from exc


def read_interactions(path: Path) -> pd.DataFrame:
    frame = read_table(path, ("user_id", "item_id", "timestamp"))
    out = pd.DataFrame(
        {
            "user_id": _ids(path, frame, "user_id"),
            "item_id": _ids(path, frame, "item_id"),
            "timestamp": _checked_timestamps(path, frame["timestamp"]),
        }
    )
    if "rating" in frame.columns:
        ratings = pd.to_numeric(frame["rating"], errors="coerce")
        bad = ratings.isna().to_numpy()
        if bad.any():
            raise _bad(path, "rating", frame["rating"], bad, "a number")
        out["rating"] = ratings.astype(np.float32)
    return out


def _parts(value: Any) -> list[str]:
    """A cell's values: "A|B" split on '|', a list-like (a Parquet list) taken as it is."""
    if isinstance(value, str):
        parts = value.split("|")
    elif pd.api.types.is_list_like(value):
        parts = [str(v) for v in value if not (v is None or (np.ndim(v) == 0 and pd.isna(v)))]
    elif value is None or pd.isna(value):
        return []
    else:
        parts = str(value).split("|")
    return [p.strip() for p in parts if p.strip()]


def _genre_list(value: Any) -> list[str]:
    return [g for g in _parts(value) if g != "(no genres listed)"]


def _tag_text(value: Any) -> str:
    return value if isinstance(value, str) else "|".join(_parts(value))


def read_items(path: Path) -> pd.DataFrame:
    frame = read_table(path, ("item_id", "title"))
    ids = _ids(path, frame, "item_id")
    dup = ids.duplicated().to_numpy()
    if dup.any():
        row = int(np.flatnonzero(dup)[0])
        raise DataError(
            f"{path}: duplicate item_id {ids.iloc[row]!r} at {_where(path, row)} "
            f"({int(dup.sum())} duplicate row(s)); item ids must be unique"
        )
    titles = frame["title"].fillna("").astype(str)
    parsed = [split_title(t) for t in titles]
    genres = [_genre_list(v) for v in frame["genres"]] if "genres" in frame else [[]] * len(frame)
    if "year" in frame.columns:
        year = pd.to_numeric(frame["year"].replace("", None), errors="coerce")
        bad = (
            year.isna() & frame["year"].notna() & (frame["year"].astype(str).str.strip() != "")
        ).to_numpy()
        if bad.any():
            raise _bad(path, "year", frame["year"], bad, "an integer year or empty")
        years = year.round().astype("Int64").array
        title_col = titles.str.strip().tolist()
    else:
        years = pd.array([p[1] for p in parsed], dtype="Int64")
        title_col = [p[0] for p in parsed]
    tags = [_tag_text(v) for v in frame["tags"]] if "tags" in frame else [""] * len(frame)
    return pd.DataFrame(
        {"item_id": ids, "title": title_col, "genres": genres, "year": years, "tags": tags}
    )


def _pick(folder: Path, stem: str) -> Path | None:
    found = [folder / f"{stem}{s}" for s in SUFFIXES if (folder / f"{stem}{s}").is_file()]
    if len(found) > 1:
        raise DataError(f"{folder}: both {found[0].name} and {found[1].name} exist; keep only one")
    return found[0] if found else None


def load_generic(path: Path) -> Dataset:
    """Load a folder (interactions.* [+ items.*]) or a single interactions file."""
    if path.is_dir():
        interactions_path = _pick(path, "interactions")
        if interactions_path is None:
            raise DataError(f"{path}: no interactions.csv or interactions.parquet in this folder")
        items_path = _pick(path, "items")
    elif path.is_file():
        interactions_path, items_path = path, None
    else:
        raise DataError(
            f"{path}: no such file or folder (and not a known dataset name: "
            f"ml-latest-small, ml-100k, synthetic[:...])"
        )
    interactions = read_interactions(interactions_path)
    items = read_items(items_path) if items_path is not None else None
    return build_dataset(
        path.stem if path.is_file() else path.name,
        interactions,
        items,
        source=str(interactions_path),
        items_source=str(items_path),
    )
