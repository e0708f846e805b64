"""Pick a baseline's hyper-parameters on the validation split only (by validation NDCG@10)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from training.baselines.base import Baseline
from training.errors import DataError
from training.evaluate import evaluate

if TYPE_CHECKING:
    from training.data.splits import Split

SELECTION_METRIC = "ndcg@10"


@dataclass
class Selection:
    model: Baseline
    params: dict[str, Any]
    trials: list[dict[str, Any]] = field(default_factory=list)  # [{"params", "valid ndcg@10"}]


def select_on_validation(
    cls: type[Any], split: Split, train_popularity: np.ndarray, grid: dict[str, Any] | None = None
) -> Selection:
    """Fit cls once per grid point (cls.grid by default), keep the best by validation NDCG@10.

    Ties keep the earlier grid point. A class with an empty grid is fitted once with defaults.
    """
    grid = dict(cls.grid if grid is None else grid)
    n_items = split.dataset.n_items
    best: Selection | None = None
    best_value = -1.0
    trials: list[dict[str, Any]] = []
    for values in itertools.product(*grid.values()):
        params = dict(zip(grid.keys(), values, strict=True))
        model = cls(**params).fit(split.train, n_items)
        if len(grid) == 0:
            return Selection(model, model.params(), trials)
        value = evaluate(
            model.score, split.valid, split.dataset, ks=(10,), train_popularity=train_popularity
        )[SELECTION_METRIC]
        trials.append({"params": params, f"valid {SELECTION_METRIC}": value})
        if value > best_value:
            best, best_value = Selection(model, model.params(), trials), value
        del model
    if best is None:  # every value was NaN: no validation rows to select on
        raise DataError(
            f"cannot select {cls.__name__}'s parameters on validation {SELECTION_METRIC}: the "
            "validation split is empty (a user needs at least 3 interactions to have one)"
        )
    return best
