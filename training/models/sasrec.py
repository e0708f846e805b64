"""SASRec: a causal self-attention next-item recommender (Kang & McAuley, 2018).

Pre-LN transformer blocks over LEFT-padded item histories (0 = padding, most recent item in the
last column). Positions are counted from the most recent item (position 0 = last column), so the
output of the last position does not depend on how much left padding a history carries. Input
and output item embeddings are shared: score(item i) = dot(query, item_embeddings()[i]).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from training.data.dataset import Dataset

Rope = tuple[torch.Tensor, torch.Tensor] | None

POSITIONS = ("learned", "rope")
LOSSES = ("ce", "sampled")
NEGATIVES = ("uniform", "popularity")


@dataclass
class SASRecConfig:
    n_items: int  # real items; embeddings have n_items + 1 rows (row 0 = padding)
    max_len: int = 200  # longest history the model reads
    dim: int = 64
    n_layers: int = 2
    n_heads: int = 2
    ffn_mult: int = 4  # feed-forward hidden size = ffn_mult * dim
    dropout: float = 0.2  # embeddings and residual branches
    attn_dropout: float = 0.0  # attention weights (costly on a CPU: one mask entry per L x L)
    pos: str = "learned"  # "learned" | "rope"
    rope_base: float = 10000.0
    loss: str = "ce"  # "ce" (full softmax over the catalogue) | "sampled"
    n_negatives: int = 256  # sampled softmax only
    negatives: str = "uniform"  # sampled softmax only: "uniform" | "popularity" (with logQ)
    label_smoothing: float = 0.0
    # full softmax without the items each position has already seen, as evaluation and serving
    # rank without them
    exclude_seen: bool = False
    # item vectors = id embedding + a linear map of the item's content features (multi-hot
    # genres, release decade; training.features), for input and output alike
    item_features: bool = False
    init_std: float = 0.02

    def __post_init__(self) -> None:
        checks = [
            (self.n_items >= 1, "n_items must be >= 1"),
            (self.max_len >= 1, "max_len must be >= 1"),
            (self.dim >= 1 and self.n_heads >= 1, "dim and n_heads must be >= 1"),
            (
                self.dim % self.n_heads == 0,
                f"dim ({self.dim}) must be divisible by n_heads ({self.n_heads})",
            ),
            (
                self.pos != "rope" or (self.dim // self.n_heads) % 2 == 0,
                "rope needs an even head size",
            ),
            (self.n_layers >= 1 and self.ffn_mult >= 1, "n_layers and ffn_mult must be >= 1"),
            (0.0 <= self.dropout < 1.0, "dropout must be in [0, 1)"),
            (0.0 <= self.attn_dropout < 1.0, "attn_dropout must be in [0, 1)"),
            (0.0 <= self.label_smoothing < 1.0, "label_smoothing must be in [0, 1)"),
            (self.pos in POSITIONS, f"pos must be one of {POSITIONS}, got {self.pos!r}"),
            (self.loss in LOSSES, f"loss must be one of {LOSSES}, got {self.loss!r}"),
            (
                self.negatives in NEGATIVES,
                f"negatives must be one of {NEGATIVES}, got {self.negatives!r}",
            ),
            (self.n_negatives >= 1, "n_negatives must be >= 1"),
            (
                not self.exclude_seen or self.loss == "ce",
                "exclude_seen needs the full softmax (loss = 'ce')",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


def rope_tables(
    positions: torch.Tensor, head_size: int, base: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables (L, hs) for rotary embeddings at the given (float) positions."""
    inv_freq = base ** (-torch.arange(0, head_size, 2, device=positions.device).float() / head_size)
    angles = positions.float()[:, None] * inv_freq[None, :]  # (L, hs/2)
    angles = torch.cat([angles, angles], dim=-1)  # (L, hs)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, nh, L, hs) queries or keys by their positions."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


class CausalSelfAttention(nn.Module):
    def __init__(self, config: SASRecConfig) -> None:
        super().__init__()
        self.n_heads = config.n_heads
        self.attn_dropout = config.attn_dropout
        self.qkv = nn.Linear(config.dim, 3 * config.dim)
        self.proj = nn.Linear(config.dim, config.dim)
        self.resid_drop = nn.Dropout(config.dropout)

    def _heads(
        self, x: torch.Tensor, rope: Rope
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B, L, D = x.shape
        q, k, v = self.qkv(x).split(D, dim=2)
        q = q.view(B, L, self.n_heads, D // self.n_heads).transpose(1, 2)  # (B, nh, L, hs)
        k = k.view(B, L, self.n_heads, D // self.n_heads).transpose(1, 2)  # (B, nh, L, hs)
        v = v.view(B, L, self.n_heads, D // self.n_heads).transpose(1, 2)  # (B, nh, L, hs)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        return q, k, v

    def forward(self, x: torch.Tensor, mask: torch.Tensor, rope: Rope) -> torch.Tensor:
        B, L, D = x.shape
        q, k, v = self._heads(x, rope)
        drop = self.attn_dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=drop
        )  # (B, nh, L, hs)
        y = y.transpose(1, 2).contiguous().view(B, L, D)
        out: torch.Tensor = self.resid_drop(self.proj(y))
        return out

    def last_row_weights(self, x: torch.Tensor, mask: torch.Tensor, rope: Rope) -> torch.Tensor:
        """Attention of the last position over all positions, mean over heads: (B, L)."""
        q, k, _ = self._heads(x, rope)
        q_last = q[:, :, -1:, :]  # (B, nh, 1, hs)
        att = (q_last @ k.transpose(-2, -1)) / math.sqrt(k.size(-1))  # (B, nh, 1, L)
        att = att.masked_fill(~mask[:, :, -1:, :], float("-inf"))
        return att.softmax(dim=-1).mean(dim=1)[:, 0, :]  # (B, L)


class FeedForward(nn.Module):
    def __init__(self, config: SASRecConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(config.dim, config.ffn_mult * config.dim)
        self.out = nn.Linear(config.ffn_mult * config.dim, config.dim)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.drop(self.out(F.gelu(self.fc(x))))
        return out


class Block(nn.Module):
    def __init__(self, config: SASRecConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.dim)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.dim)
        self.ffn = FeedForward(config)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, rope: Rope) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), mask, rope)
        out: torch.Tensor = x + self.ffn(self.ln_2(x))
        return out


def init_weights(module: nn.Module, std: float) -> None:
    """Normal(0, std) for linear and embedding weights, zero biases and padding rows."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=std)
        if module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()


class SASRec(nn.Module):
    def __init__(self, config: SASRecConfig, item_features: torch.Tensor | None = None) -> None:
        """`item_features` float [n_items + 1, G] (row 0 zeros), required with
        config.item_features and refused without it (use `from_dataset`)."""
        super().__init__()
        self.config = config
        n = config.n_items + 1
        if config.item_features != (item_features is not None):
            raise ValueError("item_features must be given exactly when config.item_features is on")
        self.item_emb = nn.Embedding(n, config.dim, padding_idx=0)
        self.feat_proj: nn.Linear | None = None
        if item_features is not None:
            if item_features.ndim != 2 or item_features.shape[0] != n:
                raise ValueError(
                    f"item_features has shape {tuple(item_features.shape)}, expected ({n}, G)"
                )
            if item_features[0].abs().sum() != 0:
                raise ValueError("item_features row 0 (padding) must be zeros")
            self.register_buffer("item_feats", item_features.float())
            if item_features.shape[1]:  # zero columns: no content term
                self.feat_proj = nn.Linear(item_features.shape[1], config.dim, bias=False)
        self.pos_emb = nn.Embedding(config.max_len, config.dim) if config.pos == "learned" else None
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.n_layers)])
        self.ln_f = nn.LayerNorm(config.dim)
        self.apply(lambda module: init_weights(module, config.init_std))

    @classmethod
    def from_dataset(cls, config: SASRecConfig, ds: Dataset) -> SASRec:
        """The model for `ds`, with its content features when config.item_features is on."""
        if not config.item_features:
            return cls(config)
        from training.features import item_content_matrix

        matrix = item_content_matrix(ds)
        if matrix.shape[1] == 0:  # a zero-width content term: the item vectors are the ids'
            warnings.warn(
                f"item_features: dataset {ds.name!r} has no item genres or release years, "
                "so the item vectors come from the ids alone",
                stacklevel=2,
            )
        return cls(config, torch.from_numpy(matrix))

    def _prepare(self, history: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Rope]:
        """Embeddings, attention mask and rotary tables for a (B, L) left-padded history."""
        L = history.shape[1]
        # (L,) 0 = most recent; written as (L-1) - arange because ONNX Runtime's optimiser
        # mis-folds a Range with a negative step
        positions = (L - 1) - torch.arange(L, device=history.device)
        # padding_idx: padding positions add no gradient to row 0 (as nn.Embedding's own forward)
        x = F.embedding(history, self.item_embeddings(), padding_idx=0)  # (B, L, D)
        if self.pos_emb is not None:
            x = x + self.pos_emb(positions)[None, :, :]
        valid = history != 0  # (B, L)
        causal = torch.ones(L, L, dtype=torch.bool, device=history.device).tril()  # (L, L)
        own = torch.eye(
            L, dtype=torch.bool, device=history.device
        )  # each row sees itself: no NaN rows
        mask = causal[None, :, :] & (valid[:, None, :] | own[None, :, :])  # (B, L, L)
        rope = None
        if self.config.pos == "rope":
            rope = rope_tables(
                positions, self.config.dim // self.config.n_heads, self.config.rope_base
            )
        x = self.drop(x)
        return x, mask[:, None, :, :], rope  # mask: (B, 1, L, L)

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        """Hidden state per position, after the final LayerNorm: (B, L) int64 -> (B, L, D)."""
        x, mask, rope = self._prepare(history)
        for block in self.blocks:
            x = block(x, mask, rope)
        out: torch.Tensor = self.ln_f(x)
        return out

    def encode(self, history: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(query (B, D), attention of the last position over the history (B, L))."""
        history = history[:, -self.config.max_len :]
        x, mask, rope = self._prepare(history)
        for block in self.blocks[:-1]:
            x = block(x, mask, rope)
        last = cast(Block, self.blocks[-1])
        weights = last.attn.last_row_weights(last.ln_1(x), mask, rope)  # (B, L)
        weights = weights * (history != 0).to(weights.dtype)  # zeros on padding
        x = last(x, mask, rope)
        query: torch.Tensor = self.ln_f(x[:, -1, :])
        return query, weights

    def query(self, history: torch.Tensor) -> torch.Tensor:
        """Query vector of the last position: (B, L) -> (B, D)."""
        return self.encode(history)[0]

    def last_attention(self, history: torch.Tensor) -> torch.Tensor:
        """Last layer's attention of the last position, mean over heads: (B, L), rows sum to 1."""
        return self.encode(history)[1]

    def item_embeddings(self) -> torch.Tensor:
        """(n_items + 1, D), for input and output; row 0 (padding) is zeros."""
        if self.feat_proj is None:
            return self.item_emb.weight
        table: torch.Tensor = self.item_emb.weight + self.feat_proj(self.item_feats)
        return table

    def query_encoder(self) -> nn.Module:
        """The serving graph (training.models.sasrec_serving): same outputs as `encode`."""
        from training.models.sasrec_serving import SASRecQueryEncoder

        return SASRecQueryEncoder(self)
