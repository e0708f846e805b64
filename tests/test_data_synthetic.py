"""The seeded synthetic generator: deterministic, structured, and big when asked."""

from __future__ import annotations

import resource
import time
from collections import Counter

import numpy as np
import pytest

from training.data import leave_one_out, load_dataset
from training.data.synthetic import GENRES, SyntheticConfig, generate
from training.errors import DataError

SMALL = "synthetic:users=500,items=400,interactions=15000,genres=12,seed=3"


def test_same_seed_gives_identical_data_and_another_seed_differs() -> None:
    a, b = load_dataset(SMALL), load_dataset(SMALL)
    c = load_dataset(SMALL.replace("seed=3", "seed=4"))
    for name in ("users", "items", "timestamps"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
    assert a.item_meta["genres"].tolist() == b.item_meta["genres"].tolist()
    assert not np.array_equal(a.items, c.items)


def test_shape_sizes_metadata_and_time_order() -> None:
    ds = load_dataset(SMALL)
    assert (ds.n_users, ds.n_items) == (500, 400)
    assert 0.95 * 15000 <= ds.n_interactions <= 15000
    assert np.all(np.diff(ds.offsets) >= 3)
    assert ds.item_meta.loc[17, "title"] == "Synthetic Movie 17"
    assert ds.item_ids[17] == "17"
    genres = ds.item_meta["genres"][1:]
    assert all(1 <= len(g) <= 3 and set(g) <= set(GENRES[:12]) for g in genres)
    same_user = ds.users[1:] == ds.users[:-1]
    assert np.all(np.diff(ds.timestamps)[same_user] > 0)
    pairs = ds.users.astype(np.int64) * (ds.n_items + 1) + ds.items
    assert len(np.unique(pairs)) == len(pairs)  # no repeated item within a user


def test_popularity_is_long_tailed() -> None:
    pop = np.sort(load_dataset(SMALL).item_popularity()[1:])[::-1]
    top_share = pop[: len(pop) // 10].sum() / pop.sum()
    assert top_share > 0.25  # uniform popularity would give about 0.1


def test_order_carries_signal_a_bigram_beats_popularity() -> None:
    split = leave_one_out(load_dataset(SMALL))
    following: dict[int, Counter[int]] = {}
    popularity: Counter[int] = Counter()
    for seq in split.train:
        popularity.update(seq.tolist())
        for prev, nxt in zip(seq[:-1].tolist(), seq[1:].tolist(), strict=True):
            following.setdefault(prev, Counter())[nxt] += 1
    top = popularity.most_common(1)[0][0]
    bigram_hits = pop_hits = 0
    for history, target in zip(split.test.histories, split.test.targets, strict=True):
        counts = following.get(int(history[-1]))
        guess = counts.most_common(1)[0][0] if counts else top
        bigram_hits += guess == target[0]
        pop_hits += top == target[0]
    assert bigram_hits / len(split.test) > 0.3
    assert bigram_hits > 5 * max(pop_hits, 1)


def test_plain_synthetic_is_small_and_quick() -> None:
    start = time.perf_counter()
    ds = load_dataset("synthetic")
    assert (ds.n_users, ds.n_items) == (2000, 1000)
    assert ds.n_interactions > 50_000
    assert time.perf_counter() - start < 5


@pytest.mark.parametrize(
    "spec",
    [
        "synthetic:users=abc",
        "synthetic:colour=3",
        "synthetic:users=10,interactions=5",
        "synthetic:genres=99",
    ],
)
def test_bad_spec_is_a_data_error(spec: str) -> None:
    with pytest.raises(DataError, match="synthetic spec"):
        load_dataset(spec)


@pytest.mark.slow
def test_ten_million_interactions_over_a_million_items_fit_and_build_fast() -> None:
    start = time.perf_counter()
    ds = generate(SyntheticConfig(users=200_000, items=1_000_000, interactions=10_000_000, seed=0))
    elapsed = time.perf_counter() - start
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"synthetic 10M/1M: {elapsed:.1f} s, peak RSS {peak_gib:.2f} GiB")
    assert ds.n_items == 1_000_000
    assert ds.n_interactions >= 9_900_000
    assert elapsed < 180
    assert peak_gib < 8


OK = "synthetic:users=10,items=50,interactions=200"


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ("seed=-1", "seed must be >= 0"),
        ("min_length=2", "min_length must be >= 3 (leave-one-out needs 3"),
        ("zipf=nan", "zipf must be a finite number >= 0"),
        ("zipf=inf", "zipf must be a finite number >= 0"),
        ("zipf=-0.5", "zipf must be a finite number >= 0"),
        ("items=5,interactions=30", "items >= 6"),
        ("interactions=251", "interactions must be at most users * (items // 2) = 250"),
    ],
)
def test_a_spec_the_generator_cannot_honour_is_refused_with_the_reason(
    extra: str, problem: str
) -> None:
    with pytest.raises(DataError, match="synthetic spec") as info:
        SyntheticConfig.parse(f"{OK},{extra}")
    assert problem in str(info.value)


def test_the_largest_honourable_spec_is_accepted() -> None:
    cfg = SyntheticConfig.parse("synthetic:users=10,items=50,interactions=250,min_length=3,zipf=0")
    assert (cfg.interactions, cfg.min_length, cfg.zipf) == (250, 3, 0.0)
    assert SyntheticConfig.parse(OK).seed == 0
