"""ml-latest-small (bundled, byte-exact) and MovieLens 100K (from the data dir)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest

from training.data import load_dataset, resolve_data_dir
from training.data.movielens import BUNDLED_DIR, load_ml100k, split_title


def test_bundled_csvs_match_the_sha256_in_the_bundled_readme() -> None:
    readme = (BUNDLED_DIR / "README.md").read_text(encoding="utf-8")
    documented = dict(re.findall(r"\| `(\w+\.csv)` \| [\d,]+ \| `([0-9a-f]{64})` \|", readme))
    assert set(documented) == {"ratings.csv", "movies.csv", "tags.csv", "links.csv"}
    for name, sha in documented.items():
        assert hashlib.sha256((BUNDLED_DIR / name).read_bytes()).hexdigest() == sha, name


def test_ml_latest_small_counts_and_metadata() -> None:
    ds = load_dataset("ml-latest-small")
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (610, 9742, 100836)
    assert ds.ratings is not None
    assert set(np.unique(ds.ratings)) == set(np.arange(1, 11) / 2)
    meta = ds.item_meta.set_index("item_id")
    toy = meta.loc["1"]
    assert (toy["title"], toy["year"]) == ("Toy Story", 1995)
    assert toy["genres"] == ["Adventure", "Animation", "Children", "Comedy", "Fantasy"]
    assert "pixar" in toy["tags"].split("|")
    no_genres = [g for g in ds.item_meta["genres"][1:] if not g]
    assert no_genres
    assert "(no genres listed)" not in {x for g in ds.item_meta["genres"] for x in g}
    assert ds.user_features is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Toy Story (1995)", ("Toy Story", 1995)),
        ("Babylon 5", ("Babylon 5", None)),
        ("Ready Player One (2018) ", ("Ready Player One", 2018)),
        ("Blade Runner 2049 (2017)", ("Blade Runner 2049", 2017)),
    ],
)
def test_split_title_separates_the_year(raw: str, expected: tuple[str, int | None]) -> None:
    assert split_title(raw) == expected


def _ml100k_dir() -> Path:
    directory = resolve_data_dir() / "ml-100k"
    if not (directory / "u.data").is_file():
        pytest.skip(f"MovieLens 100K not found at {directory} (set CINESYNC_DATA_DIR)")
    return directory


@pytest.mark.ml100k
def test_ml100k_counts_latin1_titles_genres_and_demographics() -> None:
    directory = _ml100k_dir()
    ds = load_ml100k(directory)
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (943, 1682, 100000)
    meta = ds.item_meta.set_index("item_id")
    titles = set(meta["title"])
    assert any(any(ord(c) > 127 for c in t) for t in titles)  # latin-1 decoded (e.g. accents)
    assert not any("\ufffd" in t for t in titles)
    assert meta.loc["1", "genres"] == ["Animation", "Children's", "Comedy"]
    assert meta.loc["1", "year"] == 1995
    assert meta.loc["23", "title"] == "Taxi Driver"
    assert meta.loc["23", "year"] == 1976  # the title's year, not u.item's 16-Feb-1996 release
    assert meta.loc["23", "release_year"] == 1996  # what the release-decade feature reads
    assert meta.loc["267", "genres"] == []  # u.genre's "unknown" flag is no genre
    assert not any("unknown" in g for g in meta["genres"])
    features = ds.user_features
    assert features is not None
    assert len(features) == 943
    assert set(features.columns) >= {"age", "gender", "occupation"}
    first = features.iloc[int(np.flatnonzero(ds.user_ids == "1")[0])]
    assert (first["age"], first["gender"], first["occupation"]) == (24, "M", "technician")
    assert load_dataset("ml-100k", directory.parent).n_interactions == 100000
