"""Run configuration: a TOML file with a [model] and a [train] table, checked key by key.

Unknown keys, wrong types and bad values raise `ConfigError` naming the key and the value.
The [model] table is checked against the model's own config dataclass (minus fields that come
from the dataset, such as n_items); the [train] table against `TrainConfig`.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model_store.fsops import describe
from training.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
SCHEDULES = ("onecycle", "cosine", "restarts", "constant")
AMP_MODES = ("off", "bf16", "fp16")
DATASET_FIELDS = frozenset({"n_items"})  # model fields filled in from the dataset, never from TOML


@dataclass
class TrainConfig:
    epochs: int = 100
    batch_size: int = 128
    lr: float = 1e-3  # peak learning rate
    weight_decay: float = 0.0  # AdamW, on weight matrices only (not embeddings, norms, biases)
    schedule: str = "onecycle"  # "onecycle" | "cosine" | "restarts" | "constant"
    warmup: float = 0.05  # fraction of all steps spent warming up
    cycles: int = 3  # "restarts": cosine cycles after warm-up, each twice as long as the last
    grad_clip: float = 1.0  # max gradient norm; 0 = off
    amp: str = "off"  # "off" | "bf16" (CPU/CUDA) | "fp16" (CUDA, with a GradScaler)
    patience: int = 10  # evaluations without a better validation NDCG@10 before stopping; 0 = off
    eval_every: int = 1  # epochs between validation evaluations
    eval_batch_size: int = 1024
    windows: int = 1  # training windows of max_len per user, newest first; 0 = all
    sort_chunk: int = 16  # batches come from length-sorted groups of this many (1 = plain shuffle)
    seed: int = 0
    threads: int = 0  # torch intra-op threads; 0 = $CINESYNC_THREADS, else the idle cores
    max_seconds: float = 0.0  # no epoch starts that would end past this time; 0 = no budget
    progress: bool = True  # tqdm bar (only on a terminal)

    def __post_init__(self) -> None:
        _check(self.epochs >= 1, "train.epochs", self.epochs, "must be >= 1")
        _check(self.batch_size >= 1, "train.batch_size", self.batch_size, "must be >= 1")
        _check(self.lr > 0 and math.isfinite(self.lr), "train.lr", self.lr, "must be > 0")
        _check(self.weight_decay >= 0, "train.weight_decay", self.weight_decay, "must be >= 0")
        _check(
            self.schedule in SCHEDULES,
            "train.schedule",
            self.schedule,
            f"must be one of {SCHEDULES}",
        )
        _check(0 <= self.warmup < 1, "train.warmup", self.warmup, "must be in [0, 1)")
        _check(1 <= self.cycles <= 16, "train.cycles", self.cycles, "must be in [1, 16]")
        _check(self.grad_clip >= 0, "train.grad_clip", self.grad_clip, "must be >= 0")
        _check(self.amp in AMP_MODES, "train.amp", self.amp, f"must be one of {AMP_MODES}")
        _check(self.patience >= 0, "train.patience", self.patience, "must be >= 0")
        _check(self.eval_every >= 1, "train.eval_every", self.eval_every, "must be >= 1")
        _check(
            self.eval_batch_size >= 1, "train.eval_batch_size", self.eval_batch_size, "must be >= 1"
        )
        _check(self.sort_chunk >= 1, "train.sort_chunk", self.sort_chunk, "must be >= 1")
        _check(self.windows >= 0, "train.windows", self.windows, "must be >= 0")
        _check(self.threads >= 0, "train.threads", self.threads, "must be >= 0")
        _check(self.max_seconds >= 0, "train.max_seconds", self.max_seconds, "must be >= 0")


@dataclass
class RunConfig:
    model: dict[str, Any] = field(default_factory=dict)  # the model config's fields, minus n_items
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {"model": dict(self.model), "train": dataclasses.asdict(self.train)}


def _check(ok: bool, key: str, value: object, rule: str) -> None:
    if not ok:
        raise ConfigError(f"{key} = {value!r}: {rule}")


def _coerce(key: str, value: object, kind: object) -> object:
    """Accept `value` for a field annotated `kind` (int, float, str, bool); ints pass as floats."""
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind in (int, float, str, bool) and type(value) is kind:
        return value
    name = getattr(kind, "__name__", str(kind))
    raise ConfigError(f"{key} = {value!r}: expected {name}, got {type(value).__name__}")


def _check_table(
    table: str, values: dict[str, Any], cls: type, skip: frozenset[str]
) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    allowed = [f.name for f in dataclasses.fields(cls) if f.name not in skip]
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key in skip:
            raise ConfigError(f"{table}.{key} is set from the dataset; remove it from the config")
        if key not in allowed:
            raise ConfigError(f"unknown key {table}.{key}; allowed: {', '.join(sorted(allowed))}")
        out[key] = _coerce(f"{table}.{key}", value, hints[key])
    return out


def parse_config(data: dict[str, Any], model_config_cls: type) -> RunConfig:
    """Check a parsed TOML document against `model_config_cls` and `TrainConfig`."""
    unknown = sorted(set(data) - {"model", "train"})
    if unknown:
        raise ConfigError(f"unknown table(s) {', '.join(unknown)}; allowed: model, train")
    for table in ("model", "train"):
        if not isinstance(data.get(table, {}), dict):
            raise ConfigError(f"{table} must be a table ([{table}])")
    model = _check_table("model", data.get("model", {}), model_config_cls, DATASET_FIELDS)
    train = _check_table("train", data.get("train", {}), TrainConfig, frozenset())
    config = RunConfig(model=model, train=TrainConfig(**train))
    build_model_config(model_config_cls, config, **dict.fromkeys(DATASET_FIELDS, 1))  # fail early
    return config


def load_config(path: Path, model_config_cls: type) -> RunConfig:
    """Read and check a TOML config; every problem (missing, unreadable, not UTF-8, invalid TOML,
    a bad key or value) is a ConfigError naming the file."""
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {path}") from exc
    except IsADirectoryError as exc:
        raise ConfigError(f"config {path} is a folder; give a TOML file") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {describe(exc)}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not a TOML text file (invalid UTF-8 at byte {exc.start})"
        ) from exc
    try:
        return parse_config(data, model_config_cls)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def apply_overrides(
    config: RunConfig, overrides: dict[str, Any], model_config_cls: type
) -> RunConfig:
    """Apply {"train.epochs": 3, "model.dim": 32, ...}; None values are skipped."""
    data = config.to_dict()
    for dotted, value in overrides.items():
        if value is None:
            continue
        table, _, key = dotted.partition(".")
        if table not in data or not key:
            raise ConfigError(f"override {dotted!r}: expected model.KEY or train.KEY")
        data[table][key] = value
    return parse_config(data, model_config_cls)


def build_model_config(model_config_cls: type, config: RunConfig, **from_dataset: Any) -> Any:
    """The model's config dataclass from the [model] table plus dataset-derived fields."""
    try:
        return model_config_cls(**config.model, **from_dataset)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"model config: {exc}") from exc


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def dump_toml(tables: dict[str, dict[str, Any]]) -> str:
    """TOML text for tables of scalars (what `load_config` reads back)."""
    lines: list[str] = []
    for table, values in tables.items():
        lines.append(f"[{table}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in values.items())
        lines.append("")
    return "\n".join(lines)
