"""Options the `cinesync` CLI checks before doing anything slow: ports and the --json path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import training.evaluate_cli
from training.cli import app
from training.evaluate_cli import TABLE_METRICS


@pytest.mark.parametrize("command", ["serve", "demo"])
@pytest.mark.parametrize("port", ["0", "65536", "99999", "-1"])
def test_a_port_outside_1_to_65535_is_refused_before_starting(command: str, port: str) -> None:
    result = CliRunner().invoke(app, [command, "--port", port])
    assert result.exit_code == 2, result.output
    assert "--port" in result.output


def fake_result(model: str, dataset: str, data_dir: Path | None) -> dict[str, Any]:
    metrics = dict.fromkeys(TABLE_METRICS, 0.5)
    return {
        "model": model,
        "dataset": {"name": dataset},
        "split": "loo-time",
        "params": {},
        "metrics": {"valid": metrics, "test": metrics},
        "seconds": {"total": 0.1},
    }


def refuse(*_: object) -> dict[str, Any]:
    raise AssertionError("evaluated although --json cannot be written")


def test_an_unwritable_json_path_is_refused_before_evaluating(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(training.evaluate_cli, "evaluate_baseline", refuse)
    (tmp_path / "file").write_text("x")
    (tmp_path / "folder").mkdir()
    for path, detail in (
        (tmp_path / "file" / "out.json", "cannot be written"),
        (tmp_path / "folder", "is a folder"),
    ):
        result = CliRunner().invoke(app, ["evaluate", "--model", "ease", "--json", str(path)])
        assert result.exit_code == 2, result.output
        assert result.output.startswith(f"error: --json {path} ")
        assert detail in result.output
        assert result.output.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "folder"]
    assert list((tmp_path / "folder").iterdir()) == []


def test_the_json_folder_is_created_and_a_failed_write_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "new" / "report.json"
    monkeypatch.setattr(training.evaluate_cli, "evaluate_baseline", fake_result)
    ok = CliRunner().invoke(app, ["evaluate", "--model", "ease", "--json", str(out)])
    assert ok.exit_code == 0, ok.output
    assert json.loads(out.read_text())["model"] == "ease"
    assert sorted(p.name for p in out.parent.iterdir()) == ["report.json"]

    def taken_meanwhile(model: str, dataset: str, data_dir: Path | None) -> dict[str, Any]:
        out.unlink()
        out.mkdir()  # the path became a folder while the evaluation ran
        return fake_result(model, dataset, data_dir)

    monkeypatch.setattr(training.evaluate_cli, "evaluate_baseline", taken_meanwhile)
    result = CliRunner().invoke(app, ["evaluate", "--model", "ease", "--json", str(out)])
    assert result.exit_code == 2, result.output
    assert f"error: writing --json {out} failed: Is a directory" in result.output
    assert "Traceback" not in result.output


def test_training_into_a_folder_that_holds_a_run_is_refused_and_leaves_it_untouched(
    tmp_path: Path,
) -> None:
    run = tmp_path / "run"
    (run / "bundle").mkdir(parents=True)
    (run / "metrics.json").write_text('{"valid": {}}')
    (run / "epochs.jsonl").write_text('{"epoch": 1}\n')
    args = ["train", "--model", "sasrec", "--dataset", "synthetic", "--out", str(run)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "already holds a run (metrics.json, epochs.jsonl, bundle)" in result.output
    assert "--overwrite" in result.output
    assert (run / "epochs.jsonl").read_text() == '{"epoch": 1}\n'
    assert (run / "metrics.json").read_text() == '{"valid": {}}'


def test_a_folder_with_only_a_plan_and_a_log_holds_no_earlier_run(tmp_path: Path) -> None:
    from training.train_cli import earlier_run

    (tmp_path / "plan.toml").write_text("[train]\n")
    (tmp_path / "train.log").write_text("")
    assert earlier_run(tmp_path) == []
    assert earlier_run(tmp_path / "missing") == []


def test_overwrite_clears_the_earlier_run_before_training(tmp_path: Path) -> None:
    from training.train_cli import check_run_folder

    run = tmp_path / "run"
    (run / "bundle").mkdir(parents=True)
    for name in ("metrics.json", "epochs.jsonl", "best.pt", "tracking.jsonl", "params.json"):
        (run / name).write_text("old")
    (run / "train.log").write_text("log")
    check_run_folder(run, resume=False, overwrite=True)
    assert sorted(p.name for p in run.iterdir()) == ["train.log"]  # a failed new run cannot
    # leave the old metrics and bundle looking like its own


def test_resume_and_overwrite_together_are_refused(tmp_path: Path) -> None:
    args = ["train", "--model", "sasrec", "--dataset", "synthetic", "--out", str(tmp_path)]
    result = CliRunner().invoke(app, [*args, "--resume", "--overwrite"])
    assert result.exit_code == 2, result.output
    assert "not both" in result.output or "give one of them" in result.output


def test_a_model_name_the_store_refuses_stops_train_publish_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import training.train_cli

    def refuse(**_: object) -> None:
        raise AssertionError("trained although the model name is refused")

    monkeypatch.setattr(training.train_cli, "run_train", refuse)
    monkeypatch.setenv("CINESYNC_MODEL_NAME", "cinesync ")
    args = ["train", "--model", "sasrec", "--dataset", "synthetic", "--publish",
            "--store", str(tmp_path / "store")]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "CINESYNC_MODEL_NAME" in result.output
    monkeypatch.delenv("CINESYNC_MODEL_NAME")
    result = CliRunner().invoke(app, [*args, "--name", "../x"])
    assert result.exit_code == 2, result.output
    assert "../x" in result.output
