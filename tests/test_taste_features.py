"""The synthetic `taste` feature is a declared favourite genre: it must not be computed from the
user's items, or the cold-start benchmark would describe held-out users by the very items it
scores them on."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from training.data import load_dataset
from training.data.synthetic import SyntheticConfig, favourite_genres
from training.errors import DataError
from training.tiny_bundle import with_taste_features

SPEC = "synthetic:users=200,items=120,interactions=3000,seed=3"


def test_a_held_out_users_taste_does_not_depend_on_their_items() -> None:
    ds = load_dataset(SPEC)
    before = with_taste_features(ds, 0).user_features
    assert before is not None
    genres = ds.item_meta["genres"]
    rng = np.random.default_rng(0)
    cold = np.sort(rng.choice(ds.n_users, 20, replace=False))  # as the benchmark holds users out
    items = ds.items.copy()
    for user in cold.tolist():
        # every item of the user becomes an item of one genre that is not its current taste
        other = next(g for g in ("Western", "War", "Horror") if g != before["taste"].iloc[user])
        pool = np.asarray([i for i in range(1, ds.n_items + 1) if genres.iloc[i] == [other]])
        if len(pool) == 0:
            pool = np.asarray([i for i in range(1, ds.n_items + 1) if other in genres.iloc[i]])
        lo, hi = int(ds.offsets[user]), int(ds.offsets[user + 1])
        items[lo:hi] = pool[np.arange(hi - lo) % len(pool)]
    changed = dataclasses.replace(ds, items=items)
    assert not np.array_equal(changed.items, ds.items)
    after = with_taste_features(changed, 0).user_features
    assert after is not None
    pd.testing.assert_frame_equal(after, before)


def test_taste_is_the_generators_latent_favourite_and_carries_signal() -> None:
    ds = load_dataset(SPEC)
    features = with_taste_features(ds, 0).user_features
    assert features is not None
    taste = features["taste"].to_numpy()
    assert taste.tolist() == favourite_genres(SyntheticConfig.parse(SPEC)).tolist()
    assert set(taste) <= {g for row in ds.item_meta["genres"] for g in row}
    genres = ds.item_meta["genres"]
    share = np.mean(
        [
            np.mean([t in genres.iloc[i] for i in ds.sequence(u).tolist()])
            for u, t in enumerate(taste)
        ]
    )
    base = np.mean([np.mean([t in g for g in genres.iloc[1:]]) for t in taste])
    assert share > 2 * base  # users do take far more items of their declared genre than chance


def test_taste_features_need_a_synthetic_dataset() -> None:
    with pytest.raises(DataError, match="needs a synthetic dataset"):
        with_taste_features(load_dataset("ml-latest-small"))
