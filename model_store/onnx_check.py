"""Refuse ONNX models that reference external data, by walking the protobuf wire format.

No `onnx` package is needed (the service only has onnxruntime). Every TensorProto reachable
from the model (initializers, sparse initializers, Constant/attribute tensors, subgraphs,
functions, training graphs) must hold its data inline: `external_data` (field 13) empty and
`data_location` (field 14) not EXTERNAL. A bundle's ONNX files are therefore self-contained and
never make ONNX Runtime open another file.
"""

from __future__ import annotations

from collections.abc import Iterator

from model_store.errors import UnsafeArtifact

MAX_DEPTH = 64
_EXTERNAL_DATA, _DATA_LOCATION, _EXTERNAL = 13, 14, 1
# message -> {field number: message type of that (length-delimited) field}; see onnx.proto
_CHILDREN: dict[str, dict[int, str]] = {
    "model": {7: "graph", 20: "training", 25: "function"},
    "training": {1: "graph", 2: "graph"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "node": {5: "attribute"},
    "function": {7: "node", 11: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},
    "tensor": {},
}


class _MalformedError(Exception):
    pass


def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    result, shift = 0, 0
    while True:
        if pos >= end or shift > 63:
            raise _MalformedError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """Yield (field, wire type, value or payload start, payload end) of one message."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise _MalformedError("field number 0")
        if wire == 0:
            value, pos = _varint(buf, pos, end)
            yield field, wire, value, pos
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        elif wire == 2:
            length, pos = _varint(buf, pos, end)
            yield field, wire, pos, pos + length
            pos += length
        else:
            raise _MalformedError(f"unsupported wire type {wire}")
    if pos != end:
        raise _MalformedError("message overruns its length")


def check_self_contained(data: bytes, source: str = "model.onnx") -> None:
    """Raise UnsafeArtifact if the serialized ModelProto uses external data or is malformed."""
    stack: list[tuple[str, int, int, int]] = [("model", 0, len(data), 0)]
    try:
        while stack:
            kind, start, end, depth = stack.pop()
            if depth > MAX_DEPTH:
                raise _MalformedError("nesting too deep")
            children = _CHILDREN[kind]
            for field, wire, a, b in _fields(data, start, end):
                if kind == "tensor" and (
                    (field == _EXTERNAL_DATA and wire == 2)
                    or (field == _DATA_LOCATION and wire == 0 and a == _EXTERNAL)
                ):
                    raise UnsafeArtifact(
                        f"{source} references external tensor data; bundle ONNX files must be "
                        "self-contained"
                    )
                if wire == 2 and field in children:
                    stack.append((children[field], a, b, depth + 1))
    except _MalformedError as exc:
        raise UnsafeArtifact(f"{source} is not a valid ONNX model: {exc}") from exc
