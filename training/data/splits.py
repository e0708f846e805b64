"""Evaluation splits: leave-one-out by time and a global temporal split (contract: COMMON.md)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.data.dataset import Dataset
from training.errors import ConfigError


@dataclass(frozen=True)
class EvalSet:
    stage: str  # "valid" | "test"
    users: np.ndarray  # int64 [m] internal user ids
    histories: list[
        np.ndarray
    ]  # per row: items the model sees, chronological; excluded from ranking
    targets: list[np.ndarray]  # per row: held-out items (exactly 1 for leave-one-out)

    def __len__(self) -> int:
        return len(self.users)


@dataclass(frozen=True)
class Split:
    name: str  # "loo-time" | "temporal-global"
    dataset: Dataset
    train: list[np.ndarray]  # per user (index = user), chronological training items (int32)
    valid: EvalSet
    test: EvalSet


def _eval_set(stage: str, rows: list[tuple[int, np.ndarray, np.ndarray]]) -> EvalSet:
    return EvalSet(
        stage=stage,
        users=np.array([r[0] for r in rows], dtype=np.int64),
        histories=[r[1] for r in rows],
        targets=[r[2] for r in rows],
    )


def leave_one_out(ds: Dataset) -> Split:
    """Last item = test, second-last = valid. Users with < 3 interactions: all in train, no targets.
    Valid history = the train sequence; test history = train sequence + the valid item."""
    train: list[np.ndarray] = []
    valid: list[tuple[int, np.ndarray, np.ndarray]] = []
    test: list[tuple[int, np.ndarray, np.ndarray]] = []
    for u in range(ds.n_users):
        seq = ds.sequence(u).astype(np.int32)
        if len(seq) < 3:
            train.append(seq)
            continue
        train.append(seq[:-2])
        valid.append((u, seq[:-2], seq[-2:-1]))
        test.append((u, seq[:-1], seq[-1:]))
    return Split("loo-time", ds, train, _eval_set("valid", valid), _eval_set("test", test))


def _first_unique_not_in(items: np.ndarray, history: np.ndarray) -> np.ndarray:
    """Items in first-occurrence order, without repeats and without anything in history."""
    _, first = np.unique(items, return_index=True)
    ordered = items[np.sort(first)]
    return ordered[~np.isin(ordered, history)].astype(np.int32)


def temporal_split(ds: Dataset, valid_frac: float = 0.1, test_frac: float = 0.1) -> Split:
    """Global cut-offs t1 <= t2 at timestamp quantiles 1 - valid_frac - test_frac and 1 - test_frac.

    train = interactions before t1. valid: users with train history; history = their train
    items, targets = their items in [t1, t2). test: users with any interaction before t2;
    history = everything before t2, targets = their items at or after t2. Targets are unique and
    never in the history; users whose window adds nothing new get no row.
    """
    if not (0 <= valid_frac < 1 and 0 < test_frac < 1 and valid_frac + test_frac < 1):
        raise ConfigError(
            f"temporal split fractions must satisfy 0 <= valid_frac, 0 < test_frac and "
            f"valid_frac + test_frac < 1 (got valid_frac={valid_frac}, test_frac={test_frac})"
        )
    ts = np.sort(ds.timestamps)
    n = len(ts)
    t1 = ts[min(n - 1, int(np.floor(n * (1 - valid_frac - test_frac))))]
    t2 = ts[min(n - 1, int(np.floor(n * (1 - test_frac))))]
    train: list[np.ndarray] = []
    valid: list[tuple[int, np.ndarray, np.ndarray]] = []
    test: list[tuple[int, np.ndarray, np.ndarray]] = []
    for u in range(ds.n_users):
        lo, hi = ds.offsets[u], ds.offsets[u + 1]
        seq = ds.items[lo:hi].astype(np.int32)
        times = ds.timestamps[lo:hi]
        a = int(np.searchsorted(times, t1, side="left"))
        b = int(np.searchsorted(times, t2, side="left"))
        train.append(seq[:a])
        if a > 0 and b > a:
            targets = _first_unique_not_in(seq[a:b], seq[:a])
            if len(targets):
                valid.append((u, seq[:a], targets))
        if b > 0 and len(seq) > b:
            targets = _first_unique_not_in(seq[b:], seq[:b])
            if len(targets):
                test.append((u, seq[:b], targets))
    return Split("temporal-global", ds, train, _eval_set("valid", valid), _eval_set("test", test))
