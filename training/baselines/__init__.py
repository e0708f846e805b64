"""Non-neural baselines behind one interface (training.baselines.base.Baseline).

BASELINES maps the `cinesync evaluate --model` name to the class; each class may declare a
`grid` of hyper-parameters that evaluate_cli selects on the validation split.
"""

from __future__ import annotations

from training.baselines.ease import EASE
from training.baselines.itemknn import ItemKNN
from training.baselines.popularity import Popularity

BASELINES: dict[str, type[Popularity] | type[ItemKNN] | type[EASE]] = {
    "pop": Popularity,
    "itemknn": ItemKNN,
    "ease": EASE,
}

__all__ = ["BASELINES", "EASE", "ItemKNN", "Popularity"]
