"""MovieLens loaders: latest-small (bundled in the repository) and 100K (from the data dir)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from training.data.build import build_dataset
from training.data.dataset import Dataset
from training.errors import DataError

BUNDLED_DIR = Path(__file__).resolve().parent / "bundled" / "ml-latest-small"
ML100K_FILES = ("u.data", "u.item", "u.genre", "u.user")
_YEAR = re.compile(r"^(?P<title>.*?)\s*\((?P<year>\d{4})\)\s*$")


def split_title(raw: str) -> tuple[str, int | None]:
    """'Toy Story (1995)' -> ('Toy Story', 1995); a title without a year keeps year None."""
    text = raw.strip()
    match = _YEAR.match(text)
    if match is None:
        return text, None
    return match.group("title"), int(match.group("year"))


def _read(path: Path, **kwargs: object) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        return pd.read_csv(path, **kwargs)  # type: ignore[call-overload, no-any-return]
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: cannot parse ({exc})") from exc


def load_ml_latest_small(directory: Path = BUNDLED_DIR) -> Dataset:
    """ratings.csv + movies.csv (title, year, genres) + tags.csv (joined per movie with '|')."""
    ratings = _read(directory / "ratings.csv", dtype={"userId": str, "movieId": str})
    movies = _read(directory / "movies.csv", dtype=str, keep_default_na=False)
    tags = _read(directory / "tags.csv", dtype={"movieId": str, "tag": str}, keep_default_na=False)

    interactions = pd.DataFrame(
        {
            "user_id": ratings["userId"],
            "item_id": ratings["movieId"],
            "timestamp": ratings["timestamp"].astype(np.int64),
            "rating": ratings["rating"].astype(np.float32),
        }
    )
    parsed = [split_title(t) for t in movies["title"]]
    genres = [[] if g in ("", "(no genres listed)") else g.split("|") for g in movies["genres"]]
    tag_text = (
        tags[tags["tag"].str.strip() != ""]
        .drop_duplicates(["movieId", "tag"])
        .groupby("movieId", sort=False)["tag"]
        .agg("|".join)
    )
    items = pd.DataFrame(
        {
            "item_id": movies["movieId"],
            "title": [p[0] for p in parsed],
            "genres": genres,
            "year": pd.array([p[1] for p in parsed], dtype="Int64"),
            "tags": movies["movieId"].map(tag_text).fillna(""),
        }
    )
    return build_dataset(
        "ml-latest-small",
        interactions,
        items,
        source=str(directory / "ratings.csv"),
        items_source=str(directory / "movies.csv"),
    )


def _release_year(date: str) -> int | None:
    match = re.search(r"(\d{4})\s*$", date)
    return int(match.group(1)) if match else None


# u.genre's first entry flags items whose genre is not known (items 267 and 1373): not a genre
_ML100K_NO_GENRE = "unknown"


def load_ml100k(directory: Path) -> Dataset:
    """u.data (tab separated), u.item (latin-1, '|', 19 genre flags named by u.genre), u.user."""
    for name in ML100K_FILES:
        if not (directory / name).is_file():
            raise DataError(f"{directory / name}: file not found (MovieLens 100K is incomplete)")
    data = _read(
        directory / "u.data",
        sep="\t",
        header=None,
        names=["user_id", "item_id", "rating", "timestamp"],
        dtype={"user_id": str, "item_id": str, "rating": np.float32, "timestamp": np.int64},
    )
    genre_table = _read(
        directory / "u.genre",
        sep="|",
        header=None,
        names=["name", "index"],
        encoding="latin-1",
        dtype={"name": str, "index": np.int64},
    )
    genre_names = genre_table.sort_values("index")["name"].tolist()
    item_cols = [
        "item_id",
        "title",
        "release",
        "video",
        "url",
        *[f"g{i}" for i in range(len(genre_names))],
    ]
    raw = _read(
        directory / "u.item",
        sep="|",
        header=None,
        names=item_cols,
        encoding="latin-1",
        dtype=str,
        keep_default_na=False,
    )
    flags = raw[[f"g{i}" for i in range(len(genre_names))]].to_numpy() == "1"
    parsed = [split_title(t) for t in raw["title"]]
    items = pd.DataFrame(
        {
            "item_id": raw["item_id"],
            "title": [p[0] for p in parsed],
            "genres": [
                [genre_names[j] for j in np.flatnonzero(row) if genre_names[j] != _ML100K_NO_GENRE]
                for row in flags
            ],
            # the film's year is in its title ("Taxi Driver (1976)"); u.item's release date is
            # often a later (video) release (16-Feb-1996), so it is only the fallback
            "year": pd.array(
                [
                    year if year is not None else _release_year(date)
                    for (_, year), date in zip(parsed, raw["release"], strict=True)
                ],
                dtype="Int64",
            ),
            # ...but the release date is what the release-decade feature was selected with
            # (training.features): when the film became available, not when it was made
            "release_year": pd.array(
                [
                    _release_year(date) if _release_year(date) is not None else year
                    for (_, year), date in zip(parsed, raw["release"], strict=True)
                ],
                dtype="Int64",
            ),
            "tags": [""] * len(raw),
        }
    )
    users = _read(
        directory / "u.user",
        sep="|",
        header=None,
        names=["user_id", "age", "gender", "occupation", "zip"],
        dtype={"user_id": str, "age": np.int64, "gender": str, "occupation": str, "zip": str},
    )
    features = users.set_index("user_id")
    return build_dataset(
        "ml-100k",
        data,
        items,
        features,
        source=str(directory / "u.data"),
        items_source=str(directory / "u.item"),
    )
