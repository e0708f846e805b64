"""Turn a trained model into a bundle folder (Bundle contract, notes/COMMON.md; DESIGN 3.1).

The model must offer `query_encoder()` (history int64 [B, L] -> query [B, D], attention [B, L]),
`item_embeddings()` ([n_items + 1, D]) and `config` (a dataclass with `max_len`). The export fails
with `ExportParityError` unless ONNX FP32 reproduces torch (and is padding-invariant) and INT8
retrieval overlaps FP32 above the floor; bundle.json is written last, so a failed export never
leaves a folder that looks complete.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from training import bundle_files as files
from training.content import DEFAULT_DIM, content_embeddings
from training.data.dataset import Dataset
from training.data.splits import Split
from training.errors import CineSyncError
from training.feature_queries import FEATURE_QUERIES, USER_FEATURES, write_feature_queries
from training.onnx_export import INT8_OPS, export_encoder, quantize_int8
from training.parity import (
    FP32_TOLERANCE,
    INT8_FLOOR,
    ExportParityError,
    check_fp32,
    check_int8,
    left_pad,
    pick_histories,
)

__all__ = ["ExportParityError", "Exportable", "export_bundle"]


class Exportable(Protocol):
    config: Any

    def query_encoder(self) -> nn.Module: ...
    def item_embeddings(self) -> torch.Tensor: ...


def _plain(value: Any) -> Any:
    """JSON-ready copy: numpy scalars -> Python numbers, NaN/inf -> None (undefined), tuples ->
    lists, Paths -> str."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def _model_config(model: Exportable) -> dict[str, Any]:
    config = model.config
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dict(_plain(dataclasses.asdict(config)))
    return dict(_plain(vars(config)))


def quantize_with_parity(
    fp32_path: Path,
    int8_path: Path,
    histories: list[np.ndarray],
    item_emb: np.ndarray,
    max_len: int,
    floor: float,
) -> dict[str, Any]:
    """Quantise with Gather (smallest file); if retrieval parity misses the floor, retry with
    MatMul/Gemm only; raise the last ExportParityError if both miss it."""
    failures: list[str] = []
    for ops in INT8_OPS:
        quantize_int8(fp32_path, int8_path, ops)
        try:
            report: dict[str, Any] = check_int8(
                fp32_path, int8_path, histories, item_emb, max_len, floor=floor
            )
        except ExportParityError as exc:
            failures.append(f"[{'/'.join(ops)}] {exc}")
            continue
        report["int8_quantization"] = f"dynamic, QInt8 weights per tensor: {'/'.join(ops)}"
        if failures:
            report["int8_rejected"] = failures
        return report
    int8_path.unlink(missing_ok=True)
    raise ExportParityError("; ".join(failures))


def _kind(model: Exportable, config_dict: Mapping[str, Any] | None) -> str:
    named = (config_dict or {}).get("model")
    return named if isinstance(named, str) else type(model).__name__.lower()


def export_bundle(
    model: Exportable,
    dataset: Dataset,
    split: Split,
    out_dir: Path,
    metrics: Mapping[str, Mapping[str, float]],
    config_dict: Mapping[str, Any] | None = None,
    *,
    kind: str | None = None,
    exporter: str = "auto",
    int8_floor: float = INT8_FLOOR,
    fp32_tolerance: float = FP32_TOLERANCE,
    n_parity: int = 256,
    content_dim: int = DEFAULT_DIM,
    seed: int = 0,
) -> Path:
    """Write every bundle file into `out_dir` (created; old bundle files removed) and return it.

    `split` is a training.data.splits.Split (its `valid` histories drive the parity checks);
    `config_dict` is recorded as bundle.json["model"]["config"] (default: the model's config);
    `exporter`: "auto" (dynamo, else torchscript; training.onnx_export) | "dynamo" | "torchscript".
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in (files.BUNDLE_JSON, *files.BUNDLE_FILES, USER_FEATURES, FEATURE_QUERIES):
        (out_dir / name).unlink(missing_ok=True)
    max_len = int(model.config.max_len)
    encoder = copy.deepcopy(model.query_encoder()).to("cpu", torch.float32).eval()
    item_emb = model.item_embeddings().detach().to("cpu", torch.float32).numpy()
    if item_emb.shape[0] != dataset.n_items + 1:
        raise CineSyncError(
            f"item_embeddings has {item_emb.shape[0]} rows, expected "
            f"n_items + 1 = {dataset.n_items + 1}"
        )
    histories = pick_histories(split.valid.histories, n_parity, seed)
    if len(histories) < 2:
        raise CineSyncError("export needs at least 2 non-empty validation histories for parity")

    fp32_path, int8_path = out_dir / files.ENCODER, out_dir / files.ENCODER_INT8
    example = torch.from_numpy(left_pad(histories[:2], max_len))
    info = export_encoder(encoder, fp32_path, example, max_len, exporter)
    parity: dict[str, Any] = {"exporter": info.exporter, "opset": info.opset}
    if info.fallback_reason:
        parity["exporter_fallback_reason"] = info.fallback_reason
    parity.update(check_fp32(encoder, fp32_path, histories, max_len, tolerance=fp32_tolerance))
    files.write_embeddings(item_emb, out_dir / files.ITEM_EMBEDDINGS, dataset.n_items + 1)
    item_emb[0] = 0.0
    parity.update(
        quantize_with_parity(fp32_path, int8_path, histories, item_emb, max_len, int8_floor)
    )

    content = content_embeddings(dataset, content_dim, seed)
    files.write_embeddings(content, out_dir / files.CONTENT_EMBEDDINGS, dataset.n_items + 1)
    files.write_items(dataset, out_dir / files.ITEMS)
    files.write_histories(dataset, out_dir / files.HISTORIES)
    feature_queries = write_feature_queries(model, dataset, out_dir)
    if feature_queries is not None:  # the files describe themselves; parity records the fact
        parity["feature_queries"] = feature_queries
    model_config = _model_config(model)
    bundle = {
        "model": {
            "kind": kind or _kind(model, config_dict),
            "config": _plain(dict(config_dict)) if config_dict else model_config,
            "dim": int(item_emb.shape[1]),
            "max_len": max_len,
            "metric": "ip",
        },
        "dataset": {
            "name": dataset.name,
            "users": dataset.n_users,
            "items": dataset.n_items,
            "interactions": dataset.n_interactions,
            "split": str(split.name),
        },
        "metrics": {stage: _plain(dict(metrics.get(stage, {}))) for stage in ("valid", "test")},
        "parity": _plain(parity),
    }
    files.write_bundle_json(out_dir / files.BUNDLE_JSON, bundle)
    return out_dir
