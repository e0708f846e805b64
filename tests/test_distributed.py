"""Distributed data-parallel training: disjoint shards, rank-0-only outputs, ranks in sync."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import cast

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from conftest import REPO_ROOT, free_port

from training import checkpoint as ckpt
from training.config import CONFIG_DIR, load_config
from training.distributed import (
    DistContext,
    cli_args,
    init_distributed,
    rank_batches,
    shard,
    torchrun_command,
)
from training.tasks import Batch, TrainTask

WORLD = 2
EPOCHS = 3


class RowTask:
    """A task whose batches are shuffled row ids (from the global generator, like the real ones)."""

    n_sequences = 24  # 6 batches of 4: no padding

    def steps_per_epoch(self, batch_size: int) -> int:
        return -(-self.n_sequences // batch_size)

    def batches(self, batch_size: int, sort_chunk: int, device: torch.device) -> Iterator[Batch]:
        for rows in torch.split(torch.randperm(self.n_sequences), batch_size):
            yield {"rows": rows.to(device)}


def test_shard_deals_every_batch_once_and_pads_to_equal_counts() -> None:
    batches: list[Batch] = [{"rows": torch.tensor([i])} for i in range(7)]
    shards = [shard(batches, rank, 3) for rank in range(3)]
    assert [len(s) for s in shards] == [3, 3, 3]
    dealt = sorted(int(b["rows"]) for s in shards for b in s)
    assert dealt == [0, 0, 1, 1, 2, 3, 4, 5, 6]  # 7 batches + 2 wrapped around


def test_ranks_get_disjoint_shards_of_the_same_shuffle_whatever_their_generators() -> None:
    task = cast(TrainTask, RowTask())
    for epoch in range(3):
        rows = []
        for rank in range(WORLD):
            torch.manual_seed(100 + rank)  # ranks' generators diverge (dropout draws)
            mine = rank_batches(task, 4, 1, 0, epoch, DistContext(rank=rank, world_size=WORLD))
            rows.append(torch.cat([b["rows"] for b in mine]).tolist())
        assert len(rows[0]) == len(rows[1]) == task.n_sequences // WORLD
        assert set(rows[0]).isdisjoint(rows[1])
        assert set(rows[0]) | set(rows[1]) == set(range(task.n_sequences))
    a = rank_batches(task, 4, 1, 0, 0, DistContext(rank=0, world_size=WORLD))
    b = rank_batches(task, 4, 1, 0, 1, DistContext(rank=0, world_size=WORLD))
    assert not all(torch.equal(x["rows"], y["rows"]) for x, y in zip(a, b, strict=True))


def test_single_process_context_comes_from_an_environment_without_torchrun() -> None:
    ctx = init_distributed(torch.device("cpu"), env={})
    assert (ctx.rank, ctx.world_size, ctx.enabled, ctx.is_main) == (0, 1, False, True)
    assert ctx.decide("patience") == "patience"


def test_torchrun_command_passes_the_train_options() -> None:
    command = torchrun_command(
        2, {"model": "sasrec", "data_dir": Path("d"), "epochs": None, "resume": False}
    )
    assert command[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert "--nproc-per-node=2" in command
    assert command[command.index("-m", 3) + 1] == "training.train_cli"
    assert command[-5:] == ["--model", "sasrec", "--data-dir", "d", "--no-resume"]
    assert cli_args({"publish": True, "seed": 0}) == ["--publish", "--seed", "0"]


def _worker(rank: int, port: int, run_dir: Path) -> None:
    """One rank: train the tiny SASRec for EPOCHS epochs, then save its final weights."""
    os.environ |= {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "RANK": str(rank),
        "LOCAL_RANK": str(rank),
        "WORLD_SIZE": str(WORLD),
        "LOCAL_WORLD_SIZE": str(WORLD),
    }
    torch.set_num_threads(1)
    from training.data import leave_one_out, load_dataset
    from training.models.sasrec import SASRec, SASRecConfig
    from training.train import seed_everything, train

    ctx = init_distributed(torch.device("cpu"))
    try:
        split = leave_one_out(load_dataset("synthetic:users=120,items=60,interactions=2400,seed=5"))
        config = load_config(CONFIG_DIR / "sasrec-tiny.toml", SASRecConfig)
        config.model["dropout"] = 0.1
        config = replace(config, train=replace(config.train, epochs=EPOCHS, batch_size=16))
        seed_everything(rank)  # different initial weights: DDP must broadcast rank 0's
        model = SASRec(SASRecConfig(n_items=split.dataset.n_items, **config.model))
        result = train(model, split, config, run_dir, dist=ctx, log=lambda _: None)
        if rank != 0:
            assert result.metrics == {}
            torch.save(result.model.state_dict(), run_dir / f"rank{rank}.pt")
    finally:
        ctx.close()


def test_two_gloo_ranks_end_with_identical_parameters_and_a_falling_loss(tmp_path: Path) -> None:
    mp.start_processes(
        _worker, args=(free_port(), tmp_path), nprocs=WORLD, start_method="spawn", join=True
    )
    rows = [json.loads(line) for line in (tmp_path / "epochs.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, EPOCHS + 1))  # rank 0 alone wrote them
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert all("valid" in r for r in rows)
    assert (tmp_path / "metrics.json").is_file()
    rank0 = ckpt.load(tmp_path / ckpt.CHECKPOINT)["model_state"]  # rank 0's final weights
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert rank0.keys() == rank1.keys()
    for name, value in rank0.items():
        assert torch.equal(value, rank1[name]), name
    assert not all(torch.equal(v, torch.zeros_like(v)) for v in rank0.values())
    assert np.isfinite(rows[-1]["loss"])


@pytest.mark.slow
def test_cinesync_train_nproc_2_trains_exports_publishes_and_tracks_once(tmp_path: Path) -> None:
    """The whole command: torchrun, 2 gloo ranks, rank 0 exports, publishes and logs to MLflow."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "CINESYNC_THREADS": "1"}
    env.pop("CINESYNC_MLFLOW_URI", None)
    command = [
        sys.executable, "-m", "training.cli", "train", "--model", "sasrec",
        "--dataset", "synthetic:users=120,items=60,interactions=2400,seed=5",
        "--config", str(CONFIG_DIR / "sasrec-tiny.toml"), "--out", str(tmp_path / "run"),
        "--device", "cpu", "--nproc", "2", "--mlflow", "--publish", "--store", str(tmp_path / "s"),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("epoch   1 loss") == 1  # rank 0 alone logs
    assert (tmp_path / "s" / "cinesync" / "1" / "manifest.json").is_file()
    db = sqlite3.connect(tmp_path / "mlruns.db")
    try:
        ((run_id, status, uri),) = db.execute("SELECT run_uuid, status, artifact_uri FROM runs")
        params = dict(db.execute("SELECT key, value FROM params WHERE run_uuid = ?", (run_id,)))
        steps = [
            s
            for (s,) in db.execute(
                "SELECT step FROM metrics WHERE key = 'valid/ndcg_at_10' ORDER BY step"
            )
        ]
    finally:
        db.close()
    assert status == "FINISHED"
    assert params["world_size"] == "2"
    assert steps == [1, 2, 3]
    artifacts = Path(uri.removeprefix("file://"))
    assert {p.name for p in artifacts.iterdir()} == {"bundle.json", "manifest.json"}
