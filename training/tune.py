"""`cinesync tune`: hyper-parameter search with Optuna, selected on validation NDCG@10 only.

TPE sampler (seeded with seed + the trials already in the study, so a resumed study does not
replay its first draws), median pruning on the validation NDCG@10 reported after every
evaluation, an optional SQLite study (`--study-db FILE`, resumed when it exists). The test split
is never evaluated. The best trial's configuration is written as a TOML file that
`cinesync train --config` reads.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from training.config import SCHEDULES, RunConfig, apply_overrides, build_model_config, dump_toml
from training.data.splits import Split
from training.errors import CineSyncError, ConfigError, DivergedError
from training.models import ModelSpec, get_model_spec
from training.train import SELECT, EpochCallback, seed_everything, train

Space = Callable[[optuna.Trial], dict[str, Any]]  # trial -> {"model.dim": 64, "train.lr": ...}


class TuneError(CineSyncError):
    """No trial of the study completed, or the study cannot be used."""


def _common(trial: optuna.Trial) -> dict[str, Any]:
    return {
        "train.lr": trial.suggest_float("train.lr", 3e-4, 1e-2, log=True),
        "train.schedule": trial.suggest_categorical("train.schedule", list(SCHEDULES)),
        "train.weight_decay": trial.suggest_categorical("train.weight_decay", [0.0, 0.01, 0.1]),
        "model.dropout": trial.suggest_float("model.dropout", 0.0, 0.5, step=0.1),
        "model.dim": trial.suggest_categorical("model.dim", [32, 64, 128]),
        "model.label_smoothing": trial.suggest_categorical(
            "model.label_smoothing", [0.0, 0.05, 0.1]
        ),
    }


def _transformer(trial: optuna.Trial) -> dict[str, Any]:
    return _common(trial) | {
        "model.n_layers": trial.suggest_int("model.n_layers", 1, 3),
        "model.n_heads": trial.suggest_categorical("model.n_heads", [1, 2]),  # dims are even
        "model.max_len": trial.suggest_categorical("model.max_len", [50, 100, 200]),
    }


def _bert4rec(trial: optuna.Trial) -> dict[str, Any]:
    return _transformer(trial) | {
        "model.mask_prob": trial.suggest_float("model.mask_prob", 0.1, 0.4, step=0.05)
    }


def _two_tower(trial: optuna.Trial) -> dict[str, Any]:
    return _common(trial) | {
        "model.max_len": trial.suggest_categorical("model.max_len", [20, 50, 100]),
        "model.temperature": trial.suggest_float("model.temperature", 0.02, 0.2, log=True),
        "model.hard_ratio": trial.suggest_categorical("model.hard_ratio", [0.0, 0.1, 0.2, 0.4]),
    }


def _sasrec(trial: optuna.Trial) -> dict[str, Any]:
    return _transformer(trial) | {
        "model.exclude_seen": trial.suggest_categorical("model.exclude_seen", [False, True]),
        "model.item_features": trial.suggest_categorical("model.item_features", [False, True]),
    }


SPACES: dict[str, Space] = {"sasrec": _sasrec, "bert4rec": _bert4rec, "two_tower": _two_tower}


@dataclass(frozen=True)
class TuneResult:
    study_name: str
    n_trials: int  # in the study, this call's included
    best_number: int
    best_value: float  # validation NDCG@10
    best_params: dict[str, Any]
    config_path: Path


def pruning_callback(trial: optuna.Trial) -> EpochCallback:
    """Report validation NDCG@10 per evaluated epoch; raise TrialPruned when the pruner says."""

    def on_epoch(epoch: int, valid: dict[str, float]) -> bool:
        trial.report(valid[SELECT], epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(f"{SELECT} {valid[SELECT]:.4f} at epoch {epoch}")
        return False

    return on_epoch


def study_name_for(model: str, dataset_name: str) -> str:
    return f"{model}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', Path(dataset_name).name)}"


def storage_url(study_db: Path | None) -> str | None:
    return None if study_db is None else f"sqlite:///{study_db.resolve()}"


def open_study(name: str, study_db: Path | None, seed: int) -> optuna.Study:
    """Create or resume the study; the sampler's seed moves on with the trials already run."""
    if study_db is not None:
        study_db.parent.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(
        study_name=name,
        storage=storage_url(study_db),
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1),
        load_if_exists=True,
    )
    if study.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise TuneError(f"study {name!r} in {study_db} does not maximise {SELECT}")
    study.sampler = optuna.samplers.TPESampler(seed=seed + len(study.trials))
    return study


def make_objective(
    spec: ModelSpec, base: RunConfig, split: Split, device: Any
) -> Callable[[optuna.Trial], float]:
    """Train one trial's configuration; its value is the best validation NDCG@10."""
    space = SPACES[spec.name]

    def objective(trial: optuna.Trial) -> float:
        config = apply_overrides(base, space(trial), spec.config_cls)
        seed_everything(config.train.seed)
        model_config = build_model_config(spec.config_cls, config, n_items=split.dataset.n_items)
        net = spec.build(model_config, split.dataset)
        with tempfile.TemporaryDirectory(prefix="cinesync-trial-") as run_dir:
            result = train(
                net,
                split,
                config,
                Path(run_dir),
                device=device,
                log=lambda message: None,
                on_epoch=pruning_callback(trial),
                test=False,
            )
        trial.set_user_attr("best_epoch", result.best_epoch)
        trial.set_user_attr("epochs", result.epochs_run)
        return float(result.metrics["valid"][SELECT])

    return objective


def best_config(spec: ModelSpec, base: RunConfig, params: dict[str, Any]) -> RunConfig:
    return apply_overrides(base, params, spec.config_cls)


def write_config(path: Path, config: RunConfig, header: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"# {line}\n" for line in header) + dump_toml(config.to_dict()))


def tune(
    model: str,
    base: RunConfig,
    split: Split,
    trials: int,
    out: Path,
    *,
    study_db: Path | None = None,
    study_name: str | None = None,
    timeout: float | None = None,
    seed: int = 0,
    device: Any = "cpu",
) -> TuneResult:
    """Run `trials` more trials of the study, then write the best configuration to `out`."""
    spec = get_model_spec(model)
    if spec.name not in SPACES:
        raise ConfigError(f"no search space for {model!r}; choices: {', '.join(sorted(SPACES))}")
    name = study_name or study_name_for(model, split.dataset.name)
    study = open_study(name, study_db, seed)
    study.optimize(
        make_objective(spec, base, split, device),
        n_trials=trials,
        timeout=timeout,
        catch=(ConfigError, DivergedError),  # a diverged trial fails; the study goes on
        gc_after_trial=True,
    )
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not done:
        raise TuneError(f"no trial of study {name!r} completed ({len(study.trials)} tried)")
    best = study.best_trial
    if best.value is None:
        raise TuneError(f"study {name!r}: the best trial has no value")
    config = best_config(spec, base, best.params)
    pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
    write_config(
        out,
        config,
        [
            f"{model}: best of {len(study.trials)} trials ({pruned} pruned) of study {name!r},"
            f" `cinesync tune` (Optuna TPE, median pruning)",
            f"trial {best.number}: validation {SELECT} {best.value:.4f} on {split.dataset.name}"
            f" ({split.name}, full ranking); the test split was not used",
        ],
    )
    return TuneResult(name, len(study.trials), best.number, float(best.value), best.params, out)


def run_tune(
    model: str,
    dataset: str,
    trials: int,
    study_db: Path | None,
    out: Path | None,
    epochs: int | None,
    timeout: float | None,
    config: Path | None,
    seed: int,
    device: str,
    data_dir: Path | None,
    study_name: str | None = None,
) -> TuneResult:
    """`cinesync tune`: base config (FILE or the model's default) + the model's search space."""
    from training.data import leave_one_out, load_dataset
    from training.train import configure_threads, resolve_device
    from training.train_cli import resolve_config

    base = resolve_config(model, config, None, False, {"train.epochs": epochs})
    torch_device = resolve_device(device)
    configure_threads(base.train.threads)
    split = leave_one_out(load_dataset(dataset, data_dir))
    out = out or Path("runs") / "tune" / f"{study_name_for(model, split.dataset.name)}.toml"
    result = tune(
        model,
        base,
        split,
        trials,
        out,
        study_db=study_db,
        study_name=study_name,
        timeout=timeout,
        seed=seed,
        device=torch_device,
    )
    print(
        f"study {result.study_name}: {result.n_trials} trials; best trial {result.best_number}"
        f" validation {SELECT} {result.best_value:.4f}\n"
        + "\n".join(f"  {key} = {value}" for key, value in sorted(result.best_params.items()))
        + f"\nbest config: {result.config_path} (cinesync train --model {model} --config ...)"
    )
    return result
