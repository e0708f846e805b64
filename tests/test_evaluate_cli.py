"""`cinesync evaluate`: table, JSON contents, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from training.cli import app
from training.evaluate_cli import TABLE_METRICS

SYNTHETIC = "synthetic:users=200,items=80,interactions=2400,seed=0"


def test_evaluate_prints_the_table_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "ease.json"
    result = CliRunner().invoke(
        app, ["evaluate", "--model", "ease", "--dataset", SYNTHETIC, "--json", str(out)]
    )
    assert result.exit_code == 0, result.output
    for name in TABLE_METRICS:
        assert name in result.output
    report = json.loads(out.read_text())
    assert report["model"] == "ease"
    assert report["dataset"]["users"] == 200
    assert "leave-one-out" in report["protocol"]
    assert set(report["metrics"]) == {"valid", "test"}
    assert set(TABLE_METRICS) <= set(report["metrics"]["test"])
    chosen = max(report["selection"]["trials"], key=lambda t: t["valid ndcg@10"])
    assert report["params"]["lam"] == chosen["params"]["lam"]
    assert report["seconds"]["total"] > 0


def test_unknown_model_is_a_clear_error_with_exit_code_2() -> None:
    result = CliRunner().invoke(app, ["evaluate", "--model", "magic", "--dataset", SYNTHETIC])
    assert result.exit_code == 2
    assert "unknown model 'magic'" in result.output
    assert "pop, itemknn, ease" in result.output
    assert "Traceback" not in result.output


def test_a_dataset_without_validation_rows_is_a_clear_error(tmp_path: Path) -> None:
    rows = ["user_id,item_id,timestamp"] + [f"u{u},i{u % 5},{u}" for u in range(20)]
    (tmp_path / "interactions.csv").write_text("\n".join(rows) + "\n")  # one item per user
    result = CliRunner().invoke(
        app, ["evaluate", "--model", "ease", "--dataset", str(tmp_path / "interactions.csv")]
    )
    assert result.exit_code == 2, result.output
    assert "validation split is empty" in result.output
    assert "Traceback" not in result.output
