"""SASRec's serving graph: the same function as `SASRec.encode`, written for a batch-1 ONNX
Runtime call where per-operator overhead, not arithmetic, is the cost.

What changes against the training forward (all exact rewrites, checked against `SASRec.encode`
by the export parity check and by tests):
- q, k, v, the rotary halves `rotate_half(q)`, `rotate_half(k)` and the 1/sqrt(head size) scale
  come out of ONE matmul: rotate_half is a fixed signed permutation R, so
  rotate_half(x W^T + b) = x (R^T W)^T + R^T b folds into the weight;
- rotary cos/sin tables are precomputed for max_len positions and sliced, not recomputed;
- the attention mask is built once as an additive bias; one head needs no reshapes;
- the last block computes attention, feed-forward and the final LayerNorm for the LAST position
  only (the only one the query needs); its attention row is the explanation output.
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from training.models.sasrec import Block, SASRec, rope_tables


def rotate_half_matrix(head_size: int, n_heads: int) -> torch.Tensor:
    """R (D, D) with x @ R == cat([-x2, x1]) per head, for x of width D = n_heads * head_size."""
    half = head_size // 2
    block = torch.zeros(head_size, head_size)
    for j in range(half):
        block[j + half, j] = -1.0  # out[j] = -x[j + half]
        block[j, j + half] = 1.0  # out[j + half] = x[j]
    return torch.block_diag(*[block] * n_heads)


class _FusedBlock(nn.Module):
    """One pre-LN block with a single fused input projection (eval only)."""

    def __init__(self, block: Block, n_heads: int, rope: bool) -> None:
        super().__init__()
        attn = block.attn
        D = attn.proj.in_features
        hs = D // n_heads
        scale = 1.0 / math.sqrt(hs)
        w_q, w_k, w_v = attn.qkv.weight.detach().split(D, dim=0)  # each (D_out, D_in)
        b_q, b_k, b_v = attn.qkv.bias.detach().split(D)
        weights, biases = [w_q * scale], [b_q * scale]
        if rope:
            r_t = rotate_half_matrix(hs, n_heads).T
            weights += [r_t @ w_q * scale]
            biases += [r_t @ b_q * scale]
        weights += [w_k]
        biases += [b_k]
        if rope:
            weights += [r_t @ w_k]
            biases += [r_t @ b_k]
        weights += [w_v]
        biases += [b_v]
        self.in_proj = nn.Linear(D, len(weights) * D)
        with torch.no_grad():
            self.in_proj.weight.copy_(torch.cat(weights, dim=0))
            self.in_proj.bias.copy_(torch.cat(biases))
        self.ln_1, self.ln_2 = block.ln_1, block.ln_2
        self.proj, self.fc, self.out = attn.proj, block.ffn.fc, block.ffn.out
        self.n_heads, self.head_size, self.dim, self.rope = n_heads, hs, D, rope

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, D) -> (B, L, D) for one head, else (B, nh, L, hs)."""
        if self.n_heads == 1:
            return x
        B, L, _ = x.shape
        return x.view(B, L, self.n_heads, self.head_size).transpose(1, 2)

    def _qkv(
        self, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        parts = self.in_proj(h).split(self.dim, dim=-1)
        if self.rope:
            q = parts[0] * cos + parts[1] * sin
            k = parts[2] * cos + parts[3] * sin
            v = parts[4]
        else:
            q, k, v = parts
        return self._heads(q), self._heads(k), self._heads(v)

    def _merge(self, y: torch.Tensor) -> torch.Tensor:
        if self.n_heads == 1:
            return y
        B, _, L, _ = y.shape
        return y.transpose(1, 2).reshape(B, L, self.dim)

    def _ffn(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = x + self.out(F.gelu(self.fc(self.ln_2(x))))
        return out

    def forward(
        self, x: torch.Tensor, bias: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
    ) -> torch.Tensor:
        q, k, v = self._qkv(self.ln_1(x), cos, sin)
        att = torch.softmax(q @ k.transpose(-2, -1) + bias, dim=-1)
        return self._ffn(x + self.proj(self._merge(att @ v)))

    def last(
        self, x: torch.Tensor, bias: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Output of the last position (B, 1, D) and its attention over the history (B, L)."""
        q, k, v = self._qkv(self.ln_1(x), cos, sin)
        q = q[..., -1:, :]  # the last position's query only
        att = torch.softmax(q @ k.transpose(-2, -1) + bias, dim=-1)  # (B, [nh,] 1, L)
        y = x[:, -1:] + self.proj(self._merge(att @ v))
        weights = att[:, 0, :] if self.n_heads == 1 else att.mean(dim=1)[:, 0, :]
        return self._ffn(y), weights


class SASRecQueryEncoder(nn.Module):
    """The serving graph: history int64 (B, L) -> (query (B, D), attention (B, L))."""

    def __init__(self, model: SASRec) -> None:
        super().__init__()
        config = model.config
        self.max_len = config.max_len
        self.model = model  # the reference (training) forward, for parity checks
        # the item vectors the model reads (id embedding plus content features when on)
        self.register_buffer("items", model.item_embeddings().detach(), persistent=False)
        rope = config.pos == "rope"
        self.blocks = nn.ModuleList(
            [_FusedBlock(block, config.n_heads, rope) for block in model.blocks]  # type: ignore[arg-type]
        )
        self.ln_f = model.ln_f
        self.multi_head = config.n_heads > 1
        # tables for the last max_len positions, oldest first (position 0 = the last column)
        positions = torch.arange(config.max_len - 1, -1, -1)
        if rope:
            cos, sin = rope_tables(positions, config.dim // config.n_heads, config.rope_base)
            cos, sin = cos.repeat(1, config.n_heads), sin.repeat(1, config.n_heads)  # (L, D)
        else:
            cos, sin = torch.zeros(config.max_len, 1), torch.zeros(config.max_len, 1)  # unused
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        if model.pos_emb is not None:
            self.register_buffer("pos", model.pos_emb.weight.detach()[positions], persistent=False)

    def reference(self, history: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The training model's own encode (what the serving graph must equal)."""
        return self.model.encode(history)

    def forward(self, history: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        history = history[:, -self.max_len :]
        L = history.shape[1]
        tables: dict[str, torch.Tensor] = dict(self.named_buffers(recurse=False))
        cos, sin = tables["cos"][self.max_len - L :], tables["sin"][self.max_len - L :]
        x = F.embedding(history, tables["items"])
        if "pos" in tables:
            x = x + tables["pos"][self.max_len - L :]
        valid = history != 0  # (B, L)
        idx = torch.arange(L, device=history.device)
        own = idx[:, None] == idx[None, :]
        allowed = (idx[:, None] >= idx[None, :]) & (valid[:, None, :] | own)  # (B, L, L)
        bias = torch.zeros_like(allowed, dtype=x.dtype).masked_fill(~allowed, float("-inf"))
        if self.multi_head:
            bias = bias[:, None]
        blocks = [cast(_FusedBlock, block) for block in self.blocks]
        for block in blocks[:-1]:
            x = block(x, bias, cos, sin)
        y, weights = blocks[-1].last(x, bias[..., -1:, :], cos, sin)
        weights = weights * valid.to(weights.dtype)
        query: torch.Tensor = self.ln_f(y[:, 0, :])
        return query, weights
