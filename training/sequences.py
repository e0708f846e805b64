"""Training windows and left-padded batches for next-item models.

A user's training sequence s gives windows of (input s[a:b], target s[a+1:b+1]) with
b - a <= max_len, newest first and non-overlapping targets. Rows are LEFT-padded with 0 (the
most recent item in the last column), the layout the model and the ONNX encoder read. On request
each window also carries the items of its sequence before the window (`earlier`), so a loss can
tell everything a position has seen, not only what fits in the window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Windows:
    inputs: torch.Tensor  # int64 [S, max_len], left-padded
    targets: torch.Tensor  # int64 [S, max_len], next item per input position (0 = none)
    lengths: torch.Tensor  # int64 [S], non-padding positions per row
    # int64 [S, E]: the sequence's items before the window, left-padded with 0 (None: not kept)
    earlier: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    def batches(self, batch_size: int, sort_chunk: int) -> list[torch.Tensor]:
        """Row indices per batch for one epoch, from the global torch generator. With
        sort_chunk > 1, rows are shuffled, cut into groups of sort_chunk batches, sorted by length
        within a group (less padding), and the batches shuffled again."""
        order = torch.randperm(len(self))
        if sort_chunk <= 1:
            return list(torch.split(order, batch_size))
        batches: list[torch.Tensor] = []
        for group in torch.split(order, batch_size * sort_chunk):
            by_length = group[torch.argsort(self.lengths[group], stable=True)]
            batches.extend(torch.split(by_length, batch_size))
        return [batches[i] for i in torch.randperm(len(batches)).tolist()]

    def batch(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets of `rows`, with columns that are padding in every row dropped."""
        width = max(1, int(self.lengths[rows].max()))
        return self.inputs[rows, -width:], self.targets[rows, -width:]

    def earlier_items(self, rows: torch.Tensor) -> torch.Tensor:
        """Items before each row's window, (len(rows), E') with columns that are padding in every
        row dropped (at least one column); all 0 when windows were built without them."""
        if self.earlier is None:
            return torch.zeros(len(rows), 1, dtype=torch.int64)
        block = self.earlier[rows]
        used = int((block != 0).sum(dim=1).max()) if block.numel() else 0
        return block[:, block.shape[1] - max(1, used) :]


def training_windows(
    sequences: Sequence[np.ndarray], max_len: int, windows: int = 1, earlier: bool = False
) -> Windows:
    """Up to `windows` windows per sequence (0 = all), newest first; skips sequences of < 2.
    With `earlier`, each window also keeps the items of its sequence before it."""
    inputs: list[np.ndarray] = []
    targets: list[np.ndarray] = []
    before: list[np.ndarray] = []
    for seq in sequences:
        seq = np.asarray(seq, dtype=np.int64)
        end = len(seq) - 1  # targets are seq[1:end + 1]
        taken = 0
        while end >= 1 and (windows == 0 or taken < windows):
            start = max(0, end - max_len)
            inputs.append(seq[start:end])
            targets.append(seq[start + 1 : end + 1])
            before.append(seq[:start])
            end, taken = start, taken + 1
    x = np.zeros((len(inputs), max_len), dtype=np.int64)
    y = np.zeros((len(inputs), max_len), dtype=np.int64)
    lengths = np.zeros(len(inputs), dtype=np.int64)
    for row, (a, b) in enumerate(zip(inputs, targets, strict=True)):
        x[row, max_len - len(a) :] = a
        y[row, max_len - len(b) :] = b
        lengths[row] = len(a)
    kept = None
    if earlier:
        e = np.zeros((len(before), max(1, max((len(b) for b in before), default=0))), np.int64)
        for row, items in enumerate(before):
            if len(items):
                e[row, e.shape[1] - len(items) :] = items
        kept = torch.from_numpy(e)
    return Windows(torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(lengths), kept)


def left_pad(histories: Sequence[np.ndarray], max_len: int) -> torch.Tensor:
    """The last `max_len` items of each history, left-padded to the longest: int64 [B, L]."""
    width = max(1, min(max_len, max((len(h) for h in histories), default=1)))
    out = np.zeros((len(histories), width), dtype=np.int64)
    for row, h in enumerate(histories):
        tail = np.asarray(h, dtype=np.int64)[-width:]
        if len(tail):
            out[row, width - len(tail) :] = tail
    return torch.from_numpy(out)
