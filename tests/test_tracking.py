"""Run tracking: MLflow (SQLite store) when enabled and installed, JSON files otherwise."""

from __future__ import annotations

import json
import sqlite3
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from training.config import CONFIG_DIR, load_config
from training.data import Split, leave_one_out, load_dataset
from training.models.sasrec import SASRec, SASRecConfig
from training.tracking import (
    JsonTracker,
    MlflowTracker,
    flatten,
    mlflow_key,
    numeric,
    open_tracker,
    tracked_run,
)
from training.train import seed_everything, train

EPOCHS = 2


@pytest.fixture(scope="module")
def split() -> Split:
    return leave_one_out(load_dataset("synthetic:users=100,items=50,interactions=2000,seed=2"))


def tiny_train(split: Split, run_dir: Path, tracker: object) -> None:
    torch.set_num_threads(1)
    config = load_config(CONFIG_DIR / "sasrec-tiny.toml", SASRecConfig)
    config = replace(config, train=replace(config.train, epochs=EPOCHS))
    seed_everything(0)
    model = SASRec(SASRecConfig(n_items=split.dataset.n_items, **config.model))
    train(model, split, config, run_dir, tracker=tracker, log=lambda _: None)  # type: ignore[arg-type]


def epoch_rows(run_dir: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (run_dir / "epochs.jsonl").read_text().splitlines()]


def test_flatten_and_numeric_keep_nested_numbers_only() -> None:
    flat = flatten({"loss": 1, "valid": {"ndcg@10": 0.5}, "task": {"on": True, "name": "x"}})
    assert flat == {"loss": 1, "valid/ndcg@10": 0.5, "task/on": True, "task/name": "x"}
    assert numeric(flat) == {"loss": 1.0, "valid/ndcg@10": 0.5}
    assert mlflow_key("valid/ndcg@10") == "valid/ndcg_at_10"


def test_json_tracker_writes_params_and_one_line_per_epoch(split: Split, tmp_path: Path) -> None:
    artifact = tmp_path / "bundle.json"
    artifact.write_text("{}")
    with tracked_run(tmp_path, False, {"model": "sasrec", "train": {"lr": 0.01}}) as tracker:
        assert isinstance(tracker, JsonTracker)
        tiny_train(split, tmp_path, tracker)
        tracker.log_artifact(artifact)
    assert json.loads((tmp_path / "params.json").read_text()) == {
        "model": "sasrec",
        "train/lr": 0.01,
    }
    lines = [json.loads(line) for line in (tmp_path / "tracking.jsonl").read_text().splitlines()]
    steps = [line for line in lines if "step" in line]
    assert [s["step"] for s in steps] == list(range(1, EPOCHS + 1))
    for step, row in zip(steps, epoch_rows(tmp_path), strict=True):
        assert step["metrics"]["loss"] == row["loss"]
        assert step["metrics"]["valid/ndcg@10"] == row["valid"]["ndcg@10"]  # type: ignore[index]
    assert {"artifact": str(artifact.resolve())} in lines
    assert lines[-1] == {"status": "FINISHED"}


def test_a_failing_run_is_closed_as_failed(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"), tracked_run(tmp_path, False, {}):
        raise RuntimeError("boom")
    last = (tmp_path / "tracking.jsonl").read_text().splitlines()[-1]
    assert json.loads(last) == {"status": "FAILED"}


def test_tracker_choice_follows_the_flag_the_environment_and_the_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CINESYNC_MLFLOW", raising=False)
    assert isinstance(open_tracker(tmp_path), JsonTracker)
    monkeypatch.setenv("CINESYNC_MLFLOW", "1")
    monkeypatch.setitem(sys.modules, "mlflow", None)  # not installed: import fails
    assert isinstance(open_tracker(tmp_path, root=tmp_path), JsonTracker)
    assert isinstance(open_tracker(tmp_path, mlflow=False), JsonTracker)


def test_mlflow_tracker_stores_params_epoch_metrics_and_artifacts_in_sqlite(
    split: Split, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("mlflow")
    monkeypatch.delenv("CINESYNC_MLFLOW_URI", raising=False)
    monkeypatch.setenv("CINESYNC_MLFLOW", "1")
    run_dir = tmp_path / "run"
    bundle_json = tmp_path / "bundle.json"
    bundle_json.write_text('{"model": {"kind": "sasrec"}}')
    params = {"model": "sasrec", "train": {"lr": 0.005}}
    with tracked_run(run_dir, None, params, root=tmp_path) as tracker:
        assert isinstance(tracker, MlflowTracker)
        tiny_train(split, run_dir, tracker)
        tracker.log_artifact(bundle_json)
        run_id = tracker.run_id

    db = sqlite3.connect(tmp_path / "mlruns.db")
    try:
        status, artifact_uri = db.execute(
            "SELECT status, artifact_uri FROM runs WHERE run_uuid = ?", (run_id,)
        ).fetchone()
        stored = dict(db.execute("SELECT key, value FROM params WHERE run_uuid = ?", (run_id,)))
        ndcg = db.execute(
            "SELECT step, value FROM metrics WHERE run_uuid = ? AND key = 'valid/ndcg_at_10' "
            "ORDER BY step",
            (run_id,),
        ).fetchall()
    finally:
        db.close()
    assert status == "FINISHED"
    assert stored == {"model": "sasrec", "train/lr": "0.005"}
    rows = epoch_rows(run_dir)
    assert ndcg == [(r["epoch"], pytest.approx(r["valid"]["ndcg@10"])) for r in rows]  # type: ignore[index]
    artifact = Path(artifact_uri.removeprefix("file://")) / "bundle.json"
    assert artifact.read_text() == bundle_json.read_text()
    assert artifact.is_relative_to(tmp_path / "mlruns")
