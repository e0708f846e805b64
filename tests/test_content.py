"""Content embeddings: TF-IDF over genres, tags and title words, truncated SVD, unit rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training.content import content_embeddings, item_tokens
from training.data import Dataset, load_dataset

MOVIES = [  # title, genres, tags
    ("Toy Story", ["Animation", "Children", "Comedy"], "pixar|fun"),
    ("Toy Story 2", ["Animation", "Children", "Comedy"], "pixar"),
    ("Heat", ["Action", "Crime", "Thriller"], "heist"),
    ("Casino", ["Crime", "Drama"], "mafia|las vegas"),
    ("Godfather, The", ["Crime", "Drama"], "mafia"),
    ("Sense and Sensibility", ["Drama", "Romance"], "jane austen"),
    ("Pride and Prejudice", ["Drama", "Romance"], "jane austen"),
    ("Alien", ["Horror", "Sci-Fi"], "space"),
    ("Aliens", ["Action", "Horror", "Sci-Fi"], "space|sequel"),
    ("Finding Nemo", ["Animation", "Children"], "pixar|ocean"),
    ("", [], ""),  # nothing to describe it
]


def _dataset(movies: list[tuple[str, list[str], str]]) -> Dataset:
    n = len(movies)
    meta = pd.DataFrame(
        {
            "item_id": ["", *(str(i) for i in range(1, n + 1))],
            "title": ["", *(m[0] for m in movies)],
            "genres": [[], *(m[1] for m in movies)],
            "year": pd.array([pd.NA] * (n + 1), dtype="Int64"),
            "tags": ["", *(m[2] for m in movies)],
        }
    )
    items = np.arange(1, n + 1, dtype=np.int32)
    return Dataset(
        name="toy",
        user_ids=np.array(["u1"]),
        item_ids=meta["item_id"].to_numpy(dtype=str),
        users=np.zeros(n, dtype=np.int32),
        items=items,
        timestamps=np.arange(n, dtype=np.int64),
        ratings=None,
        item_meta=meta,
    )


def _cos(emb: np.ndarray, a: int, b: int) -> float:
    return float(emb[a] @ emb[b])


@pytest.mark.parametrize("dim", [4, 64])  # 4 forces the SVD path, 64 keeps the TF-IDF space
def test_items_sharing_genres_and_words_are_nearer_than_unrelated_ones(dim: int) -> None:
    emb = content_embeddings(_dataset(MOVIES), dim=dim)
    toy, toy2, heat, casino, godfather, sense, pride, alien, aliens = range(1, 10)
    assert emb.shape[1] <= dim
    assert _cos(emb, toy, toy2) > _cos(emb, toy, heat)
    assert _cos(emb, toy, toy2) > _cos(emb, toy, sense)
    assert _cos(emb, casino, godfather) > _cos(emb, casino, alien)
    assert _cos(emb, sense, pride) > _cos(emb, sense, aliens)


def test_rows_are_unit_length_row_zero_and_empty_items_are_zero() -> None:
    emb = content_embeddings(_dataset(MOVIES), dim=4)
    assert emb.dtype == np.float32
    assert emb.shape[0] == len(MOVIES) + 1
    assert not emb[0].any()
    assert not emb[len(MOVIES)].any()  # no genre, tag or title word
    norms = np.linalg.norm(emb[1 : len(MOVIES)], axis=1)
    assert np.allclose(norms, 1.0, atol=1e-5)


def test_tokens_are_namespaced_and_drop_years_and_stopwords() -> None:
    tokens = item_tokens("The Matrix (1999)", ["Action", "Sci-Fi"], "cyberpunk|dystopia")
    assert tokens == [
        "genre:action",
        "genre:sci-fi",
        "tag:cyberpunk",
        "tag:dystopia",
        "word:matrix",
    ]
    assert item_tokens("", ["(no genres listed)"], "") == []


def test_embeddings_are_deterministic_for_a_seed_on_synthetic_data() -> None:
    ds = load_dataset("synthetic:users=50,items=120,interactions=400,seed=2")
    a, b = content_embeddings(ds, dim=16, seed=0), content_embeddings(ds, dim=16, seed=0)
    assert a.shape == (ds.n_items + 1, 16)
    assert np.array_equal(a, b)
