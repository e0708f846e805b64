"""The query encoder: an ONNX Runtime session created from bytes (never from a path, and only
after the model is checked to be self-contained), with providers checked and recorded."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort

from model_store.errors import StoreError
from model_store.onnx_check import check_self_contained
from service.errors import BundleLoadError, SettingsError
from service.settings import EncoderSettings

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
INPUT = "history"
QUERY = "query"
ATTENTION = "attention"


@dataclass(frozen=True)
class EncoderOutput:
    query: np.ndarray  # float32 [B, D]
    attention: np.ndarray | None  # float32 [B, L] over the (left-padded) input, or None


def choose_providers(
    settings: EncoderSettings, available: list[str]
) -> tuple[list[str], str | None]:
    """Providers to request, and a note when CUDA was asked for but is missing."""
    if not settings.use_gpu:
        return [CPU], None
    if CUDA in available:
        return [CUDA, CPU], None
    reason = f"encoder.use_gpu is set but ONNX Runtime has no {CUDA} (available: {available})"
    if settings.require_gpu:
        raise BundleLoadError(reason + "; encoder.require_gpu forbids a CPU fallback")
    log.warning("%s; falling back to %s", reason, CPU)
    return [CPU], reason


def _field(number: int, payload: bytes | int) -> bytes:
    """One protobuf field: a varint (wire type 0) or length-delimited bytes (wire type 2)."""

    def varint(value: int) -> bytes:
        out = bytearray()
        while True:
            byte, value = value & 0x7F, value >> 7
            out.append(byte | (0x80 if value else 0))
            if not value:
                return bytes(out)

    if isinstance(payload, int):
        return varint(number << 3) + varint(payload)
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def identity_model() -> bytes:
    """The smallest ONNX model (float[1] x -> Identity -> y), written in the protobuf wire
    format (see onnx.proto) because the service has onnxruntime but not the onnx package."""

    def value(name: bytes) -> bytes:  # ValueInfoProto: name, TypeProto.tensor_type(FLOAT, [1])
        shape = _field(2, _field(1, _field(1, 1)))
        return _field(1, name) + _field(2, _field(1, _field(1, 1) + shape))

    node = _field(1, b"x") + _field(2, b"y") + _field(4, b"Identity")
    inputs, outputs = _field(11, value(b"x")), _field(12, value(b"y"))
    graph = _field(1, node) + _field(2, b"probe") + inputs + outputs
    return _field(1, 8) + _field(7, graph) + _field(8, _field(1, b"") + _field(2, 13))


def cuda_in_use(providers: list[str]) -> bool:
    """Whether a session asked for `providers` really runs on CUDA. onnxruntime-gpu lists
    CUDAExecutionProvider among the available providers on any machine, GPU or not; only a
    session tells whether it could be used (no GPU, driver or CUDA/cuDNN libraries: it is not)."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(identity_model(), sess_options=options, providers=providers)
    except Exception:  # onnxruntime raises its own untyped errors: not usable
        log.warning("a session with %s could not be created", providers, exc_info=True)
        return False
    return CUDA in session.get_providers()


def check_gpu_at_start(settings: EncoderSettings, available: list[str] | None = None) -> None:
    """`encoder.use_gpu` with `encoder.require_gpu` on a machine where CUDA cannot be used (no
    provider, or a provider with no GPU behind it) is a start-up error (SettingsError naming both
    settings), not a process that never gets ready."""
    if not (settings.use_gpu and settings.require_gpu):
        return
    found = list(ort.get_available_providers()) if available is None else available
    if CUDA not in found:
        why = f"ONNX Runtime has no {CUDA} here (available: {found})"
    elif not cuda_in_use([CUDA, CPU]):
        why = f"ONNX Runtime has {CUDA}, but a session cannot use it (no GPU or CUDA libraries)"
    else:
        return
    raise SettingsError(
        f"CINESYNC_ENCODER__USE_GPU=true and CINESYNC_ENCODER__REQUIRE_GPU=true, but {why}; "
        "install onnxruntime-gpu on a CUDA machine, or set CINESYNC_ENCODER__REQUIRE_GPU=false "
        "to fall back to the CPU"
    )


class Encoder:
    """history int64 [B, L] (left-padded with 0) -> query [B, D], attention [B, L]."""

    def __init__(self, model: bytes, max_len: int, settings: EncoderSettings, source: str) -> None:
        try:
            check_self_contained(model, source)
        except StoreError as exc:
            raise BundleLoadError(str(exc)) from exc
        providers, self.fallback_reason = choose_providers(
            settings, list(ort.get_available_providers())
        )
        options = ort.SessionOptions()
        options.intra_op_num_threads = settings.intra_op_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        # No per-session arena: run buffers go back to the allocator, so a process that
        # replaces its session on every reload keeps a flat RSS (tests/test_reliability_reload).
        options.enable_cpu_mem_arena = False
        try:
            self.session = ort.InferenceSession(model, sess_options=options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise BundleLoadError(f"{source}: ONNX Runtime cannot load it: {exc}") from exc
        self.providers: list[str] = list(self.session.get_providers())
        if CUDA in providers and CUDA not in self.providers:
            # listed but not usable: onnxruntime-gpu on a machine without a GPU, driver or
            # CUDA libraries (ONNX Runtime's own warning is below log_severity_level)
            if settings.require_gpu:
                raise BundleLoadError(f"{source}: {CUDA} was requested but is not in use")
            self.fallback_reason = (
                f"encoder.use_gpu is set and ONNX Runtime lists {CUDA}, but the session could "
                f"not use it (no GPU, driver or CUDA libraries); running on {self.providers}"
            )
            log.warning("%s", self.fallback_reason)
        self.max_len = max_len
        self.source = source
        self._check_signature()

    def _check_signature(self) -> None:
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = [o.name for o in self.session.get_outputs()]
        if INPUT not in inputs or QUERY not in outputs:
            raise BundleLoadError(
                f"{self.source}: expected input {INPUT!r} and output {QUERY!r}, found inputs "
                f"{sorted(inputs)} and outputs {outputs}"
            )
        if inputs[INPUT].type != "tensor(int64)":
            raise BundleLoadError(f"{self.source}: input {INPUT!r} is {inputs[INPUT].type}")
        self._outputs = [QUERY] + ([ATTENTION] if ATTENTION in outputs else [])

    def batch(self, histories: list[np.ndarray]) -> np.ndarray:
        """Left-pad the last `max_len` items of each history into int64 [B, L]."""
        tails = [np.asarray(h, dtype=np.int64)[-self.max_len :] for h in histories]
        width = max(1, max((len(t) for t in tails), default=1))
        out = np.zeros((len(tails), width), dtype=np.int64)
        for row, tail in enumerate(tails):
            if len(tail):
                out[row, width - len(tail) :] = tail
        return out

    def encode(self, histories: list[np.ndarray]) -> EncoderOutput:
        """Run the encoder on a batch of histories (internal ids, chronological)."""
        result: list[Any] = self.session.run(self._outputs, {INPUT: self.batch(histories)})
        query = np.asarray(result[0], dtype=np.float32)
        attention = np.asarray(result[1], dtype=np.float32) if len(result) > 1 else None
        return EncoderOutput(query, attention)
