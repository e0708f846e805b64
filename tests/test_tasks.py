"""Training tasks: next-item and cloze batches and losses, window bookkeeping, the registry,
resumable two-tower runs with mined negatives, and `cinesync train` for the new models."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from training.config import CONFIG_DIR, TrainConfig, load_config
from training.data import Split, leave_one_out, load_dataset
from training.errors import ConfigError
from training.losses import FullSoftmaxLoss, Seen
from training.models import MODELS, spec_for
from training.models.bert4rec import BERT4Rec, BERT4RecConfig
from training.models.sasrec import SASRec, SASRecConfig
from training.sequences import training_windows
from training.tasks import ClozeTask, NextItemTask, cloze_mask, first_seen, item_windows
from training.train import seed_everything, train
from training.two_tower_task import window_users


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def split() -> Split:
    return leave_one_out(load_dataset("synthetic:users=150,items=80,interactions=3000,seed=3"))


def test_next_item_task_scores_every_non_padding_position(split: Split) -> None:
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(n_items=split.dataset.n_items, max_len=20, dim=16, dropout=0.0))
    task = NextItemTask(model, split, TrainConfig(windows=0))
    assert task.n_sequences == len(training_windows(split.train, 20, 0))
    batch = next(task.batches(8, 1, torch.device("cpu")))
    loss, count = task.loss(model, batch)
    mask = batch["targets"] != 0
    want = FullSoftmaxLoss()(
        model(batch["inputs"])[mask], model.item_embeddings(), batch["targets"][mask]
    )
    torch.testing.assert_close(loss, want)
    assert count == int(mask.sum())


def seen_lists(inputs: torch.Tensor, earlier: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Oracle: for each position where `mask` holds (row-major), the items before the row's
    window and in the window up to that position, as a zero-padded (N, W) table."""
    lists = [earlier[b].tolist() + inputs[b, : t + 1].tolist() for b, t in mask.nonzero().tolist()]
    width = max(len(items) for items in lists)
    return torch.tensor([items + [0] * (width - len(items)) for items in lists])


def test_first_seen_marks_what_each_position_has_seen() -> None:
    inputs = torch.tensor([[0, 0, 3, 5, 7], [4, 3, 4, 6, 2]])
    earlier = torch.tensor([[0, 1, 2], [0, 0, 9]])
    first = first_seen(inputs, earlier, 12)
    for b in range(2):
        for t in range(5):
            seen = {c for c in range(1, 12) if first[b, c] <= t}
            want = set(earlier[b].tolist()) | set(inputs[b, : t + 1].tolist())
            assert seen == want - {0}
    assert first[1, 4] == 0  # a repeat counts from its first position


def test_next_item_task_with_exclude_seen_removes_each_positions_history(split: Split) -> None:
    torch.manual_seed(0)
    config = SASRecConfig(
        n_items=split.dataset.n_items, max_len=20, dim=16, dropout=0.0, exclude_seen=True
    )
    model = SASRec(config)
    task = NextItemTask(model, split, TrainConfig(windows=0))
    batch = next(task.batches(64, 1, torch.device("cpu")))
    loss, _ = task.loss(model, batch)
    inputs, targets = batch["inputs"], batch["targets"]
    mask = targets != 0
    hidden, items = model(inputs)[mask], model.item_embeddings()
    # windows of 20: some rows have items before their window, and those count as seen
    assert batch["earlier"].ne(0).any()
    seen = Seen.of_lists(seen_lists(inputs, batch["earlier"], mask), items.shape[0])
    torch.testing.assert_close(loss, FullSoftmaxLoss()(hidden, items, targets[mask], seen))
    assert float(loss.detach()) < float(FullSoftmaxLoss()(hidden, items, targets[mask]).detach())


def test_item_windows_are_newest_first_non_overlapping_and_skip_single_items() -> None:
    w = item_windows([np.arange(1, 8), np.array([4, 5]), np.array([9])], length=3, windows=0)
    assert w.inputs.tolist() == [[5, 6, 7], [2, 3, 4], [0, 4, 5]]  # [1] alone: no context
    assert w.lengths.tolist() == [3, 3, 2]
    assert item_windows([np.arange(1, 8)], length=3, windows=1).inputs.tolist() == [[5, 6, 7]]


def test_cloze_mask_hides_items_never_padding_and_always_the_last() -> None:
    torch.manual_seed(0)
    inputs = torch.randint(1, 50, (400, 30))
    inputs[:, :10] = 0
    masked, targets = cloze_mask(inputs, 0.2, True, mask_token=99)
    hidden = masked == 99
    assert torch.equal(hidden, targets != 0)
    assert torch.equal(targets[hidden], inputs[hidden])
    assert torch.equal(masked[~hidden], inputs[~hidden])
    assert not hidden[:, :10].any()
    assert hidden[:, -1].all()
    assert float(hidden[:, 10:-1].float().mean()) == pytest.approx(0.2, abs=0.01)
    _, no_last = cloze_mask(inputs, 0.2, False, mask_token=99)
    assert not (no_last[:, -1] != 0).all()


def test_cloze_task_targets_are_masked_items(split: Split) -> None:
    torch.manual_seed(0)
    model = BERT4Rec(BERT4RecConfig(n_items=split.dataset.n_items, max_len=20, dim=16))
    task = ClozeTask(model, split, TrainConfig(windows=1))
    assert task.n_sequences == sum(len(s) >= 2 for s in split.train)
    batch = next(task.batches(16, 1, torch.device("cpu")))
    assert torch.equal(batch["inputs"] == model.mask_token, batch["targets"] != 0)
    loss, count = task.loss(model, batch)
    assert torch.isfinite(loss)
    assert count >= 16  # the last position of every row at least


@pytest.mark.parametrize("windows", [0, 1, 2])
def test_window_users_name_the_user_of_each_training_window(windows: int) -> None:
    seqs = [np.arange(1, n + 1) for n in (0, 1, 2, 5, 11, 23)]
    w = training_windows(seqs, 4, windows)
    users = window_users(seqs, 4, windows)
    assert len(users) == len(w)
    for row, user in enumerate(users.tolist()):
        items = set(w.inputs[row][w.inputs[row] != 0].tolist())
        assert items <= set(seqs[user].tolist())


def test_registry_finds_each_models_spec_and_its_configs_parse() -> None:
    assert set(MODELS) >= {"sasrec", "bert4rec", "two_tower"}
    for name, spec in MODELS.items():
        for path in sorted(CONFIG_DIR.glob(f"{name}*.toml")):
            load_config(path, spec.config_cls)
        model = spec.model_cls(spec.config_cls(n_items=5))
        assert spec_for(model) is spec
    with pytest.raises(ConfigError, match="no registered model"):
        spec_for(torch.nn.Linear(2, 2))


def test_two_tower_resume_repeats_a_straight_run_with_mined_negatives(
    split: Split, tmp_path: Path
) -> None:
    spec = MODELS["two_tower"]
    config = load_config(CONFIG_DIR / "two_tower-tiny.toml", spec.config_cls)
    config = replace(config, train=replace(config.train, epochs=3))

    def fresh() -> torch.nn.Module:
        seed_everything(0)
        return spec.build(
            spec.config_cls(n_items=split.dataset.n_items, **config.model), split.dataset
        )

    straight = train(fresh(), split, config, tmp_path / "a", log=lambda _: None)
    first = train(fresh(), split, config, tmp_path / "b", stop_after=2, log=lambda _: None)
    rest = train(fresh(), split, config, tmp_path / "b", resume=True, log=lambda _: None)
    np.testing.assert_allclose(first.losses + rest.losses, straight.losses, rtol=1e-5)
    rows = [json.loads(r) for r in (tmp_path / "a" / "epochs.jsonl").read_text().splitlines()]
    assert "task" not in rows[0]  # hard_start = 1
    mined = rows[1]["task"]["hard_negatives"]
    assert mined["queries"] == sum(len(s) >= 2 for s in split.train)
    assert mined["mean_rank"] > 2  # hard_skip = 2


def test_train_command_trains_exports_and_publishes_a_two_tower(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from training.cli import app

    model, run_dir, store = "two_tower", tmp_path / "run", tmp_path / "store"
    args = [
        "train",
        "--model",
        model,
        "--dataset",
        "synthetic:users=120,items=60,interactions=2400",
        "--config",
        str(CONFIG_DIR / f"{model}-tiny.toml"),
        "--out",
        str(run_dir),
        "--epochs",
        "2",
        "--publish",
        "--store",
        str(store),
        "--name",
        "tiny",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    bundle = json.loads((run_dir / "bundle" / "bundle.json").read_text())
    assert bundle["model"]["kind"] == model
    assert bundle["metrics"] == json.loads((run_dir / "metrics.json").read_text())
    assert (store / "tiny" / "1" / "manifest.json").is_file()
