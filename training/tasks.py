"""Training tasks: how one model family's batches are built and its loss computed.

The loop in training/train.py is model-agnostic: per epoch it calls `task.start_epoch(model,
epoch)` (a hook for periodic work such as mining hard negatives; returns statistics to log), then
`task.batches(...)` and `task.loss(model, batch)` per batch. Model, objective and serving graph
are separate objects (DESIGN 5.2): a model only maps histories to hidden states and queries.

- `NextItemTask` (SASRec): every non-padding position predicts the next item (CE or sampled;
  with `exclude_seen`, over the items that position has not seen yet).
- `ClozeTask` (BERT4Rec): random positions replaced by [MASK] (plus the last position, the
  serving query) and predicted over the catalogue.
- `TwoTowerTask` (training/two_tower_task.py): in-batch softmax with logQ and hard negatives.

Every random draw uses the global torch generator, so a resumed run repeats a straight one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from training.baselines.base import item_counts
from training.config import TrainConfig
from training.data.splits import Split
from training.errors import ConfigError
from training.losses import Seen, SequenceLoss, build_loss
from training.sequences import Windows, training_windows

Batch = dict[str, torch.Tensor]


def train_counts(split: Split) -> np.ndarray:
    """Training interactions per item, int64 [n_items + 1] (padding = 0)."""
    return item_counts(split.train, split.dataset.n_items)


class TrainTask(Protocol):
    @property
    def n_sequences(self) -> int: ...  # training rows per epoch

    def steps_per_epoch(self, batch_size: int) -> int: ...
    def start_epoch(self, model: nn.Module, epoch: int) -> dict[str, Any]: ...
    def batches(
        self, batch_size: int, sort_chunk: int, device: torch.device
    ) -> Iterator[Batch]: ...
    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, int]: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class WindowTask:
    """Shared plumbing: a `Windows` table, its batch order and no state between epochs."""

    data: Windows

    @property
    def n_sequences(self) -> int:
        return len(self.data)

    def steps_per_epoch(self, batch_size: int) -> int:
        return (len(self.data) + batch_size - 1) // batch_size

    def start_epoch(self, model: nn.Module, epoch: int) -> dict[str, Any]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None


class NextItemTask(WindowTask):
    """Next-item prediction at every position of left-padded windows (SASRec)."""

    def __init__(self, model: nn.Module, split: Split, config: TrainConfig) -> None:
        mc: Any = model.config
        self.exclude_seen = bool(getattr(mc, "exclude_seen", False))
        self.data = training_windows(
            split.train, int(mc.max_len), config.windows, earlier=self.exclude_seen
        )
        if len(self.data) == 0:
            raise ConfigError("no training sequence has 2 or more items")
        self.loss_fn: SequenceLoss = build_loss(
            mc.loss, mc.label_smoothing, mc.n_negatives, mc.negatives, train_counts(split)
        )

    def batches(self, batch_size: int, sort_chunk: int, device: torch.device) -> Iterator[Batch]:
        for rows in self.data.batches(batch_size, sort_chunk):
            inputs, targets = (t.to(device, non_blocking=True) for t in self.data.batch(rows))
            batch = {"inputs": inputs, "targets": targets}
            if self.exclude_seen:
                batch["earlier"] = self.data.earlier_items(rows).to(device, non_blocking=True)
            yield batch

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, int]:
        inputs, targets = batch["inputs"], batch["targets"]
        hidden = model(inputs)  # (B, L, D)
        mask = targets != 0
        items = model.item_embeddings()  # type: ignore[operator]
        seen = None
        if self.exclude_seen:
            first = first_seen(inputs, batch.get("earlier"), items.shape[0])
            rows, steps = mask.nonzero(as_tuple=True)  # row-major, as hidden[mask]
            seen = Seen(first, rows, steps.to(first.dtype))
        return self.loss_fn(hidden[mask], items, targets[mask], seen), int(mask.sum())


def first_seen(inputs: torch.Tensor, earlier: torch.Tensor | None, n_columns: int) -> torch.Tensor:
    """int32 (B, n_columns): for each row of a left-padded (B, L) batch, the first position
    (column) holding each item; -1 for the row's items before its window (`earlier`, (B, E),
    0 = none); L for items it never had. Position t has seen item c when the value is <= t."""
    B, L = inputs.shape
    first = torch.full((B, n_columns), L, dtype=torch.int32, device=inputs.device)
    steps = torch.arange(L, dtype=torch.int32, device=inputs.device).expand(B, L)
    first.scatter_reduce_(1, inputs, steps, reduce="amin")
    if earlier is not None:
        first.scatter_(1, earlier, -1)
    return first


def item_windows(sequences: Sequence[np.ndarray], length: int, windows: int = 1) -> Windows:
    """Up to `windows` windows of up to `length` items per sequence (0 = all), newest first,
    non-overlapping, left-padded; sequences of < 2 items are skipped. Targets are unused (0)."""
    rows: list[np.ndarray] = []
    for seq in sequences:
        seq = np.asarray(seq, dtype=np.int64)
        if len(seq) < 2:
            continue
        end, taken = len(seq), 0
        while end >= 2 and (windows == 0 or taken < windows):
            rows.append(seq[max(0, end - length) : end])
            end, taken = max(0, end - length), taken + 1
    x = np.zeros((len(rows), length), dtype=np.int64)
    for row, items in enumerate(rows):
        x[row, length - len(items) :] = items
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.int64)
    inputs = torch.from_numpy(x)
    return Windows(inputs, torch.zeros_like(inputs), lengths)


def cloze_mask(
    inputs: torch.Tensor, mask_prob: float, mask_last: bool, mask_token: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(masked inputs, targets): each non-padding position is replaced by `mask_token` with
    probability `mask_prob` (the last column always when `mask_last`); targets hold the original
    item at masked positions and 0 elsewhere."""
    valid = inputs != 0
    masked = (torch.rand(inputs.shape) < mask_prob).to(inputs.device) & valid
    if mask_last:
        masked[:, -1] = valid[:, -1]
    targets = torch.where(masked, inputs, torch.zeros_like(inputs))
    return inputs.masked_fill(masked, mask_token), targets


class ClozeTask(WindowTask):
    """Masked-item (cloze) training over windows of up to max_len items (BERT4Rec)."""

    def __init__(self, model: nn.Module, split: Split, config: TrainConfig) -> None:
        mc: Any = model.config
        self.mask_prob, self.mask_last = float(mc.mask_prob), bool(mc.mask_last)
        self.mask_token = int(mc.n_items) + 1
        self.data = item_windows(split.train, int(mc.max_len), config.windows)
        if len(self.data) == 0:
            raise ConfigError("no training sequence has 2 or more items")
        self.loss_fn: SequenceLoss = build_loss(
            mc.loss, mc.label_smoothing, mc.n_negatives, mc.negatives, train_counts(split)
        )

    def batches(self, batch_size: int, sort_chunk: int, device: torch.device) -> Iterator[Batch]:
        for rows in self.data.batches(batch_size, sort_chunk):
            items, _ = self.data.batch(rows)
            inputs, targets = cloze_mask(items, self.mask_prob, self.mask_last, self.mask_token)
            yield {"inputs": inputs.to(device), "targets": targets.to(device)}

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, int]:
        targets = batch["targets"]
        hidden = model(batch["inputs"])  # (B, L, D)
        mask = targets != 0
        items = model.item_embeddings()  # type: ignore[operator]
        return self.loss_fn(hidden[mask], items, targets[mask]), int(mask.sum())
