"""Parity checks that fail an export: ONNX FP32 vs torch, padding invariance, INT8 vs FP32
retrieval overlap."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from training.errors import CineSyncError
from training.onnx_export import INPUT, OUTPUTS, session

FP32_TOLERANCE = 1e-4
INT8_FLOOR = 0.9
CHUNK = 64


class ExportParityError(CineSyncError):
    """An exported graph does not reproduce the model closely enough to be served."""


def left_pad(histories: Sequence[np.ndarray], max_len: int) -> np.ndarray:
    """int64 [B, max_len]: each history's last `max_len` items, right-aligned, 0 on the left."""
    out = np.zeros((len(histories), max_len), dtype=np.int64)
    for row, items in enumerate(histories):
        tail = np.asarray(items, dtype=np.int64)[-max_len:]
        if len(tail):
            out[row, max_len - len(tail) :] = tail
    return out


def pick_histories(
    histories: Sequence[np.ndarray], n: int = 256, seed: int = 0
) -> list[np.ndarray]:
    """Up to `n` non-empty histories, chosen with a fixed seed (in their original order)."""
    nonempty = [np.asarray(h) for h in histories if len(h) > 0]
    if len(nonempty) <= n:
        return nonempty
    rows = np.sort(np.random.default_rng(seed).choice(len(nonempty), size=n, replace=False))
    return [nonempty[r] for r in rows]


def torch_run(encoder: nn.Module, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The encoder's torch outputs; a serving graph that offers `reference` (the training
    model's own forward) is judged against that, so the ONNX file must match the model trained,
    not just the graph it was exported from."""
    run = getattr(encoder, "reference", encoder)
    with torch.no_grad():
        query, attention = run(torch.from_numpy(batch))
    return query.float().numpy(), attention.float().numpy()


def onnx_run(sess: ort.InferenceSession, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    query, attention = sess.run(list(OUTPUTS), {INPUT: batch})
    return np.asarray(query), np.asarray(attention)


Runner = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def _chunked(run: Runner, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    parts = [run(batch[i : i + CHUNK]) for i in range(0, len(batch), CHUNK)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _maxdiff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max()) if a.size else 0.0


def check_fp32(
    encoder: nn.Module,
    onnx_path: Path,
    histories: Sequence[np.ndarray],
    max_len: int,
    tolerance: float = FP32_TOLERANCE,
    n_unpadded: int = 16,
) -> dict[str, float | int]:
    """FP32 ONNX vs torch on left-padded histories and on unpadded (shorter, dynamic-length) ones;
    also checks the ONNX outputs do not depend on the amount of left padding."""
    encoder = encoder.eval()
    sess = session(onnx_path)
    padded = left_pad(histories, max_len)
    tq, ta = _chunked(lambda b: torch_run(encoder, b), padded)
    oq, oa = _chunked(lambda b: onnx_run(sess, b), padded)
    by_length = np.argsort([min(len(h), max_len) for h in histories], kind="stable")
    rows = by_length[np.unique(np.linspace(0, len(histories) - 1, n_unpadded).astype(int))]
    unpadded_q = unpadded_a = invariance = 0.0
    for row in rows:
        single = np.asarray(histories[row], dtype=np.int64)[-max_len:][None, :]
        length = single.shape[1]
        uq, ua = onnx_run(sess, single)
        sq, sa = torch_run(encoder, single)
        unpadded_q = max(unpadded_q, _maxdiff(uq, sq))
        unpadded_a = max(unpadded_a, _maxdiff(ua, sa))
        invariance = max(
            invariance,
            _maxdiff(uq[0], oq[row]),
            _maxdiff(ua[0], oa[row, -length:]),
            float(np.abs(oa[row, : max_len - length]).max(initial=0.0)),
        )
    report: dict[str, float | int] = {
        "fp32_histories": len(histories),
        "fp32_query_max_abs_diff": max(_maxdiff(tq, oq), unpadded_q),
        "fp32_attention_max_abs_diff": max(_maxdiff(ta, oa), unpadded_a),
        "unpadded_histories": len(rows),
        "unpadded_min_length": int(min(len(h) for h in histories)),
        "padding_invariance_max_abs_diff": invariance,
        "fp32_tolerance": tolerance,
    }
    for key in (
        "fp32_query_max_abs_diff",
        "fp32_attention_max_abs_diff",
        "padding_invariance_max_abs_diff",
    ):
        if not report[key] <= tolerance:  # `not <=` also catches NaN
            raise ExportParityError(
                f"ONNX FP32 parity failed: {key} = {report[key]:.3g} > {tolerance:g} "
                f"on {len(histories)} validation histories"
            )
    return report


def topk_excluding(
    queries: np.ndarray, item_embeddings: np.ndarray, seen: Sequence[np.ndarray], k: int
) -> np.ndarray:
    """Top-k item indices per row by inner product, padding (0) and seen items excluded."""
    scores = queries @ item_embeddings.T
    scores[:, 0] = -np.inf
    for row, items in enumerate(seen):
        scores[row, np.asarray(items, dtype=np.int64)] = -np.inf
    k = min(k, scores.shape[1] - 1)
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return np.asarray(top)


def check_int8(
    fp32_path: Path,
    int8_path: Path,
    histories: Sequence[np.ndarray],
    item_embeddings: np.ndarray,
    max_len: int,
    floor: float = INT8_FLOOR,
    k: int = 10,
) -> dict[str, float | int]:
    """Mean top-k overlap of INT8 vs FP32 retrieval (seen items excluded); fails below `floor`."""
    padded = left_pad(histories, max_len)
    fp32, int8 = session(fp32_path), session(int8_path)
    q32, _ = _chunked(lambda b: onnx_run(fp32, b), padded)
    q8, _ = _chunked(lambda b: onnx_run(int8, b), padded)
    a = topk_excluding(q32, item_embeddings, histories, k)
    b = topk_excluding(q8, item_embeddings, histories, k)
    overlaps = np.array(
        [len(set(x.tolist()) & set(y.tolist())) / a.shape[1] for x, y in zip(a, b, strict=True)]
    )
    report: dict[str, float | int] = {
        f"int8_top{k}_overlap": float(overlaps.mean()),
        f"int8_top{k}_overlap_min": float(overlaps.min()),
        "int8_query_max_abs_diff": _maxdiff(q32, q8),
        "int8_floor": floor,
    }
    if not overlaps.mean() >= floor:
        raise ExportParityError(
            f"INT8 retrieval parity failed: mean top-{k} overlap with FP32 = {overlaps.mean():.3f} "
            f"< floor {floor:g} on {len(histories)} validation histories"
        )
    return report
