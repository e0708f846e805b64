"""Two-tower retrieval: a user tower over the history (and user features), an item tower over
item ids and content; score = dot(query, item vector), both L2-normalised.

Item tower: id embedding + linear projection of content features (multi-hot genres, decade;
training/features.py) -> item vector. Its output over all items is the exported item table.
User tower: the history's item-tower outputs (before normalisation) pooled by any of "mean",
"attention" (a learned score per item plus a bias per distance from the most recent item) and
"last" (the most recent item), concatenated -> MLP -> query. User features (age bucket, gender,
occupation ...) are embeddings added to the MLP's hidden layer; code 0 = unknown, which is what
the serving graph (history only) uses, so training hides them at random (`feature_dropout`).
A user with no history gets `cold_query(features)`: the same head over an empty pooling, trained
(`cold_weight`) to predict the items of the user's training window from the features alone; the
export tabulates it for every feature combination (training/feature_queries.py).
Distances are counted from the most recent item, so left padding never changes the query.
The objective lives in training/two_tower_task.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from training.data.dataset import Dataset

POOLINGS = ("mean", "attention", "last")


@dataclass
class TwoTowerConfig:
    n_items: int  # real items; tables have n_items + 1 rows (row 0 = padding)
    max_len: int = 50  # most recent history items the user tower reads
    dim: int = 64
    hidden: int = 256  # user-tower MLP width
    pooling: str = "mean+attention+last"  # "+"-joined subset of POOLINGS
    dropout: float = 0.1
    item_features: bool = True  # content features in the item tower
    user_features: bool = True  # user feature embeddings in the user tower (training only)
    feature_dropout: float = 0.5  # chance a training row's user features are hidden
    cold_weight: float = 0.1  # weight of the feature-only (empty history) query's loss; 0 = off
    temperature: float = 0.05  # softmax temperature over cosine scores
    logq: bool = True  # subtract log(sampling probability) from in-batch negatives' logits
    label_smoothing: float = 0.0
    hard_ratio: float = 0.0  # share of a row's negatives that are mined hard negatives; 0 = off
    hard_pool: int = 100  # mined negatives kept per user
    hard_skip: int = 5  # top-scored non-positives skipped (likely unlabelled positives)
    hard_start: int = 2  # epochs of in-batch-only training before the first mining round
    refresh_every: int = 2  # epochs between mining rounds
    mine_users: int = 20000  # users (queries) sampled per mining round
    init_std: float = 0.02

    def __post_init__(self) -> None:
        parts = self.pooling.split("+")
        checks = [
            (self.n_items >= 1 and self.max_len >= 1, "n_items and max_len must be >= 1"),
            (self.dim >= 1 and self.hidden >= 1, "dim and hidden must be >= 1"),
            (
                all(p in POOLINGS for p in parts) and len(set(parts)) == len(parts),
                f"pooling must join distinct parts of {POOLINGS} with '+', got {self.pooling!r}",
            ),
            (0.0 <= self.dropout < 1.0, "dropout must be in [0, 1)"),
            (0.0 <= self.feature_dropout <= 1.0, "feature_dropout must be in [0, 1]"),
            (self.cold_weight >= 0.0, "cold_weight must be >= 0"),
            (self.temperature > 0.0, "temperature must be > 0"),
            (0.0 <= self.label_smoothing < 1.0, "label_smoothing must be in [0, 1)"),
            (0.0 <= self.hard_ratio < 1.0, "hard_ratio must be in [0, 1)"),
            (self.hard_pool >= 1 and self.hard_skip >= 0, "hard_pool >= 1 and hard_skip >= 0"),
            (
                self.hard_start >= 0 and self.refresh_every >= 1,
                "hard_start must be >= 0 and refresh_every >= 1",
            ),
            (self.mine_users >= 1, "mine_users must be >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


class TwoTower(nn.Module):
    item_feats: torch.Tensor  # buffer (n_items + 1, G)

    def __init__(
        self,
        config: TwoTowerConfig,
        item_features: torch.Tensor | None = None,
        user_cardinalities: Sequence[int] = (),
    ) -> None:
        """`item_features` float [n_items + 1, G]; `user_cardinalities`: codes per user feature."""
        super().__init__()
        self.config = config
        self.parts = config.pooling.split("+")
        n, D = config.n_items + 1, config.dim
        feats = item_features if config.item_features and item_features is not None else None
        feats = torch.zeros(n, 0) if feats is None else feats.float()
        if feats.shape[0] != n:
            raise ValueError(f"item_features has {feats.shape[0]} rows, expected {n}")
        self.register_buffer("item_feats", feats)  # (n, G)
        self.item_emb = nn.Embedding(n, D, padding_idx=0)
        self.feat_proj = nn.Linear(feats.shape[1], D, bias=False) if feats.shape[1] else None
        self.attn_score = nn.Linear(D, 1) if "attention" in self.parts else None
        self.dist_bias = nn.Embedding(config.max_len, 1) if "attention" in self.parts else None
        cards = list(user_cardinalities) if config.user_features else []
        self.user_embs = nn.ModuleList([nn.Embedding(c, config.hidden) for c in cards])
        self.fc1 = nn.Linear(D * len(self.parts), config.hidden)
        self.fc2 = nn.Linear(config.hidden, D)
        self.drop = nn.Dropout(config.dropout)
        self.apply(self._init_weights)
        if self.dist_bias is not None:
            nn.init.zeros_(self.dist_bias.weight)

    @classmethod
    def from_dataset(cls, config: TwoTowerConfig, ds: Dataset) -> TwoTower:
        from training.features import item_content_matrix, user_feature_codes

        return cls(config, torch.from_numpy(item_content_matrix(ds)), user_feature_codes(ds)[1])

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=self.config.init_std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=self.config.init_std)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()

    @property
    def n_user_features(self) -> int:
        return len(self.user_embs)

    def _item_raw(self, items: torch.Tensor) -> torch.Tensor:
        """Item tower before normalisation: (...) int64 -> (..., D); padding -> 0."""
        x = self.item_emb(items)
        if self.feat_proj is not None:
            x = x + self.feat_proj(self.item_feats[items])
        return x

    def item_vectors(self, items: torch.Tensor) -> torch.Tensor:
        """Item tower output, L2-normalised: (...) int64 -> (..., D)."""
        return F.normalize(self._item_raw(items), dim=-1)

    def item_embeddings(self) -> torch.Tensor:
        """(n_items + 1, D); row 0 (padding) is zero."""
        items = torch.arange(self.config.n_items + 1, device=self.item_emb.weight.device)
        return self.item_vectors(items) * (items != 0).unsqueeze(-1)

    def _pool(
        self, h: torch.Tensor, history: torch.Tensor, last_only: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(pooled (B, T, D * parts), weights (B, T, L)) for T = L prefixes or the last one."""
        L = h.shape[1]
        ar = torch.arange(L, device=history.device)
        dist = ((L - 1) - ar)[None, :] if last_only else ar[:, None] - ar[None, :]  # (T, L)
        keys = ((dist >= 0)[None] & (history != 0)[:, None, :]) | (dist == 0)[None]  # (B, T, L)
        mean_w = keys.to(h.dtype) / keys.sum(dim=-1, keepdim=True).to(h.dtype)
        weights, parts = mean_w, []
        if "mean" in self.parts:
            parts.append(mean_w @ h)
        if self.attn_score is not None and self.dist_bias is not None:
            bias = self.dist_bias(dist.clamp(0, self.config.max_len - 1))[..., 0]  # (T, L)
            logits = self.attn_score(h)[..., 0][:, None, :] + bias[None]  # (B, T, L)
            weights = logits.masked_fill(~keys, float("-inf")).softmax(dim=-1)
            parts.append(weights @ h)
        if "last" in self.parts:
            parts.append(h[:, -1:, :] if last_only else h)
        return torch.cat(parts, dim=-1), weights

    def _head(self, pooled: torch.Tensor, features: torch.Tensor | None) -> torch.Tensor:
        """MLP (+ user feature embeddings) -> normalised query: (B, T, P) -> (B, T, D)."""
        x = self.fc1(self.drop(pooled))
        for f, emb in enumerate(cast(list[nn.Embedding], self.user_embs)):
            # features None = every feature unknown (code 0): the serving graph's case
            x = x + (emb.weight[0] if features is None else emb(features[:, f])[:, None, :])
        return F.normalize(self.fc2(self.drop(F.gelu(x))), dim=-1)

    def forward(self, history: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        """Query after every prefix: history (B, L), features int64 (B, F) or None (unknown)
        -> (B, L, D); position t reads history[:, :t + 1]."""
        h = self.drop(self._item_raw(history))  # (B, L, D)
        pooled, _ = self._pool(h, history, last_only=False)
        return self._head(pooled, features)

    def encode(
        self, history: torch.Tensor, features: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(query (B, D), pooling weights over the history (B, L), 0 on padding)."""
        history = history[:, -self.config.max_len :]
        h = self.drop(self._item_raw(history))
        pooled, weights = self._pool(h, history, last_only=True)
        query = self._head(pooled, features)[:, 0, :]
        weights = weights[:, 0, :] * (history != 0).to(weights.dtype)
        return query, weights / weights.sum(dim=-1, keepdim=True).clamp_min(1e-12)

    def cold_query(self, features: torch.Tensor) -> torch.Tensor:
        """Feature-only query of a user with no history: features int64 (B, F) -> (B, D). The
        pooled history is zero, exactly what `encode` pools from an all-padding history."""
        width = self.fc1.in_features
        pooled = torch.zeros(len(features), 1, width, device=features.device)
        return self._head(pooled, features)[:, 0, :]

    def feature_cardinalities(self) -> list[int]:
        """Codes per user feature the model knows (0 = unknown included)."""
        return [int(emb.num_embeddings) for emb in cast(list[nn.Embedding], self.user_embs)]

    def query(self, history: torch.Tensor) -> torch.Tensor:
        return self.encode(history)[0]

    def last_attention(self, history: torch.Tensor) -> torch.Tensor:
        return self.encode(history)[1]

    def query_encoder(self) -> nn.Module:
        return TwoTowerQueryEncoder(self)


class TwoTowerQueryEncoder(nn.Module):
    """The serving graph: history int64 (B, L) -> (query (B, D), attention (B, L)); user
    features are unknown (the bundle contract's only input is the history)."""

    def __init__(self, model: TwoTower) -> None:
        super().__init__()
        self.model: Any = model

    def forward(self, history: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        result: tuple[torch.Tensor, torch.Tensor] = self.model.encode(history)
        return result
