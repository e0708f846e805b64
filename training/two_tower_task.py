"""Two-tower training task: next item after every prefix of the training windows, scored by an
in-batch softmax with logQ correction plus mined hard negatives (training/negatives.py).

Hard negatives: from epoch `hard_start` on, every `refresh_every` epochs, the model scores every
item for a seeded sample of up to `mine_users` users (query = the user's training history); each
keeps `hard_pool` top-scored items that are not in its training sequence, after skipping the top
`hard_skip` (likely unlabelled positives). Each training window then adds `hard_ratio` worth
of negatives drawn from its user's pool, shared by the window's positions. The pool is part of
the checkpoint (`state_dict`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from training.config import TrainConfig
from training.data.splits import Split
from training.errors import ConfigError
from training.features import user_feature_codes
from training.negatives import hard_count, in_batch_softmax, log_q, mine_hard_negatives
from training.sequences import left_pad, training_windows
from training.tasks import Batch, WindowTask, train_counts

COLD_TARGETS = 8


def window_users(sequences: Sequence[np.ndarray], max_len: int, windows: int) -> np.ndarray:
    """The user of each row of `training_windows(sequences, max_len, windows)`, int64 [S]."""
    lengths = np.asarray([len(s) for s in sequences], dtype=np.int64)
    per_user = np.where(lengths >= 2, -(-(lengths - 1) // max_len), 0)
    if windows:
        per_user = np.minimum(per_user, windows)
    return np.repeat(np.arange(len(sequences), dtype=np.int64), per_user)


class TwoTowerTask(WindowTask):
    def __init__(self, model: nn.Module, split: Split, config: TrainConfig) -> None:
        self.mc: Any = cast(Any, model).config
        self.train_seqs = split.train
        self.seed = config.seed
        self.data = training_windows(split.train, int(self.mc.max_len), config.windows)
        if len(self.data) == 0:
            raise ConfigError("no training sequence has 2 or more items")
        self.users = torch.from_numpy(window_users(split.train, self.mc.max_len, config.windows))
        if len(self.users) != len(self.data):
            raise RuntimeError("window_users disagrees with training_windows")
        self.log_q = log_q(train_counts(split)) if self.mc.logq else None
        n_features = int(getattr(model, "n_user_features", 0))
        codes = user_feature_codes(split.dataset)[0] if n_features else None
        if codes is not None and codes.shape[1] != n_features:
            raise ConfigError(
                f"the model has {n_features} user features, the data {codes.shape[1]}"
            )
        self.codes = None if codes is None else torch.from_numpy(codes)
        self.pool = torch.zeros(len(split.train), self.mc.hard_pool, dtype=torch.int64)
        self.mined = False

    def _mining_due(self, epoch: int) -> bool:
        start, every = int(self.mc.hard_start), int(self.mc.refresh_every)
        return self.mc.hard_ratio > 0 and epoch >= start and (epoch - start) % every == 0

    def start_epoch(self, model: nn.Module, epoch: int) -> dict[str, Any]:
        """Mine hard negatives when due (0-based `epoch`); returns their statistics."""
        if not self._mining_due(epoch):
            return {}
        eligible = np.flatnonzero([len(s) >= 2 for s in self.train_seqs])
        rng = np.random.default_rng([self.seed, epoch])
        users = np.sort(rng.choice(eligible, min(len(eligible), self.mc.mine_users), replace=False))
        net: Any = model
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        with torch.no_grad():
            items = net.item_embeddings().float()
            queries = []
            for start in range(0, len(users), 1024):
                rows = users[start : start + 1024]
                history = left_pad([self.train_seqs[u] for u in rows], self.mc.max_len)
                features = None if self.codes is None else self.codes[rows].to(device)
                queries.append(net.encode(history.to(device), features)[0].float())
            positives = [self.train_seqs[u] for u in users]
            pool, stats = mine_hard_negatives(
                torch.cat(queries), items, positives, self.mc.hard_pool, self.mc.hard_skip
            )
        model.train(was_training)
        self.pool.zero_()
        self.pool[torch.from_numpy(users)] = pool.cpu()
        self.mined = True
        return {"hard_negatives": stats}

    def batches(self, batch_size: int, sort_chunk: int, device: torch.device) -> Iterator[Batch]:
        for rows in self.data.batches(batch_size, sort_chunk):
            inputs, targets = self.data.batch(rows)
            batch = {"inputs": inputs, "targets": targets, "users": self.users[rows]}
            if self.codes is not None:
                features = self.codes[batch["users"]]
                hidden = torch.rand(len(rows)) < self.mc.feature_dropout
                batch["features"] = features.masked_fill(hidden[:, None], 0)
            yield {name: t.to(device) for name, t in batch.items()}

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, int]:
        targets = batch["targets"]
        queries = model(batch["inputs"], batch.get("features"))  # (B, L, D)
        mask = targets != 0
        hard = None
        n_hard = hard_count(
            self.mc.hard_ratio, int(torch.unique(targets[mask]).numel()), self.mc.hard_pool
        )
        if self.mined and n_hard:
            users = batch["users"].cpu()  # (B,)
            picks = torch.rand(len(users), self.mc.hard_pool).argsort(dim=1)[:, :n_hard]
            # (B, H) distinct picks from the row's pool (with replacement, a pool of 100 gave
            # about 63 distinct items for 100 picks)
            hard = self.pool[users].gather(1, picks).to(targets.device)
        net: Any = model
        loss = in_batch_softmax(
            queries,
            targets,
            net.item_vectors,
            self.log_q,
            self.mc.temperature,
            hard,
            self.mc.label_smoothing,
        )
        features = batch.get("features")
        if features is not None and self.mc.cold_weight > 0:
            # the feature-only query (no history) predicts items of the window: COLD_TARGETS
            # random positions per row on average (all of them cost as much again as the loss)
            share = COLD_TARGETS / targets.shape[1]
            keep = torch.rand(targets.shape, device=targets.device) < share
            cold = net.cold_query(features)[:, None, :].expand_as(queries)
            loss = loss + self.mc.cold_weight * in_batch_softmax(
                cold, targets * keep, net.item_vectors, self.log_q, self.mc.temperature, None,
                self.mc.label_smoothing,
            )  # fmt: skip
        return loss, int(mask.sum())

    def state_dict(self) -> dict[str, Any]:
        return {"pool": self.pool.clone(), "mined": self.mined}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "pool" in state:
            self.pool = state["pool"].clone()
            self.mined = bool(state["mined"])
