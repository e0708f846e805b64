"""Query encoder -> self-contained ONNX (FP32) and its dynamic INT8 quantisation.

Exporter choice (`exporter="auto"`): `dynamo=True` (torch.export) first, with symbolic batch and
length dims. On torch 2.13 it exports SASRec (SDPA, masks, position gathers, RoPE) to a graph ORT
runs at every batch and length, and it is the maintained path. It refuses models with
data-dependent Python control flow, and a graph can export yet fail in ONNX Runtime (e.g. a
`torch.arange` with a negative step over a symbolic length is mis-folded by ORT; that one breaks
both exporters, which is why SASRec writes positions as `(L-1) - arange(L)`). So the dynamo graph is
probed in ORT at two shapes against torch; if the export raises or the probe fails, we fall back
to `dynamo=False` (TorchScript tracing with `dynamic_axes`; its tracer warnings are silenced because
the probe and the parity checks over many lengths catch a trace that does not generalise). The
bundle records which exporter was used and why. Measured on torch 2.13 / ORT 1.32: the fallback
cannot carry SASRec itself (tracing turns its `torch.eye(..., dtype=bool)` into a bool EyeLike,
which ORT's CPU provider does not implement), so dynamo is the path for SASRec; the fallback is
for other encoders. Dynamo's cost is export time (seconds), paid once per training run.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state
from torch import nn
from torch.jit import TracerWarning  # type: ignore[attr-defined]

from training.errors import CineSyncError

OPSET = 18
EXPORTERS = ("auto", "dynamo", "torchscript")
INPUT = "history"
OUTPUTS = ("query", "attention")
PROBE_TOLERANCE = 1e-4
# What an exporter or ONNX Runtime raises when a graph cannot be exported or run.
EXPORT_ERRORS: tuple[type[BaseException], ...] = (
    RuntimeError,
    ValueError,
    TypeError,
    NotImplementedError,
    onnx.checker.ValidationError,
    ort_state.Fail,
    ort_state.InvalidArgument,
    ort_state.InvalidGraph,
    ort_state.RuntimeException,
    ort_state.NotImplemented,
)


class OnnxExportError(CineSyncError):
    """The encoder could not be exported to a valid, runnable ONNX graph."""


RETRYABLE: tuple[type[BaseException], ...] = (*EXPORT_ERRORS, OnnxExportError)


@dataclass(frozen=True)
class ExportInfo:
    exporter: str  # "dynamo" | "torchscript"
    opset: int
    fallback_reason: str | None


class _DropQuantizeHint(logging.Filter):
    """ORT's quantiser logs a pre-processing hint on the root logger each time; its symbolic
    shape inference cannot handle this graph anyway (measured), so the hint is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


@contextmanager
def _quiet_third_party() -> Iterator[None]:
    """Silence known exporter/quantiser chatter (torchvision op registration, the hint above)."""
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level, hint = registration.level, _DropQuantizeHint()
    registration.setLevel(logging.ERROR)
    logging.getLogger().addFilter(hint)
    try:
        yield
    finally:
        registration.setLevel(level)
        logging.getLogger().removeFilter(hint)


def session(path: Path, threads: int = 1) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _export_dynamo(encoder: nn.Module, path: Path, example: torch.Tensor, max_len: int) -> None:
    batch = torch.export.Dim("batch", min=1, max=65536)
    length = torch.export.Dim("length", min=1, max=max_len)
    torch.onnx.export(
        encoder,
        (example,),
        str(path),
        dynamo=True,
        external_data=False,
        verbose=False,
        input_names=[INPUT],
        output_names=list(OUTPUTS),
        opset_version=OPSET,
        dynamic_shapes=({0: batch, 1: length},),
    )


def _export_torchscript(encoder: nn.Module, path: Path, example: torch.Tensor) -> None:
    torch.onnx.export(
        encoder,
        (example,),
        str(path),
        dynamo=False,
        input_names=[INPUT],
        output_names=list(OUTPUTS),
        opset_version=OPSET,
        dynamic_axes={
            INPUT: {0: "batch", 1: "length"},
            "query": {0: "batch"},
            "attention": {0: "batch", 1: "length"},
        },
    )


def _probe(encoder: nn.Module, path: Path, example: torch.Tensor) -> None:
    """Run the graph at (1, 3) and (B, L) and compare with torch; raise on any problem."""
    sess = session(path)
    for batch in (example[:1, -3:], example):
        got = sess.run(list(OUTPUTS), {INPUT: batch.numpy()})
        with torch.no_grad():
            want = encoder(batch)
        for name, g, w in zip(OUTPUTS, got, want, strict=True):
            diff = float(np.abs(np.asarray(g) - w.numpy()).max())
            if not diff <= PROBE_TOLERANCE:
                raise RuntimeError(f"{name} differs from torch by {diff:.2e} at {batch.shape}")


def check_onnx_file(path: Path) -> None:
    """onnx.checker (full) and self-containment: no tensor stored as external data."""
    model = onnx.load(str(path), load_external_data=False)
    onnx.checker.check_model(model, full_check=True)
    tensors = list(model.graph.initializer) + [
        a.t for n in model.graph.node for a in n.attribute if a.type == onnx.AttributeProto.TENSOR
    ]
    if any(onnx.external_data_helper.uses_external_data(t) for t in tensors):
        raise OnnxExportError(f"{path} refers to external data; bundles must be self-contained")
    names = ([i.name for i in model.graph.input], [o.name for o in model.graph.output])
    if names != ([INPUT], list(OUTPUTS)):
        raise OnnxExportError(f"{path} has inputs/outputs {names}, expected {INPUT} -> {OUTPUTS}")


def _try(
    exporter: str, encoder: nn.Module, path: Path, example: torch.Tensor, max_len: int
) -> None:
    path.unlink(missing_ok=True)
    if exporter == "dynamo":
        _export_dynamo(encoder, path, example, max_len)
    else:
        _export_torchscript(encoder, path, example)
    check_onnx_file(path)
    _probe(encoder, path, example)


def export_encoder(
    encoder: nn.Module, path: Path, example: torch.Tensor, max_len: int, exporter: str = "auto"
) -> ExportInfo:
    """Export `encoder` (history [B, L] -> query, attention) to `path`; `example` is int64
    [B>=2, L>=3]. exporter: "auto" (dynamo, else torchscript) | "dynamo" | "torchscript"."""
    if exporter not in EXPORTERS:
        raise OnnxExportError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    if example.dim() != 2 or example.shape[0] < 2 or example.shape[1] < 3:
        raise OnnxExportError(f"example history must be [B>=2, L>=3], got {tuple(example.shape)}")
    encoder = encoder.eval()
    order = ["dynamo", "torchscript"] if exporter == "auto" else [exporter]
    failures: list[str] = []
    with warnings.catch_warnings(), _quiet_third_party():
        # Exporter internals emit Deprecation/Future/tracer warnings that are not ours to fix.
        for category in (DeprecationWarning, FutureWarning, TracerWarning):
            warnings.simplefilter("ignore", category)
        for name in order:
            try:
                _try(name, encoder, path, example, max_len)
            except RETRYABLE as exc:
                failures.append(f"{name} export unusable: {type(exc).__name__}: {str(exc)[:300]}")
                continue
            return ExportInfo(
                exporter=name, opset=OPSET, fallback_reason="; ".join(failures) or None
            )
    path.unlink(missing_ok=True)
    raise OnnxExportError("ONNX export failed: " + "; ".join(failures))


INT8_OPS = (("MatMul", "Gemm", "Gather"), ("MatMul", "Gemm"))  # preferred first


def quantize_int8(src: Path, dst: Path, op_types: tuple[str, ...] = INT8_OPS[0]) -> None:
    """Dynamic INT8 quantisation (QInt8 weights, per tensor) of the given op types. Gather
    (the item embedding lookup, most of the graph's bytes) is included by default; the export
    drops it if INT8 retrieval parity falls below the floor."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet_third_party():
        quantize_dynamic(
            str(src),
            str(dst),
            weight_type=QuantType.QInt8,
            op_types_to_quantize=list(op_types),
            per_channel=False,
        )
    check_onnx_file(dst)
