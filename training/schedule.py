"""Optimiser and learning-rate schedule for a run (both restorable from a checkpoint)."""

from __future__ import annotations

import math

import torch
from torch import nn

from training.config import TrainConfig


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW; weight decay on Linear weights only (not embeddings, norms or biases)."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            is_matrix = isinstance(module, nn.Linear) and name == "weight"
            (decay if is_matrix else no_decay).append(param)
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.98))


def lr_factor(schedule: str, step: int, total: int, warm: int, cycles: int) -> float:
    """Multiplier of the peak learning rate at `step` (0-based) of `total`.

    onecycle: cosine warm-up from 1/25 to 1 over `warm` steps, then cosine annealing to 1/25e4
    (torch's OneCycleLR shape); cosine: linear warm-up, then cosine decay to 0; restarts: linear
    warm-up, then `cycles` cosine decays from 1 to 0 (SGDR, Loshchilov & Hutter 2017), each twice
    as long as the one before, the last ending at the last step (torch's
    CosineAnnealingWarmRestarts with T_mult=2 and T_0 set so); constant: linear warm-up, then 1.
    """
    if step < warm:
        if schedule == "onecycle":
            return _cos_between(1 / 25, 1.0, step / warm)
        return (step + 1) / warm
    if schedule == "constant":
        return 1.0
    if schedule == "restarts":
        return _restart_factor(step - warm, total - warm, cycles)
    progress = min(1.0, (step - warm) / max(1, total - warm - 1))
    if schedule == "onecycle":
        return _cos_between(1.0, 1 / 25e4, progress)
    return _cos_between(1.0, 0.0, progress)


def _restart_factor(step: int, steps: int, cycles: int) -> float:
    """Cosine from 1 towards 0 within each of `cycles` cycles of T_0 * 2^i steps, where
    T_0 = steps / (2^cycles - 1) (a float, so any step count fits)."""
    t = min(step, steps - 1) / (steps / (2**cycles - 1))  # steps since the start, in units of T_0
    cycle = int(math.log2(t + 1))  # cycle i spans [2^i - 1, 2^(i+1) - 1) units
    start = 2**cycle - 1
    return _cos_between(1.0, 0.0, (t - start) / 2**cycle)


def _cos_between(start: float, end: float, progress: float) -> float:
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Stepped once per batch over `epochs * steps_per_epoch` steps (see `lr_factor`)."""
    total = max(1, config.epochs * steps_per_epoch)
    warm = int(config.warmup * total)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(config.schedule, step, total, warm, config.cycles)
    )
