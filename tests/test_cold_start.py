"""The cold-start benchmark: held-out users are really gone from training, and on data whose
features carry signal the feature-only query beats popularity for them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from benchmarks.cold_start import drop_users, main
from training.data import load_dataset
from training.tiny_bundle import with_taste_features


def test_drop_users_removes_exactly_their_interactions_and_features() -> None:
    ds = with_taste_features(load_dataset("synthetic:users=50,items=40,interactions=800,seed=1"))
    cold = np.asarray([0, 7, 49])
    warm = drop_users(ds, cold)
    assert warm.n_users == 47
    assert warm.n_items == ds.n_items
    assert set(warm.user_ids) == set(ds.user_ids) - {ds.user_ids[u] for u in cold}
    assert warm.n_interactions == ds.n_interactions - sum(len(ds.sequence(u)) for u in cold)
    for new, old in ((0, 1), (5, 6), (46, 48)):
        assert warm.user_ids[new] == ds.user_ids[old]
        assert np.array_equal(warm.sequence(new), ds.sequence(old))
        assert warm.user_features is not None
        assert ds.user_features is not None
        assert warm.user_features.iloc[new].tolist() == ds.user_features.iloc[old].tolist()


def test_feature_queries_beat_popularity_for_held_out_users_when_features_carry_signal(
    tmp_path: Path,
) -> None:
    main(["--dataset", "synthetic-taste", "--config", "training/configs/two_tower-tiny.toml",
          "--seeds", "0", "--out", str(tmp_path)])  # fmt: skip
    result = json.loads((tmp_path / "cold_start.json").read_text())
    summary = result["summary"]
    for metric in ("first_hr@10", "any_precision@10"):
        assert summary["features"][metric][0] > 1.3 * summary["popular"][metric][0]
    assert result["runs"][0]["cold_users"] == 200
    assert "| features |" in (tmp_path / "cold_start.md").read_text()
