"""benchmarks.quality renders its report from existing run folders (no training)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import quality
from benchmarks.quality_runs import mean_std

METRICS = (
    "ndcg@10",
    "hr@10",
    "hr@20",
    "mrr@10",
    "coverage@10",
    "diversity@10",
    "novelty@10",
    "gini@10",
)


def fake_run(
    path: Path, seed: int, test_ndcg: float, valid_curve: list[float], seconds: float
) -> None:
    path.mkdir(parents=True)
    test = {m: test_ndcg * (i + 1) for i, m in enumerate(METRICS)}
    test["ndcg@10"] = test_ndcg
    metrics = {"valid": {"ndcg@10": max(valid_curve)}, "test": test}
    (path / "metrics.json").write_text(json.dumps(metrics))
    rows = [
        {
            "epoch": i + 1,
            "loss": 1.0,
            "lr": 0.001,
            "valid": {"ndcg@10": v},
            "seconds": seconds,
            "train_seconds": seconds - 1,
            "seqs_per_s": 100.0 + seed,
        }
        for i, v in enumerate(valid_curve)
    ]
    (path / "epochs.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (path / "config.toml").write_text(
        f"[model]\ndim = 8\n\n[train]\nseed = {seed}\nmax_seconds = 60.0\n"
    )


@pytest.fixture
def report(tmp_path: Path) -> tuple[Path, dict[str, object]]:
    runs = tmp_path / "runs"
    fake_run(runs / "main/ml-100k/sasrec/seed0", 0, 0.11, [0.05, 0.12, 0.10], 50.0)
    fake_run(runs / "main/ml-100k/sasrec/seed1", 1, 0.13, [0.06, 0.09, 0.14], 100.0)
    fake_run(runs / "ablation/ml-100k/sasrec-default/seed0", 0, 0.10, [0.1], 10.0)
    fake_run(runs / "ablation/ml-100k/sasrec-ls0/seed0", 0, 0.09, [0.1], 12.0)
    baselines = {
        "results": {
            "ml-100k": [
                {
                    "model": "ease",
                    "params": {},
                    "metrics": {"valid": {"ndcg@10": 0.07}, "test": dict.fromkeys(METRICS, 0.04)},
                }
            ]
        }
    }
    (tmp_path / "baselines.json").write_text(json.dumps(baselines))
    (tmp_path / "notes.md").write_text("Ran two fake seeds.\n")
    out = tmp_path / "out"
    code = quality.main(
        [
            "--reuse",
            str(runs),
            "--datasets",
            "ml-100k",
            "--models",
            "sasrec",
            "--seeds",
            "0,1",
            "--ablation",
            "--baselines",
            str(tmp_path / "baselines.json"),
            "--out-dir",
            str(out),
            "--notes",
            str(tmp_path / "notes.md"),
        ]
    )
    assert code == 0
    return out, json.loads((out / "quality.json").read_text())


def test_table_reports_seed_mean_and_spread(report: tuple[Path, dict[str, object]]) -> None:
    out, _ = report
    md = (out / "quality.md").read_text()
    mean, std = mean_std([0.11, 0.13])
    row = next(line for line in md.splitlines() if line.startswith("| sasrec |"))
    assert f"{mean:.4f} ± {std:.4f}" in row
    assert "| 2 |" in row  # seeds column
    assert "| 75.0 ± 35.4 |" in row  # seconds per epoch, mean over the two runs
    assert any(line.startswith("| ease | deterministic |") for line in md.splitlines())
    assert "Ran two fake seeds." in md


def test_time_to_best_uses_best_validation_epoch(report: tuple[Path, dict[str, object]]) -> None:
    _, data = report
    times = {t["seed"]: t for t in data["sasrec_time"]}  # type: ignore[attr-defined]
    assert times[0]["best_epoch"] == 2
    assert times[0]["seconds_to_best_valid"] == 100.0
    assert times[1]["best_epoch"] == 3
    assert times[1]["seconds_to_best_valid"] == 300.0
    assert times[0]["target_met"] is True  # 0.11 >= 0.1034 within 100 s
    assert times[1]["reaches_0.1034"]
    assert times[1]["target_met"] is False


def test_ablation_relative_change_is_paired_by_seed(report: tuple[Path, dict[str, object]]) -> None:
    _, data = report
    rows = {r["arm"]: r for r in data["ablation"]["ml-100k"]}  # type: ignore[index]
    assert rows["sasrec-ls0"]["rel_test_ndcg"][0] == pytest.approx(0.09 / 0.10 - 1)
    assert rows["sasrec-ls0"]["rel_seconds_per_epoch"] == pytest.approx(12 / 10 - 1)
    assert "sasrec-onecycle" not in rows  # arms without runs are left out, not invented


def test_recbole_comparison_picks_best_by_validation(
    report: tuple[Path, dict[str, object]],
) -> None:
    _, data = report
    cmp = data["recbole"]["ml-100k"]  # type: ignore[index]
    assert cmp["cinesync_model"] == "sasrec"
    assert cmp["relative"] == pytest.approx(0.12 / 0.1058 - 1)
    assert cmp["target_met"] is True  # +13% on the seeds' mean


def test_plots_are_png_files(report: tuple[Path, dict[str, object]]) -> None:
    out, _ = report
    for name in ("quality_curves.png", "quality_accuracy_coverage.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_reusing_a_folder_without_runs_is_a_clear_error_not_an_empty_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--reuse", str(tmp_path / "none"), "--datasets", "ml-100k", "--models", "sasrec"]
    code = quality.main([*argv, "--out-dir", str(tmp_path / "out")])
    assert code == 2
    assert "no finished runs under" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
