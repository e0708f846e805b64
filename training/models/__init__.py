"""Model registry: name -> model class, its config dataclass and its default config file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from training.config import CONFIG_DIR
from training.errors import ConfigError
from training.models.sasrec import SASRec, SASRecConfig


@dataclass(frozen=True)
class ModelSpec:
    name: str
    model_cls: type[nn.Module]
    config_cls: type
    default_config: Path


MODELS: dict[str, ModelSpec] = {
    "sasrec": ModelSpec("sasrec", SASRec, SASRecConfig, CONFIG_DIR / "sasrec.toml"),
}


def get_model_spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; choices: {', '.join(sorted(MODELS))}") from None
