"""The training loop for next-item sequence models (SASRec and friends).

One epoch = every training window once, in a seeded random order; the loss is computed at every
non-padding position. After every `eval_every` epochs the model is evaluated on the validation
split with the shared full-ranking evaluator (query x item embeddings); the best weights by
validation NDCG@10 are kept, and training stops after `patience` evaluations without a gain.
RUN_DIR receives checkpoint.pt (every epoch; `resume=True` continues from it), best.pt,
epochs.jsonl, config.toml and finally metrics.json (test evaluated once, with the best weights).

Hooks: `dist` (training/distributed.py) trains data-parallel, rank 0 alone evaluating, writing
and logging; `tracker` (training/tracking.py) receives every epoch's numbers; `on_epoch(epoch,
valid_metrics)` runs after each evaluation and returns True to stop (it may raise, e.g. optuna's
TrialPruned).
"""

from __future__ import annotations

import copy
import json
import os
import random
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from training import checkpoint as ckpt
from training.config import RunConfig, TrainConfig, dump_toml
from training.data.splits import EvalSet, Split
from training.distributed import DistContext, ShardedTask
from training.errors import ConfigError
from training.evaluate import ScoreFn, evaluate
from training.models import spec_for
from training.schedule import build_optimizer, build_scheduler
from training.sequences import left_pad
from training.tasks import TrainTask, train_counts
from training.tracking import Tracker, flatten, numeric

SELECT = "ndcg@10"
EpochCallback = Callable[[int, dict[str, float]], bool]  # (epoch, valid metrics) -> stop?


@dataclass
class TrainResult:
    model: nn.Module
    best_epoch: int
    epochs_run: int
    stopped: str  # "epochs" | "patience" | "time" | "callback" | "interrupted"
    seconds: float
    losses: list[float] = field(default_factory=list)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # {"valid", "test"}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def configure_threads(threads: int) -> int:
    """torch intra-op threads: the config, else $CINESYNC_THREADS, else the idle cores.

    Idle = cores minus the 1-minute load average (at least 1): on a shared machine, threads
    that wait for busy cores at every parallel region run several times slower than one.
    """
    n = threads or int(os.environ.get("CINESYNC_THREADS", "0") or 0)
    if not n:
        cores = os.cpu_count() or 1
        n = max(1, min(cores, round(cores - os.getloadavg()[0])))
    torch.set_num_threads(n)
    return n


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"device must be auto, cpu or cuda, got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device cuda requested but no CUDA device is available")
    return torch.device(name)


def autocast(device: torch.device, amp: str) -> AbstractContextManager[Any]:
    if amp == "off":
        return nullcontext()
    if amp == "fp16" and device.type != "cuda":
        raise ConfigError("train.amp = 'fp16' needs a CUDA device; use 'bf16' or 'off' on CPU")
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_score_fn(model: nn.Module, device: torch.device, max_len: int) -> ScoreFn:
    """Scores of every item for each history: query(history) @ item_embeddings().T."""

    net: Any = model  # duck-typed: query(), item_embeddings()

    def score(users: np.ndarray, histories: list[np.ndarray]) -> np.ndarray:
        with torch.no_grad():
            query = net.query(left_pad(histories, max_len).to(device))
            scores: torch.Tensor = query.float() @ net.item_embeddings().float().T
        return np.asarray(scores.cpu().numpy())

    return score


def evaluate_model(
    model: nn.Module, eval_set: EvalSet, split: Split, device: torch.device, config: TrainConfig
) -> dict[str, float]:
    was_training = model.training
    model.eval()
    counts = train_counts(split)
    score_fn = make_score_fn(model, device, int(cast(Any, model).config.max_len))
    metrics = evaluate(
        score_fn,
        eval_set,
        split.dataset,
        ks=(10, 20),
        batch_size=config.eval_batch_size,
        train_popularity=counts,
    )
    model.train(was_training)
    return metrics


class _Run:
    """Mutable state of one training run (what a checkpoint saves)."""

    def __init__(self, model: nn.Module, config: TrainConfig, steps_per_epoch: int) -> None:
        self.model = model
        self.optimizer = build_optimizer(model, config)
        self.scheduler = build_scheduler(self.optimizer, config, steps_per_epoch)
        self.scaler = torch.amp.GradScaler("cuda", enabled=config.amp == "fp16")
        self.epoch = 0
        self.best_metric = -1.0
        self.best_epoch = 0
        self.bad_evals = 0
        self.seconds = 0.0
        self.best_valid: dict[str, float] = {}
        self.best_state: dict[str, torch.Tensor] = copy.deepcopy(model.state_dict())

    def state(self, meta: dict[str, Any]) -> dict[str, Any]:
        return {
            **meta,
            "model_state": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "best_metric": self.best_metric,
            "best_epoch": self.best_epoch,
            "bad_evals": self.bad_evals,
            "seconds": self.seconds,
            "best_valid": self.best_valid,
            "rng": ckpt.rng_state(),
        }

    def restore(self, state: dict[str, Any], best: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model_state"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.best_metric = int(state["epoch"]), float(state["best_metric"])
        self.best_epoch, self.bad_evals = int(state["best_epoch"]), int(state["bad_evals"])
        self.seconds, self.best_valid = float(state["seconds"]), dict(state["best_valid"])
        self.best_state = best["model_state"]
        ckpt.set_rng_state(state["rng"])


def _epoch(
    run: _Run,
    task: TrainTask,
    config: TrainConfig,
    device: torch.device,
    progress: bool,
) -> tuple[float, int]:
    """One pass over the task's batches; returns (mean loss per target, sequences seen)."""
    model = run.model
    model.train()
    batches = task.batches(config.batch_size, config.sort_chunk, device)
    total, n_targets = 0.0, 0
    bar = tqdm(
        batches,
        desc=f"epoch {run.epoch + 1}",
        total=task.steps_per_epoch(config.batch_size),
        leave=False,
        disable=not progress,
        unit="batch",
    )
    start = time.perf_counter()
    for batch in bar:
        with autocast(device, config.amp):
            loss, count = task.loss(model, batch)
        run.optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()  # type: ignore[no-untyped-call]
        if config.grad_clip > 0:
            run.scaler.unscale_(run.optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        run.scaler.step(run.optimizer)
        run.scaler.update()
        run.scheduler.step()
        value = float(loss.detach())
        total, n_targets = total + value * count, n_targets + count
        rate = (bar.n + 1) * config.batch_size / max(1e-9, time.perf_counter() - start)
        bar.set_postfix(loss=f"{value:.4f}", seqs_per_s=f"{rate:.0f}")
    return total / max(1, n_targets), task.n_sequences


def _append_jsonl(path: Path, row: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")


def _truncate_jsonl(path: Path, last_epoch: int) -> None:
    if path.exists():
        rows = [
            line
            for line in path.read_text().splitlines()
            if line.strip() and json.loads(line)["epoch"] <= last_epoch
        ]
        path.write_text("".join(r + "\n" for r in rows))


def _stop_reason(
    run: _Run, config: TrainConfig, row: dict[str, Any], on_epoch: EpochCallback | None
) -> str:
    """Why training stops after this epoch ("" = it goes on)."""
    if on_epoch is not None and "valid" in row and on_epoch(run.epoch, row["valid"]):
        return "callback"
    if config.patience and run.bad_evals >= config.patience:
        return "patience"
    # time budget: stop when another epoch as long as this one would overrun it
    if config.max_seconds and run.seconds + row["seconds"] > config.max_seconds:
        return "time"
    return ""


def train(
    model: nn.Module,
    split: Split,
    run_config: RunConfig,
    run_dir: Path,
    *,
    device: torch.device | None = None,
    meta: dict[str, Any] | None = None,
    resume: bool = False,
    stop_after: int | None = None,
    log: Callable[[str], None] = lambda message: print(message, flush=True),
    task: TrainTask | None = None,
    dist: DistContext | None = None,
    tracker: Tracker | None = None,
    on_epoch: EpochCallback | None = None,
    test: bool = True,
) -> TrainResult:
    """Train `model` on `split.train`, select on `split.valid`, test once on `split.test`.

    `meta` (plain values: model kind, model config ...) is stored in every checkpoint.
    `stop_after` ends this call after that many epochs (the schedule still spans all epochs).
    `task` (batches and loss) defaults to the model's registered task (training/tasks.py).
    With `dist` enabled, non-main ranks return their final weights and no metrics.
    `test=False` leaves the test split alone (tuning: selection on validation only).
    """
    config = run_config.train
    device = device or torch.device("cpu")
    dist = dist or DistContext(device=device)
    main = dist.is_main
    log = log if main else (lambda message: None)
    run_dir.mkdir(parents=True, exist_ok=True)
    model.to(device)
    if task is None:
        task = spec_for(model).task(model, split, config)
    if dist.enabled:
        task = ShardedTask(task, model, dist, config.seed)
    run = _Run(model, config, task.steps_per_epoch(config.batch_size))
    meta = {**(meta or {}), "config": run_config.to_dict()}
    epochs_log = run_dir / "epochs.jsonl"
    if resume:
        state = ckpt.load(run_dir / ckpt.CHECKPOINT)
        if state.get("config", {}).get("train") != meta["config"]["train"]:
            raise ConfigError(
                "resume: the train config differs from the checkpoint's; "
                "resume with the run's own config (RUN_DIR/config.toml)"
            )
        run.restore(state, ckpt.load(run_dir / ckpt.BEST))
        task.load_state_dict(state.get("task", {}))
        if main:
            _truncate_jsonl(epochs_log, run.epoch)
        log(
            f"resumed at epoch {run.epoch} (best {SELECT} {run.best_metric:.4f} "
            f"at epoch {run.best_epoch})"
        )
    else:
        seed_everything(config.seed)
        if main:
            epochs_log.unlink(missing_ok=True)
    if main:
        (run_dir / "config.toml").write_text(dump_toml(meta["config"]))
    progress = config.progress and sys.stderr.isatty() and main
    losses: list[float] = []
    stopped = "epochs"
    ran = 0
    while run.epoch < config.epochs:
        if stop_after is not None and ran >= stop_after:
            stopped = "interrupted"
            break
        start = time.perf_counter()
        task_stats = task.start_epoch(model, run.epoch)
        loss, n_seqs = _epoch(run, task, config, device, progress)
        train_seconds = time.perf_counter() - start
        run.epoch, ran = run.epoch + 1, ran + 1
        losses.append(loss)
        row: dict[str, Any] = {
            "epoch": run.epoch,
            "loss": loss,
            "lr": run.scheduler.get_last_lr()[0],
        }
        if task_stats:
            row["task"] = task_stats
        if main and (run.epoch % config.eval_every == 0 or run.epoch == config.epochs):
            valid = evaluate_model(model, split.valid, split, device, config)
            row["valid"] = valid
            if valid[SELECT] > run.best_metric:
                run.best_metric, run.best_epoch, run.bad_evals = valid[SELECT], run.epoch, 0
                run.best_valid = valid
                run.best_state = copy.deepcopy(model.state_dict())
                ckpt.save(
                    run_dir / ckpt.BEST, {**meta, "model_state": run.best_state, "epoch": run.epoch}
                )
            else:
                run.bad_evals += 1
        epoch_seconds = time.perf_counter() - start
        run.seconds += epoch_seconds
        row |= {
            "seconds": epoch_seconds,
            "train_seconds": train_seconds,
            "seqs_per_s": n_seqs / max(train_seconds, 1e-9),
        }
        if main:
            _append_jsonl(epochs_log, row)
            ckpt.save(run_dir / ckpt.CHECKPOINT, {**run.state(meta), "task": task.state_dict()})
            if tracker is not None:
                tracker.log_metrics(numeric(flatten(row)), step=run.epoch)
        valid_text = f" valid {SELECT} {row['valid'][SELECT]:.4f}" if "valid" in row else ""
        log(f"epoch {run.epoch:3d} loss {loss:.4f}{valid_text} ({epoch_seconds:.1f}s)")
        stop = dist.decide(_stop_reason(run, config, row, on_epoch) if main else "")
        if stop:
            stopped = stop
            break
    result = TrainResult(model, run.best_epoch, run.epoch, stopped, run.seconds, losses)
    if stopped == "interrupted" or not main:
        return result
    model.load_state_dict(run.best_state)
    result.metrics = {"valid": run.best_valid}
    if test:
        result.metrics["test"] = evaluate_model(model, split.test, split, device, config)
    (run_dir / "metrics.json").write_text(json.dumps(result.metrics, indent=2) + "\n")
    summary = {
        "best_epoch": run.best_epoch,
        "epochs": run.epoch,
        "stopped": stopped,
        "train_seconds": run.seconds,
        "seconds_per_epoch": run.seconds / max(1, run.epoch),
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return result
