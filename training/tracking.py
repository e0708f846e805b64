"""Experiment tracking behind one small interface: MLflow with a local SQLite backend when it is
enabled (`--mlflow` or CINESYNC_MLFLOW=1) and importable, plain JSON files otherwise.

MLflow: tracking URI `sqlite:///<root>/mlruns.db` (or $CINESYNC_MLFLOW_URI), artifacts under
`<root>/mlruns/`, experiment "cinesync" (or $CINESYNC_MLFLOW_EXPERIMENT). MLflow keys allow no
'@', so metric names are written `ndcg_at_10`. JSON: RUN_DIR/params.json, and every logged
metric or artifact as a line of RUN_DIR/tracking.jsonl (beside the loop's own epochs.jsonl).
"""

from __future__ import annotations

import json
import os
import re
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

TRUE = ("1", "true", "yes", "on")
EXPERIMENT = "cinesync"


class Tracker(Protocol):
    def log_params(self, params: Mapping[str, object]) -> None: ...
    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None: ...
    def log_artifact(self, path: Path) -> None: ...
    def close(self, status: str = "FINISHED") -> None: ...  # FINISHED | FAILED | KILLED


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"valid": {"ndcg@10": x}} -> {"valid/ndcg@10": x}."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat |= flatten(value, name + "/")
        else:
            flat[name] = value
    return flat


def numeric(values: Mapping[str, Any]) -> dict[str, float]:
    """The int and float entries (not bools) of a flat mapping, as floats."""
    return {
        k: float(v)
        for k, v in values.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


class JsonTracker:
    """params.json plus one JSON line per logged metrics step or artifact."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        self.params: dict[str, object] = {}

    def _append(self, row: dict[str, Any]) -> None:
        with (self.run_dir / "tracking.jsonl").open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")

    def log_params(self, params: Mapping[str, object]) -> None:
        self.params |= dict(params)
        (self.run_dir / "params.json").write_text(json.dumps(self.params, indent=2, default=str))

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self._append({"step": step, "time": time.time(), "metrics": dict(metrics)})

    def log_artifact(self, path: Path) -> None:
        self._append({"artifact": str(path.resolve())})

    def close(self, status: str = "FINISHED") -> None:
        self._append({"status": status})


def mlflow_key(name: str) -> str:
    """A metric or param name MLflow accepts (letters, digits, _ - . space : /)."""
    return re.sub(r"[^\w\-. :/]", "_", name.replace("@", "_at_"))


@contextmanager
def _quiet() -> Iterator[None]:
    """MLflow's SQLAlchemy store emits deprecation warnings that are not ours to fix."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        yield


class MlflowTracker:
    """One MLflow run in a local SQLite-backed tracking store."""

    def __init__(self, root: Path, run_name: str | None = None) -> None:
        from mlflow.tracking import MlflowClient

        root = root.resolve()
        root.mkdir(parents=True, exist_ok=True)
        self.uri = os.environ.get("CINESYNC_MLFLOW_URI") or f"sqlite:///{root / 'mlruns.db'}"
        name = os.environ.get("CINESYNC_MLFLOW_EXPERIMENT", EXPERIMENT)
        with _quiet():
            self.client = MlflowClient(tracking_uri=self.uri)
            experiment = self.client.get_experiment_by_name(name)
            experiment_id = (
                experiment.experiment_id
                if experiment is not None
                else self.client.create_experiment(
                    name, artifact_location=(root / "mlruns").as_uri()
                )
            )
            self.run_id: str = self.client.create_run(experiment_id, run_name=run_name).info.run_id

    def log_params(self, params: Mapping[str, object]) -> None:
        from mlflow.entities import Param

        batch = [Param(mlflow_key(k), str(v)) for k, v in params.items()]
        with _quiet():
            for start in range(0, len(batch), 100):
                self.client.log_batch(self.run_id, params=batch[start : start + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(mlflow_key(k), float(v), now, step) for k, v in metrics.items()]
        with _quiet():
            self.client.log_batch(self.run_id, metrics=batch)

    def log_artifact(self, path: Path) -> None:
        with _quiet():
            self.client.log_artifact(self.run_id, str(path))

    def close(self, status: str = "FINISHED") -> None:
        with _quiet():
            self.client.set_terminated(self.run_id, status)


def mlflow_enabled(flag: bool | None) -> bool:
    """The flag when given, else $CINESYNC_MLFLOW."""
    if flag is not None:
        return flag
    return os.environ.get("CINESYNC_MLFLOW", "").strip().lower() in TRUE


def open_tracker(run_dir: Path, mlflow: bool | None = None, root: Path | None = None) -> Tracker:
    """MLflow (store under `root`, default the working directory) when enabled and installed,
    else the JSON tracker in `run_dir`."""
    if mlflow_enabled(mlflow):
        try:
            import mlflow as _  # noqa: F401
        except ImportError:
            print("tracking: mlflow is not installed (pip install '.[track]'); using JSON files")
        else:
            return MlflowTracker(root or Path.cwd(), run_name=run_dir.name)
    return JsonTracker(run_dir)


@contextmanager
def tracked_run(
    run_dir: Path,
    mlflow: bool | None,
    params: Mapping[str, Any],
    *,
    enabled: bool = True,
    root: Path | None = None,
) -> Iterator[Tracker | None]:
    """A tracker with `params` (flattened) logged, closed FINISHED, or FAILED on an exception;
    None when not `enabled` (e.g. on ranks other than 0)."""
    if not enabled:
        yield None
        return
    tracker = open_tracker(run_dir, mlflow, root)
    tracker.log_params(flatten(params))
    try:
        yield tracker
    except BaseException:
        tracker.close("FAILED")
        raise
    tracker.close("FINISHED")
