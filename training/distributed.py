"""Distributed data-parallel training: `torchrun --nproc_per_node=N -m training.train_cli ...`
or `cinesync train --nproc N` (which runs torchrun for you).

Every rank builds the same model and task; `ShardedTask` wraps the task so that each rank trains
on a disjoint shard of the epoch's batches (one seed-based shuffle per epoch, identical on every
rank, dealt round-robin and padded so every rank takes the same number of steps) and computes
its loss through `DistributedDataParallel` (gradients averaged across ranks: the parameters stay
identical). Rank 0 alone evaluates, checkpoints and logs; its early-stopping decision is
broadcast (`DistContext.decide`), and the other ranks wait for it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from training.tasks import Batch, TrainTask

STOP_REASONS = ("", "patience", "time", "callback")  # what `decide` can broadcast


@dataclass(frozen=True)
class DistContext:
    """This process's place in the process group (a single process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def decide(self, reason: str) -> str:
        """Rank 0's stop reason ("" = go on), on every rank; the other ranks block until then."""
        if not self.enabled:
            return reason
        code = torch.tensor([STOP_REASONS.index(reason)], device=self.device)
        dist.broadcast(code, src=0)
        return STOP_REASONS[int(code.item())]

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def share_threads(self, threads: int) -> int:
        """Split the intra-op threads one process would use among this machine's ranks."""
        if self.enabled:
            threads = max(1, threads // self.local_world_size)
            torch.set_num_threads(threads)
        return threads

    def close(self, wait: bool = True) -> None:
        """Wait for every rank (unless this one failed), then leave the process group."""
        if self.enabled and dist.is_initialized():
            if wait:
                dist.barrier()
            dist.destroy_process_group()


def init_distributed(device: torch.device, env: Mapping[str, str] | None = None) -> DistContext:
    """Join the process group torchrun describes (WORLD_SIZE > 1): gloo on CPU, NCCL on CUDA
    (one GPU per local rank). Without torchrun's variables: a single-process context."""
    env = os.environ if env is None else env
    world = int(env.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext(device=device)
    rank, local_rank = int(env["RANK"]), int(env.get("LOCAL_RANK", env["RANK"]))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(
            "nccl" if device.type == "cuda" else "gloo",
            rank=rank,
            world_size=world,
            timeout=timedelta(minutes=float(env.get("CINESYNC_DIST_TIMEOUT_MIN", "60"))),
        )
    local_world = int(env.get("LOCAL_WORLD_SIZE", str(world)))
    return DistContext(rank, world, local_rank, local_world, device)


def shard(batches: list[Batch], rank: int, world_size: int) -> list[Batch]:
    """Rank `rank`'s batches: every world_size-th one, the list first padded by wrapping around
    so that every rank gets ceil(len / world_size) batches (as DistributedSampler does)."""
    if not batches:
        return []
    padded = batches + [batches[i % len(batches)] for i in range(-len(batches) % world_size)]
    return padded[rank::world_size]


def rank_batches(
    task: TrainTask, batch_size: int, sort_chunk: int, seed: int, epoch: int, ctx: DistContext
) -> list[Batch]:
    """This rank's share of the epoch's batches (on the CPU). The shuffle is seeded by (seed,
    epoch) alone, so it is the same on every rank whatever each rank's dropout drew before."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed * 1_000_003 + epoch)
        every = list(task.batches(batch_size, sort_chunk, torch.device("cpu")))
    return shard(every, ctx.rank, ctx.world_size)


class _TaskLoss(nn.Module):
    """model + task.loss as one module, so DDP sees every parameter use inside forward()."""

    def __init__(self, model: nn.Module, task: TrainTask) -> None:
        super().__init__()
        self.model = model
        self.task = task

    def forward(self, batch: Batch) -> tuple[torch.Tensor, int]:
        return self.task.loss(self.model, batch)


class ShardedTask:
    """A TrainTask for one rank: its shard of each epoch's batches, its loss through DDP."""

    def __init__(self, task: TrainTask, model: nn.Module, ctx: DistContext, seed: int) -> None:
        self.inner, self.ctx, self.seed, self.epoch = task, ctx, seed, 0
        ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        self.ddp = DistributedDataParallel(_TaskLoss(model, task), device_ids=ids)

    @property
    def n_sequences(self) -> int:  # what all ranks together see per epoch
        return self.inner.n_sequences

    def steps_per_epoch(self, batch_size: int) -> int:
        return -(-self.inner.steps_per_epoch(batch_size) // self.ctx.world_size)

    def start_epoch(self, model: nn.Module, epoch: int) -> dict[str, Any]:
        self.epoch = epoch
        return self.inner.start_epoch(model, epoch)

    def batches(self, batch_size: int, sort_chunk: int, device: torch.device) -> Iterator[Batch]:
        mine = rank_batches(self.inner, batch_size, sort_chunk, self.seed, self.epoch, self.ctx)
        for batch in mine:
            yield {name: t.to(device, non_blocking=True) for name, t in batch.items()}

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, int]:
        loss, count = self.ddp(batch)
        return loss, count

    def state_dict(self) -> dict[str, Any]:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state)


def cli_args(options: Mapping[str, object]) -> list[str]:
    """Typer-style arguments for `options`: --some-name VALUE; True -> --flag, False ->
    --no-flag; None -> left out (the command's default)."""
    args: list[str] = []
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is None:
            continue
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + flag[2:])
        else:
            args += [flag, str(value)]
    return args


def torchrun_command(nproc: int, train_options: Mapping[str, object]) -> list[str]:
    """The torchrun command line that runs `cinesync train` with `nproc` local processes."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "training.train_cli",
        *cli_args(train_options),
    ]


def launch(nproc: int, train_options: Mapping[str, object], cwd: Path | None = None) -> int:
    """Run `cinesync train` on `nproc` processes through torchrun; returns its exit status."""
    return subprocess.run(torchrun_command(nproc, train_options), cwd=cwd, check=False).returncode
