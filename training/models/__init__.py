"""Model registry: name -> model class, config dataclass, default config file and training task."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from training.config import CONFIG_DIR, TrainConfig
from training.data.dataset import Dataset
from training.data.splits import Split
from training.errors import ConfigError
from training.models.bert4rec import BERT4Rec, BERT4RecConfig
from training.models.sasrec import SASRec, SASRecConfig
from training.models.two_tower import TwoTower, TwoTowerConfig
from training.tasks import ClozeTask, NextItemTask, TrainTask
from training.two_tower_task import TwoTowerTask

TaskFactory = Callable[[nn.Module, Split, TrainConfig], TrainTask]


@dataclass(frozen=True)
class ModelSpec:
    name: str
    model_cls: type[nn.Module]
    config_cls: type
    default_config: Path
    task: TaskFactory = NextItemTask  # how batches are built and the loss computed
    # builds the model with dataset-derived parts (features); None = model_cls(config)
    from_dataset: Callable[[Any, Dataset], nn.Module] | None = None

    def build(self, config: Any, dataset: Dataset) -> nn.Module:
        """The model for `config` on `dataset` (use this rather than model_cls(config))."""
        if self.from_dataset is None:
            return self.model_cls(config)
        return self.from_dataset(config, dataset)


MODELS: dict[str, ModelSpec] = {
    "sasrec": ModelSpec(
        "sasrec",
        SASRec,
        SASRecConfig,
        CONFIG_DIR / "sasrec.toml",
        from_dataset=SASRec.from_dataset,
    ),
    "bert4rec": ModelSpec(
        "bert4rec", BERT4Rec, BERT4RecConfig, CONFIG_DIR / "bert4rec.toml", task=ClozeTask
    ),
    "two_tower": ModelSpec(
        "two_tower",
        TwoTower,
        TwoTowerConfig,
        CONFIG_DIR / "two_tower.toml",
        task=TwoTowerTask,
        from_dataset=TwoTower.from_dataset,
    ),
}


def get_model_spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; choices: {', '.join(sorted(MODELS))}") from None


def spec_for(model: nn.Module) -> ModelSpec:
    """The registry entry of `model`'s class (subclasses included)."""
    for spec in MODELS.values():
        if isinstance(model, spec.model_cls):
            return spec
    raise ConfigError(f"no registered model for {type(model).__name__}")
