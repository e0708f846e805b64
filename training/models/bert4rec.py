"""BERT4Rec: a bidirectional transformer trained to fill in masked items (Sun et al., 2019).

Same pre-LN blocks as SASRec (training/models/sasrec.py) but every position attends to every
non-padding position (no causal mask). Training masks random items with the [MASK] token
(id n_items + 1; training/tasks.py `ClozeTask`). Serving: the history with a [MASK] appended at
the end (the oldest item dropped at max_len); the query is the output at that position. Positions
are counted from the end (the [MASK] is position 0), so padding never changes the query.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from training.models.sasrec import Block, Rope, SASRecConfig, init_weights, rope_tables


@dataclass
class BERT4RecConfig(SASRecConfig):
    """SASRec's architecture and loss fields, plus the cloze objective's."""

    dropout: float = 0.1
    mask_prob: float = 0.2  # chance that a training position is replaced by [MASK]
    mask_last: bool = True  # also always mask the last position (the serving query)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.mask_prob < 1.0:
            raise ValueError("mask_prob must be in (0, 1)")
        if self.max_len < 2:
            raise ValueError("max_len must be >= 2 (history + [MASK])")


class BERT4Rec(nn.Module):
    def __init__(self, config: BERT4RecConfig) -> None:
        super().__init__()
        self.config = config
        self.mask_token = config.n_items + 1
        # rows: 0 = padding, 1..n_items = items, n_items + 1 = [MASK]
        self.item_emb = nn.Embedding(config.n_items + 2, config.dim, padding_idx=0)
        self.pos_emb = nn.Embedding(config.max_len, config.dim) if config.pos == "learned" else None
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.n_layers)])
        self.ln_f = nn.LayerNorm(config.dim)
        self.apply(lambda module: init_weights(module, config.init_std))

    def _prepare(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Rope]:
        """Embeddings, key mask (B, 1, 1, L) and rotary tables for left-padded tokens (B, L).

        Keys: non-padding tokens within max_len of the end; the last column is always a key, so
        no row attends to nothing (a fully padded row gives finite outputs)."""
        L = tokens.shape[1]
        max_len = self.config.max_len
        positions = (L - 1) - torch.arange(L, device=tokens.device)  # (L,) 0 = last column
        x = self.item_emb(tokens)  # (B, L, D)
        if self.pos_emb is not None:
            x = x + self.pos_emb(positions.clamp(max=max_len - 1))[None, :, :]
        keys = (tokens != 0) & (positions < max_len)[None, :]  # (B, L)
        keys = keys | (positions == 0)[None, :]
        rope = None
        if self.config.pos == "rope":
            rope = rope_tables(
                positions, self.config.dim // self.config.n_heads, self.config.rope_base
            )
        return self.drop(x), keys[:, None, None, :], rope

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Hidden state per position after the final LayerNorm: (B, L) int64 -> (B, L, D).
        Tokens may contain the [MASK] id; every position sees the whole (unpadded) row."""
        x, mask, rope = self._prepare(tokens)
        for block in self.blocks:
            x = block(x, mask, rope)
        out: torch.Tensor = self.ln_f(x)
        return out

    def encode(self, history: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(query (B, D), attention of the [MASK] over the history (B, L)) for a left-padded
        history (B, L); the [MASK] is appended, so only the last max_len - 1 items are read."""
        history = history[:, -self.config.max_len :]
        masks = torch.ones_like(history[:, :1]) * self.mask_token  # (B, 1)
        tokens = torch.cat([history, masks], dim=1)  # (B, L + 1)
        x, mask, rope = self._prepare(tokens)
        for block in self.blocks[:-1]:
            x = block(x, mask, rope)
        last = cast(Block, self.blocks[-1])
        weights = last.attn.last_row_weights(last.ln_1(x), mask, rope)[:, :-1]  # (B, L)
        weights = weights * mask[:, 0, 0, :-1].to(weights.dtype)  # 0 on padding, dropped items
        weights = weights / weights.sum(dim=-1, keepdim=True).clamp_min(1e-12)
        x = last(x, mask, rope)
        query: torch.Tensor = self.ln_f(x[:, -1, :])
        return query, weights

    def query(self, history: torch.Tensor) -> torch.Tensor:
        """Query vector for a left-padded history: (B, L) -> (B, D)."""
        return self.encode(history)[0]

    def last_attention(self, history: torch.Tensor) -> torch.Tensor:
        """Last layer's attention of the [MASK] over the history, mean over heads: (B, L)."""
        return self.encode(history)[1]

    def item_embeddings(self) -> torch.Tensor:
        """(n_items + 1, D): row 0 is padding; the [MASK] row is not an item."""
        return self.item_emb.weight[: self.config.n_items + 1]

    def query_encoder(self) -> nn.Module:
        return BERT4RecQueryEncoder(self)


class BERT4RecQueryEncoder(nn.Module):
    """The serving graph: history int64 (B, L) -> (query (B, D), attention (B, L))."""

    def __init__(self, model: BERT4Rec) -> None:
        super().__init__()
        self.model = model

    def forward(self, history: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.encode(history)
