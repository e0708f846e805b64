"""`cinesync evaluate`: fit a baseline, select it on validation, report valid and test metrics."""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import typer

from model_store.fsops import describe
from training.baselines import BASELINES
from training.baselines.base import item_counts
from training.baselines.selection import SELECTION_METRIC, select_on_validation
from training.errors import ConfigError
from training.evaluate import evaluate

PROTOCOL = (
    "leave-one-out by time: each user's interactions ordered by timestamp (ties by ascending item "
    "id), last = test, second-last = validation, users with < 3 interactions only in training; "
    "full ranking over all items with every item the user had before the target excluded "
    "(validation: training items; test: training items + validation item); accuracy metrics "
    "(NDCG, HR, MRR, recall) are the expectation over a uniformly random order of items with "
    "equal scores (McSherry & Najork 2008), the top-K lists behind coverage, diversity, novelty, "
    "serendipity and gini break score ties by ascending internal item index; hyper-parameters "
    "selected on validation NDCG@10 only"
)
TABLE_METRICS = (
    "ndcg@10",
    "hr@10",
    "hr@20",
    "mrr@10",
    "recall@20",
    "coverage@10",
    "diversity@10",
    "novelty@10",
    "serendipity@10",
    "gini@10",
)


def _finite(metrics: dict[str, float]) -> dict[str, float | None]:
    """JSON has no NaN: undefined metrics (e.g. diversity without genres) become null."""
    return {k: (None if math.isnan(v) else v) for k, v in metrics.items()}


def evaluate_baseline(model: str, dataset: str, data_dir: Path | None = None) -> dict[str, Any]:
    """Everything `cinesync evaluate` reports, as the JSON-ready dict."""
    if model not in BASELINES:
        raise ConfigError(f"unknown model {model!r}; choose one of: {', '.join(BASELINES)}")
    from training.data import load_dataset
    from training.data.splits import leave_one_out

    started = time.perf_counter()
    ds = load_dataset(dataset, data_dir)
    split = leave_one_out(ds)
    pop = item_counts(split.train, ds.n_items)
    loaded = time.perf_counter()
    chosen = select_on_validation(BASELINES[model], split, pop)
    fitted = time.perf_counter()
    metrics = {
        part.stage: _finite(evaluate(chosen.model.score, part, ds, train_popularity=pop))
        for part in (split.valid, split.test)
    }
    done = time.perf_counter()
    return {
        "model": model,
        "dataset": ds.stats(),
        "split": split.name,
        "eval_users": {"valid": len(split.valid.users), "test": len(split.test.users)},
        "protocol": PROTOCOL,
        "params": chosen.params,
        "selection": {"metric": f"valid {SELECTION_METRIC}", "trials": chosen.trials},
        "metrics": metrics,
        "seconds": {
            "load": round(loaded - started, 3),
            "fit_and_select": round(fitted - loaded, 3),
            "evaluate": round(done - fitted, 3),
            "total": round(done - started, 3),
        },
    }


def format_table(result: dict[str, Any]) -> str:
    """Metric rows, valid and test columns."""
    lines = [
        f"{result['model']} on {result['dataset']['name']} ({result['split']}, full ranking); "
        f"params {result['params'] or '-'}",
        f"{'metric':<16}{'valid':>10}{'test':>10}",
    ]
    for name in TABLE_METRICS:
        cells = [result["metrics"][s].get(name) for s in ("valid", "test")]
        shown = ["n/a" if v is None else f"{v:.4f}" for v in cells]
        lines.append(f"{name:<16}" + "".join(f"{c:>10}" for c in shown))
    lines.append(f"seconds: {result['seconds']['total']:.1f}")
    return "\n".join(lines)


def check_json_out(path: Path) -> None:
    """Fail before a long evaluation when the --json report could not be written: create its
    folder and try a temporary file there (permission bits alone mislead when run as root)."""
    if path.is_dir():
        raise ConfigError(f"--json {path} is a folder; give a file name")
    if path.exists() and not os.access(path, os.W_OK):
        raise ConfigError(f"--json {path} is not writable")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}."):
            pass
    except OSError as exc:
        raise ConfigError(f"--json {path} cannot be written: {describe(exc)}") from exc


def run_evaluate(model: str, dataset: str, json_out: Path | None, data_dir: Path | None) -> None:
    if json_out is not None:
        check_json_out(json_out)
    result = evaluate_baseline(model, dataset, data_dir)
    typer.echo(format_table(result))
    if json_out is not None:
        try:
            json_out.write_text(json.dumps(result, indent=2) + "\n")
        except OSError as exc:
            raise ConfigError(f"writing --json {json_out} failed: {describe(exc)}") from exc
        typer.echo(f"wrote {json_out}")
