"""What benchmarks.quality trains: main-table runs and ablation arms, as config overrides.

Every run is `cinesync train` on a TOML file = the model's default config + the overrides below,
written to RUN_DIR/plan.toml. Run folders: RUNS/main/<dataset>/<model>/seed<S> and
RUNS/ablation/<dataset>/<arm>/seed<S>. A folder that already has metrics.json is reused.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONFIG_DIR = Path(__file__).resolve().parent.parent / "training" / "configs"
NEURAL = ("sasrec", "bert4rec", "two_tower")
DATASETS = ("ml-100k", "ml-latest-small")


@dataclass(frozen=True)
class Arm:
    """One ablation arm: a model, a label, and config overrides relative to the arm 'default'."""

    name: str
    model: str
    label: str
    over: dict[str, Any] = field(default_factory=dict)


def main_overrides(model: str, budget_seconds: float) -> dict[str, Any]:
    """Main-table runs: the default config, capped by a training-time budget (0 = the config's)."""
    over: dict[str, Any] = {"train.progress": False}
    if budget_seconds > 0:
        over["train.max_seconds"] = float(budget_seconds)
    if model == "bert4rec":
        over["train.epochs"] = 30  # 40 in the config; a budgeted run needs a schedule that ends
        over["train.eval_every"] = 2
    return over


def ablation_arms(sasrec_epochs: int = 12, tt_epochs: int = 10) -> list[Arm]:
    """SASRec arms share a short fixed epoch count so every LR schedule runs to its end, and one
    baseline schedule, cosine decay (the default config's, pinned so that changing the default
    schedule does not change every arm). Each arm changes one thing against that baseline."""
    s = {
        "train.epochs": sasrec_epochs,
        "train.max_seconds": 0.0,
        "train.progress": False,
        "train.schedule": "cosine",
    }
    t = {"train.epochs": tt_epochs, "train.max_seconds": 0.0, "train.progress": False}
    return [
        Arm(
            "sasrec-default",
            "sasrec",
            "SASRec default (cosine, LS 0.1, full softmax, item features, fp32)",
            s,
        ),
        Arm(
            "sasrec-onecycle",
            "sasrec",
            "LR schedule: OneCycle",
            {**s, "train.schedule": "onecycle"},
        ),
        Arm(
            "sasrec-restarts",
            "sasrec",
            "LR schedule: cosine warm restarts (3 cycles, each twice as long)",
            {**s, "train.schedule": "restarts"},
        ),
        Arm(
            "sasrec-constant",
            "sasrec",
            "LR schedule: constant",
            {**s, "train.schedule": "constant"},
        ),
        Arm("sasrec-ls0", "sasrec", "label smoothing 0", {**s, "model.label_smoothing": 0.0}),
        Arm("sasrec-ls005", "sasrec", "label smoothing 0.05", {**s, "model.label_smoothing": 0.05}),
        Arm(
            "sasrec-sampled",
            "sasrec",
            "sampled softmax (256 uniform negatives)",
            {**s, "model.loss": "sampled"},
        ),
        Arm("sasrec-bf16", "sasrec", "AMP bf16 (CPU autocast)", {**s, "train.amp": "bf16"}),
        Arm(
            "sasrec-exclude-seen",
            "sasrec",
            "full softmax without each position's seen items",
            {**s, "model.exclude_seen": True},
        ),
        Arm(
            "sasrec-no-item-features",
            "sasrec",
            "item vectors from ids only (no genres or decade)",
            {**s, "model.item_features": False},
        ),
        Arm(
            "two_tower-default", "two_tower", "two-tower default (hard negatives on, ratio 0.05)", t
        ),
        Arm(
            "two_tower-nohard",
            "two_tower",
            "two-tower, hard negatives off",
            {**t, "model.hard_ratio": 0.0},
        ),
    ]


def baseline_arm(arm: Arm) -> str:
    return f"{arm.model}-default"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    raise TypeError(f"unsupported TOML value {value!r}")


def write_config(model: str, over: dict[str, Any], path: Path) -> None:
    """The model's default config with dotted overrides applied, as a TOML file."""
    with (CONFIG_DIR / f"{model}.toml").open("rb") as fh:
        data: dict[str, dict[str, Any]] = tomllib.load(fh)
    for dotted, value in over.items():
        table, _, key = dotted.partition(".")
        data.setdefault(table, {})[key] = value
    lines: list[str] = []
    for table in ("model", "train"):
        lines.append(f"[{table}]")
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in data.get(table, {}).items())
        lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def train_run(model: str, dataset: str, seed: int, over: dict[str, Any], out: Path) -> bool:
    """Train one run into `out` unless it already holds metrics.json. True when metrics exist."""
    if (out / "metrics.json").is_file():
        return True
    write_config(model, over, out / "plan.toml")
    cmd = [
        sys.executable,
        "-m",
        "training.cli",
        "train",
        "--model",
        model,
        "--dataset",
        dataset,
        "--config",
        str(out / "plan.toml"),
        "--seed",
        str(seed),
        "--out",
        str(out),
        "--overwrite",  # a run that failed before writing metrics.json is trained again
    ]
    with (out / "train.log").open("w") as log:
        rc = subprocess.run(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ)
        ).returncode
    return rc == 0 and (out / "metrics.json").is_file()
