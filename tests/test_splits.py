"""Leave-one-out by time and the global temporal split."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training.data import leave_one_out, load_dataset, temporal_split
from training.data.build import build_dataset
from training.data.dataset import Dataset
from training.errors import ConfigError


def _tiny() -> Dataset:
    rows = [
        ("a", "1", 10),
        ("a", "2", 20),
        ("a", "3", 30),
        ("a", "4", 40),  # 4 interactions
        ("b", "2", 5),
        ("b", "4", 6),  # 2 interactions: train only
        ("c", "3", 1),
        ("c", "1", 2),
        ("c", "2", 2),  # tie at t=2: item 1 before 2
    ]
    return build_dataset("tiny", pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]))


def test_leave_one_out_holds_out_last_for_test_and_second_last_for_valid() -> None:
    ds = _tiny()
    split = leave_one_out(ds)
    a, b, c = (int(np.flatnonzero(ds.user_ids == x)[0]) for x in "abc")
    ext = ds.item_ids
    assert ext[split.train[a]].tolist() == ["1", "2"]
    assert ext[split.train[b]].tolist() == ["2", "4"]
    assert ext[split.train[c]].tolist() == ["3"]
    assert split.valid.users.tolist() == [a, c]
    assert split.test.users.tolist() == [a, c]
    assert [ext[t].tolist() for t in split.valid.targets] == [["3"], ["1"]]
    assert [ext[t].tolist() for t in split.test.targets] == [["4"], ["2"]]
    assert [ext[h].tolist() for h in split.valid.histories] == [["1", "2"], ["3"]]
    assert [ext[h].tolist() for h in split.test.histories] == [["1", "2", "3"], ["3", "1"]]
    assert split.name == "loo-time"
    assert split.valid.stage == "valid"
    assert split.test.stage == "test"


def test_leave_one_out_on_ml_latest_small_covers_every_interaction_once() -> None:
    ds = load_dataset("ml-latest-small")
    split = leave_one_out(ds)
    assert len(split.train) == ds.n_users
    assert len(split.test) == ds.n_users
    held = sum(len(t) for t in split.train) + len(split.valid) + len(split.test)
    assert held == ds.n_interactions
    for u, h, t in zip(split.test.users, split.test.histories, split.test.targets, strict=True):
        assert np.array_equal(np.concatenate([h, t]), ds.sequence(int(u)))


@pytest.mark.parametrize("spec", ["ml-latest-small", "synthetic"])
def test_temporal_split_never_leaks_the_future_into_histories(spec: str) -> None:
    ds = load_dataset(spec)
    split = temporal_split(ds, valid_frac=0.1, test_frac=0.1)
    assert len(split.valid) > 0
    assert len(split.test) > 0
    for eval_set in (split.valid, split.test):
        for u, history, targets in zip(
            eval_set.users, eval_set.histories, eval_set.targets, strict=True
        ):
            lo, hi = ds.offsets[u], ds.offsets[u + 1]
            items, times = ds.items[lo:hi], ds.timestamps[lo:hi]
            seen_until = times[len(history) - 1]
            assert np.array_equal(items[: len(history)], history)
            target_times = times[len(history) :][np.isin(items[len(history) :], targets)]
            assert seen_until < target_times.min()
            assert len(np.unique(targets)) == len(targets)
            assert not np.isin(targets, history).any()
    for u, history in zip(split.valid.users, split.valid.histories, strict=True):
        assert np.array_equal(split.train[u], history)


def test_temporal_split_cuts_at_global_quantiles() -> None:
    ds = load_dataset("ml-latest-small")
    split = temporal_split(ds, valid_frac=0.1, test_frac=0.2)
    train_max = max(
        ds.timestamps[ds.offsets[u] : ds.offsets[u] + len(t)].max()
        for u, t in enumerate(split.train)
        if len(t)
    )
    n_train = sum(len(t) for t in split.train)
    assert 0.69 <= n_train / ds.n_interactions <= 0.71
    first_test = min(
        ds.timestamps[ds.offsets[u] + len(h)]
        for u, h in zip(split.test.users, split.test.histories, strict=True)
    )
    assert train_max < first_test


def test_temporal_split_rejects_impossible_fractions() -> None:
    with pytest.raises(ConfigError, match="valid_frac"):
        temporal_split(_tiny(), valid_frac=0.6, test_frac=0.5)
