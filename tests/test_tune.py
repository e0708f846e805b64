"""`cinesync tune`: Optuna search on validation NDCG@10, resumable study, TOML that train reads."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import torch
from typer.testing import CliRunner

from training.cli import app
from training.config import CONFIG_DIR, apply_overrides, load_config
from training.models import MODELS, get_model_spec
from training.models.sasrec import SASRecConfig
from training.train_cli import resolve_config
from training.tune import SPACES, open_study, pruning_callback

DATASET = "synthetic:users=80,items=40,interactions=1600,seed=1"
TINY = CONFIG_DIR / "sasrec-tiny.toml"


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


def tune_args(tmp_path: Path, trials: int) -> list[str]:
    return [
        "tune", "--model", "sasrec", "--dataset", DATASET, "--config", str(TINY),
        "--trials", str(trials), "--epochs", "2", "--device", "cpu",
        "--study-db", str(tmp_path / "study.db"), "--out", str(tmp_path / "best.toml"),
    ]  # fmt: skip


def test_tune_writes_the_best_config_train_accepts_and_a_rerun_resumes_the_study(
    tmp_path: Path,
) -> None:
    runner = CliRunner()
    first = runner.invoke(app, tune_args(tmp_path, 3))
    assert first.exit_code == 0, first.output
    study = optuna.load_study(study_name=None, storage=f"sqlite:///{tmp_path / 'study.db'}")
    assert len(study.trials) == 3
    best = study.best_trial

    written = load_config(tmp_path / "best.toml", SASRecConfig)
    for name, value in best.params.items():
        table, key = name.split(".")
        stored = getattr(written.train, key) if table == "train" else written.model[key]
        assert stored == value, name
    assert written.train.epochs == 2
    as_train_reads_it = resolve_config("sasrec", tmp_path / "best.toml", None, False, {})
    assert as_train_reads_it == written
    text = (tmp_path / "best.toml").read_text()
    assert f"validation ndcg@10 {best.value:.4f}" in text

    again = runner.invoke(app, tune_args(tmp_path, 1))
    assert again.exit_code == 0, again.output
    resumed = optuna.load_study(study_name=None, storage=f"sqlite:///{tmp_path / 'study.db'}")
    assert len(resumed.trials) == 4
    assert resumed.trials[3].params != resumed.trials[0].params  # the sampler moved on


def test_a_trial_below_the_median_of_earlier_trials_is_pruned() -> None:
    study = open_study("prune", None, seed=0)
    for number in range(3):
        study.add_trial(
            optuna.trial.create_trial(
                value=0.5,
                intermediate_values={1: 0.4, 2: 0.5},
                params={},
                distributions={},
            )
        )
        assert study.trials[-1].number == number
    on_epoch = pruning_callback(study.ask())
    assert on_epoch(1, {"ndcg@10": 0.45}) is False  # above the median: goes on
    with pytest.raises(optuna.TrialPruned):
        on_epoch(2, {"ndcg@10": 0.1})


@pytest.mark.parametrize("model", sorted(SPACES))
def test_every_search_space_draw_is_a_valid_config(model: str) -> None:
    spec = get_model_spec(model)
    base = load_config(spec.default_config, spec.config_cls)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(25):
        apply_overrides(base, SPACES[model](study.ask()), spec.config_cls)  # raises if invalid
    assert set(SPACES) == set(MODELS)


def test_tune_refuses_an_unknown_model(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["tune", "--model", "nope", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert "unknown model 'nope'" in result.output
