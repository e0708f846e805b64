"""Read training run folders (metrics.json, epochs.jsonl, config.toml) and aggregate over seeds."""

from __future__ import annotations

import json
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TABLE_METRICS = (
    "ndcg@10",
    "hr@10",
    "hr@20",
    "mrr@10",
    "coverage@10",
    "diversity@10",
    "novelty@10",
    "gini@10",
)


@dataclass(frozen=True)
class Run:
    """One finished training run: test metrics evaluated once, on the best-validation weights."""

    path: Path
    seed: int
    valid: dict[str, float]
    test: dict[str, float]
    epochs: list[dict[str, Any]]  # epochs.jsonl rows
    config: dict[str, Any]

    @property
    def n_epochs(self) -> int:
        return len(self.epochs)

    @property
    def wall_seconds(self) -> float:
        """Training + per-epoch validation time, summed over epochs (no export, no test)."""
        return float(sum(e.get("seconds", 0.0) for e in self.epochs))

    @property
    def seconds_per_epoch(self) -> float:
        return self.wall_seconds / self.n_epochs if self.epochs else math.nan

    @property
    def seqs_per_s(self) -> float:
        vals = [e["seqs_per_s"] for e in self.epochs if "seqs_per_s" in e]
        return float(sum(vals) / len(vals)) if vals else math.nan

    def valid_curve(self) -> list[tuple[int, float]]:
        return [
            (int(e["epoch"]), float(e["valid"]["ndcg@10"]))
            for e in self.epochs
            if isinstance(e.get("valid"), dict) and "ndcg@10" in e["valid"]
        ]

    @property
    def best_epoch(self) -> int:
        curve = self.valid_curve()
        return max(curve, key=lambda p: p[1])[0] if curve else self.n_epochs

    @property
    def seconds_to_best(self) -> float:
        """Wall time (train + validation) summed up to and including the best validation epoch."""
        return float(
            sum(e.get("seconds", 0.0) for e in self.epochs if e["epoch"] <= self.best_epoch)
        )

    @property
    def budget_seconds(self) -> float:
        return float(self.config.get("train", {}).get("max_seconds", 0.0))


def load_run(path: Path, seed: int | None = None) -> Run:
    metrics = json.loads((path / "metrics.json").read_text())
    epochs_file = path / "epochs.jsonl"
    epochs = (
        [json.loads(line) for line in epochs_file.read_text().splitlines() if line.strip()]
        if epochs_file.is_file()
        else []
    )
    config: dict[str, Any] = {}
    for name in ("config.toml", "plan.toml"):
        if (path / name).is_file():
            config = tomllib.loads((path / name).read_text())
            break
    if seed is None:
        seed = int(config.get("train", {}).get("seed", 0))
    return Run(path, seed, metrics.get("valid", {}), metrics.get("test", {}), epochs, config)


def find_runs(root: Path) -> list[Run]:
    """Every finished run under root/seed<S> (sorted by seed)."""
    if not root.is_dir():
        return []
    runs = [
        load_run(d, int(d.name[4:]))
        for d in root.iterdir()
        if d.name.startswith("seed") and d.name[4:].isdigit() and (d / "metrics.json").is_file()
    ]
    return sorted(runs, key=lambda r: r.seed)


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value); NaN for none."""
    vals = [v for v in values if not math.isnan(v)]
    if not vals:
        return math.nan, math.nan
    mean = sum(vals) / len(vals)
    if len(vals) == 1:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))


def summarise(runs: list[Run]) -> dict[str, Any]:
    """Mean and spread over seeds of the test metrics, validation NDCG@10 and speed."""
    out: dict[str, Any] = {"seeds": [r.seed for r in runs], "n": len(runs), "test": {}, "valid": {}}
    for m in TABLE_METRICS:
        out["test"][m] = mean_std([r.test.get(m, math.nan) for r in runs])
    out["valid"]["ndcg@10"] = mean_std([r.valid.get("ndcg@10", math.nan) for r in runs])
    out["epochs"] = mean_std([float(r.n_epochs) for r in runs])
    out["best_epoch"] = mean_std([float(r.best_epoch) for r in runs])
    out["seconds_per_epoch"] = mean_std([r.seconds_per_epoch for r in runs])
    out["seqs_per_s"] = mean_std([r.seqs_per_s for r in runs])
    out["wall_seconds"] = mean_std([r.wall_seconds for r in runs])
    out["budget_seconds"] = sorted({r.budget_seconds for r in runs})
    return out


def paired_relative(
    arm: list[Run], base: list[Run], metric: str = "ndcg@10", stage: str = "test"
) -> tuple[float, float, int]:
    """Relative change of `metric` vs the baseline arm, paired by seed: mean, spread, pairs."""
    by_seed = {r.seed: getattr(r, stage).get(metric, math.nan) for r in base}
    rel = [
        getattr(r, stage).get(metric, math.nan) / by_seed[r.seed] - 1.0
        for r in arm
        if by_seed.get(r.seed)
    ]
    mean, std = mean_std(rel)
    return mean, std, len(rel)
