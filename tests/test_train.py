"""Training loop, checkpoints, resume, configs and the `cinesync train` command."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from training import checkpoint as ckpt
from training.config import (
    CONFIG_DIR,
    RunConfig,
    TrainConfig,
    apply_overrides,
    dump_toml,
    load_config,
    parse_config,
)
from training.data import Split, leave_one_out, load_dataset
from training.errors import ConfigError
from training.models import MODELS, get_model_spec
from training.models.sasrec import SASRec, SASRecConfig
from training.schedule import build_optimizer, build_scheduler, lr_factor
from training.sequences import training_windows
from training.train import autocast, seed_everything, train

TINY = CONFIG_DIR / "sasrec-tiny.toml"


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def split() -> Split:
    return leave_one_out(load_dataset("synthetic:users=150,items=80,interactions=3000,seed=3"))


def tiny_run(**train: object) -> RunConfig:
    config = load_config(TINY, SASRecConfig)
    config.model["dropout"] = 0.2  # dropout makes resume depend on the restored RNG state
    return replace(config, train=replace(config.train, **train))  # type: ignore[arg-type]


def new_model(config: RunConfig, split: Split) -> SASRec:
    seed_everything(config.train.seed)
    return SASRec(SASRecConfig(n_items=split.dataset.n_items, **config.model))


def test_resume_continues_with_the_same_losses_and_weights(split: Split, tmp_path: Path) -> None:
    config = tiny_run(epochs=3, schedule="onecycle", warmup=0.3)
    straight = train(new_model(config, split), split, config, tmp_path / "a", log=lambda _: None)

    model = new_model(config, split)
    first = train(model, split, config, tmp_path / "b", stop_after=1, log=lambda _: None)
    assert first.stopped == "interrupted"
    assert first.epochs_run == 1
    rest = train(
        new_model(config, split), split, config, tmp_path / "b", resume=True, log=lambda _: None
    )
    np.testing.assert_allclose(first.losses + rest.losses, straight.losses, rtol=1e-5)
    for name, value in straight.model.state_dict().items():
        torch.testing.assert_close(rest.model.state_dict()[name], value, rtol=1e-4, atol=1e-5)
    a = ckpt.load(tmp_path / "a" / ckpt.CHECKPOINT)["scheduler"]
    b = ckpt.load(tmp_path / "b" / ckpt.CHECKPOINT)["scheduler"]
    assert a["last_epoch"] == b["last_epoch"]
    assert a["_last_lr"] == pytest.approx(b["_last_lr"])
    epochs = [
        json.loads(r)["epoch"] for r in (tmp_path / "b" / "epochs.jsonl").read_text().splitlines()
    ]
    assert epochs == [1, 2, 3]


def test_resume_with_a_different_train_config_is_refused(split: Split, tmp_path: Path) -> None:
    config = tiny_run(epochs=2)
    train(new_model(config, split), split, config, tmp_path, stop_after=1, log=lambda _: None)
    changed = replace(config, train=replace(config.train, lr=0.5))
    with pytest.raises(ConfigError, match="differs from the checkpoint"):
        train(new_model(changed, split), split, changed, tmp_path, resume=True, log=lambda _: None)


def test_a_run_folder_holds_checkpoints_epochs_config_and_metrics(
    split: Split, tmp_path: Path
) -> None:
    config = tiny_run(epochs=2)
    result = train(new_model(config, split), split, config, tmp_path, log=lambda _: None)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics) == {"valid", "test"}
    assert {"ndcg@10", "hr@10", "hr@20", "mrr@10", "coverage@10"} <= set(metrics["test"])
    assert metrics["valid"]["ndcg@10"] == max(
        json.loads(r)["valid"]["ndcg@10"]
        for r in (tmp_path / "epochs.jsonl").read_text().splitlines()
    )
    rows = [json.loads(r) for r in (tmp_path / "epochs.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(r["seqs_per_s"] > 0 and r["loss"] > 0 and "lr" in r for r in rows)
    state = ckpt.load(tmp_path / ckpt.CHECKPOINT)  # weights_only=True
    assert state["epoch"] == 2
    assert state["config"] == config.to_dict()
    best = ckpt.load(tmp_path / ckpt.BEST)
    assert best["epoch"] == result.best_epoch
    assert load_config(tmp_path / "config.toml", SASRecConfig) == config


def test_early_stopping_stops_after_patience_evaluations(split: Split, tmp_path: Path) -> None:
    config = tiny_run(epochs=20, lr=1e-12, patience=2)
    config.model["dropout"] = 0.0
    result = train(new_model(config, split), split, config, tmp_path, log=lambda _: None)
    assert result.stopped == "patience"
    assert result.epochs_run == result.best_epoch + 2


def test_time_budget_stops_after_the_epoch_that_passes_it(split: Split, tmp_path: Path) -> None:
    config = tiny_run(epochs=5, max_seconds=1e-6)
    result = train(new_model(config, split), split, config, tmp_path, log=lambda _: None)
    assert result.stopped == "time"
    assert result.epochs_run == 1
    assert set(json.loads((tmp_path / "metrics.json").read_text())) == {"valid", "test"}


def test_bf16_autocast_trains_on_cpu(split: Split, tmp_path: Path) -> None:
    config = tiny_run(epochs=1, amp="bf16")
    result = train(new_model(config, split), split, config, tmp_path, log=lambda _: None)
    assert np.isfinite(result.losses).all()


def test_fp16_needs_cuda() -> None:
    with pytest.raises(ConfigError, match="fp16"):
        autocast(torch.device("cpu"), "fp16")


def test_training_windows_are_left_padded_with_shifted_targets() -> None:
    seqs = [np.arange(1, 8), np.array([4, 5]), np.array([9])]
    w = training_windows(seqs, max_len=4, windows=0)
    assert w.inputs.tolist() == [[3, 4, 5, 6], [0, 0, 1, 2], [0, 0, 0, 4]]
    assert w.targets.tolist() == [[4, 5, 6, 7], [0, 0, 2, 3], [0, 0, 0, 5]]
    assert training_windows(seqs, max_len=4, windows=1).inputs.tolist() == [
        [3, 4, 5, 6],
        [0, 0, 0, 4],
    ]
    x, y = w.batch(torch.tensor([1, 2]))
    assert x.tolist() == [[1, 2], [0, 4]]
    assert y.tolist() == [[2, 3], [0, 5]]


def test_training_windows_keep_the_items_before_each_window_on_request() -> None:
    seqs = [np.arange(1, 8), np.array([4, 5]), np.array([9])]
    w = training_windows(seqs, max_len=4, windows=0, earlier=True)
    assert w.earlier is not None
    assert w.earlier.tolist() == [[1, 2], [0, 0], [0, 0]]  # rows: 3..6 | 1..2 | 4 (of [4, 5])
    w = training_windows([np.arange(1, 12)], max_len=4, windows=0, earlier=True)
    # windows newest first: inputs 7..10, 3..6, 1..2; before them 1..6, 1..2, nothing
    assert w.inputs.tolist() == [[7, 8, 9, 10], [3, 4, 5, 6], [0, 0, 1, 2]]
    assert w.earlier_items(torch.tensor([0, 1, 2])).tolist() == [
        [1, 2, 3, 4, 5, 6],
        [0, 0, 0, 0, 1, 2],
        [0, 0, 0, 0, 0, 0],
    ]
    assert w.earlier_items(torch.tensor([1])).tolist() == [[1, 2]]  # padding columns dropped
    assert w.earlier_items(torch.tensor([2])).tolist() == [[0]]
    assert training_windows([np.arange(1, 12)], max_len=4).earlier is None


def test_length_sorted_batches_cover_every_row_once() -> None:
    w = training_windows([np.arange(1, n + 3) for n in range(40)], max_len=10, windows=0)
    torch.manual_seed(0)
    batches = w.batches(batch_size=4, sort_chunk=3)
    assert sorted(torch.cat(batches).tolist()) == list(range(len(w)))


@pytest.mark.parametrize("schedule", ["onecycle", "cosine", "restarts", "constant"])
def test_schedules_warm_up_then_follow_their_shape(schedule: str) -> None:
    model = torch.nn.Linear(2, 2)
    config = TrainConfig(epochs=10, lr=0.1, schedule=schedule, warmup=0.2)
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, config, steps_per_epoch=10)
    lrs = []
    for _ in range(100):
        lrs.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert lrs[0] < lrs[19] == pytest.approx(0.1, rel=0.05)
    if schedule == "constant":
        assert lrs[-1] == pytest.approx(0.1)
    else:
        assert lrs[-1] < 0.01


@pytest.mark.parametrize("cycles", [1, 2, 3])
def test_warm_restarts_equal_torch_cosine_annealing_warm_restarts(cycles: int) -> None:
    t0, warm = 10, 5
    total = warm + t0 * (2**cycles - 1)
    optimizer = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=1.0)
    oracle = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=t0, T_mult=2)
    expected = []
    for _ in range(total - warm):
        expected.append(oracle.get_last_lr()[0])
        optimizer.step()
        oracle.step()
    ours = [lr_factor("restarts", step, total, warm, cycles) for step in range(warm, total)]
    assert ours == pytest.approx(expected, abs=1e-12)
    restarts = [s for s in range(1, len(ours)) if ours[s] > ours[s - 1]]
    assert restarts == [t0 * (2**i - 1) for i in range(1, cycles)]
    assert ours[0] == 1.0


def test_unknown_keys_and_bad_values_are_clear_config_errors(tmp_path: Path) -> None:
    cases = {
        "[train]\nepoch = 3\n": "unknown key train.epoch; allowed: amp, batch_size",
        "[model]\nlayers = 3\n": "unknown key model.layers",
        '[train]\nlr = "fast"\n': "train.lr = 'fast': expected float, got str",
        "[train]\nepochs = 2.5\n": "expected int",
        '[train]\nschedule = "linear"\n': "one of ('onecycle', 'cosine', 'restarts', 'constant')",
        "[train]\ncycles = 0\n": "train.cycles = 0: must be in",
        "[model]\nn_items = 10\n": "model.n_items is set from the dataset",
        "[model]\ndim = 10\nn_heads = 3\n": "divisible",
        "[optimizer]\nlr = 1\n": "unknown table(s) optimizer",
        "[train\n": "invalid TOML",
    }
    for text, message in cases.items():
        path = tmp_path / "c.toml"
        path.write_text(text)
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            load_config(path, SASRecConfig)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml", SASRecConfig)


def test_overrides_are_checked_like_the_file() -> None:
    config = parse_config({"train": {"epochs": 5}}, SASRecConfig)
    assert (
        apply_overrides(config, {"train.epochs": 7, "train.seed": None}, SASRecConfig).train.epochs
        == 7
    )
    with pytest.raises(ConfigError, match=re.escape("train.epochs = 0: must be >= 1")):
        apply_overrides(config, {"train.epochs": 0}, SASRecConfig)


def test_shipped_configs_parse_and_round_trip_through_toml(tmp_path: Path) -> None:
    for path in sorted(CONFIG_DIR.glob("sasrec*.toml")):
        config = load_config(path, SASRecConfig)
        (tmp_path / path.name).write_text(dump_toml(config.to_dict()))
        assert load_config(tmp_path / path.name, SASRecConfig) == config


def test_unknown_model_lists_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"unknown model 'gpt'; choices: .*sasrec"):
        get_model_spec("gpt")
    assert MODELS["sasrec"].default_config.is_file()


@pytest.mark.parametrize("item_features", [False, True])
def test_train_command_trains_exports_and_publishes(tmp_path: Path, item_features: bool) -> None:
    """With item_features on, the export's ONNX parity check covers the content term too."""
    from typer.testing import CliRunner

    from training.cli import app

    run_dir, store = tmp_path / "run", tmp_path / "store"
    config = TINY
    if item_features:
        config = tmp_path / "features.toml"
        config.write_text(TINY.read_text().replace("[model]\n", "[model]\nitem_features = true\n"))
        assert "item_features = true" in config.read_text()
    result = CliRunner().invoke(
        app,
        [
            "train",
            "--model",
            "sasrec",
            "--dataset",
            "synthetic:users=120,items=60,interactions=2400",
            "--config",
            str(config),
            "--out",
            str(run_dir),
            "--epochs",
            "1",
            "--publish",
            "--store",
            str(store),
            "--name",
            "tiny",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "ndcg@10" in result.output
    assert "version 1" in result.output
    bundle = json.loads((run_dir / "bundle" / "bundle.json").read_text())
    assert bundle["metrics"] == json.loads((run_dir / "metrics.json").read_text())
    assert (store / "tiny" / "1" / "manifest.json").is_file()
    saved = (run_dir / "config.toml").read_text()
    assert ("item_features = true" in saved) == item_features


def test_train_command_rejects_an_unknown_model_with_exit_code_2() -> None:
    from typer.testing import CliRunner

    from training.cli import app

    result = CliRunner().invoke(app, ["train", "--model", "gpt", "--dataset", "synthetic"])
    assert result.exit_code == 2
    assert "unknown model 'gpt'" in result.output


def test_resume_without_a_run_folder_is_a_clear_error() -> None:
    from typer.testing import CliRunner

    from training.cli import app

    result = CliRunner().invoke(app, ["train", "--dataset", "synthetic", "--resume"])
    assert result.exit_code == 2
    assert "--resume needs --out RUN_DIR" in result.output
