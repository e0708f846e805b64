"""Safe readers for verified bundle files: no pickles, no links, checked dtypes and shapes.

Call these only on paths from `VerifiedBundle.path()` (checksums already matched). ONNX models
are read as bytes with `load_onnx_bytes` and given to `onnxruntime.InferenceSession(bytes)`.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from model_store.errors import CorruptArtifact, UnsafeArtifact
from model_store.fsops import open_regular
from model_store.onnx_check import check_self_contained
from model_store.verified import VerifiedBundle

NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK\x03\x04"
MAX_NPZ_BYTES = 4 << 30
MAX_JSONL_LINE = 1 << 20


def _check_array(
    arr: object,
    source: str,
    dtype: npt.DTypeLike | None,
    shape: Sequence[int | None] | None,
) -> npt.NDArray[Any]:
    if not isinstance(arr, np.ndarray):
        raise CorruptArtifact(f"{source} is not an array")
    if arr.dtype.hasobject:
        raise UnsafeArtifact(f"{source} holds Python objects; refused")
    if dtype is not None and arr.dtype != np.dtype(dtype):
        raise CorruptArtifact(f"{source} has dtype {arr.dtype}, expected {np.dtype(dtype)}")
    if shape is not None and (
        arr.ndim != len(shape)
        or any(s is not None and s != n for s, n in zip(shape, arr.shape, strict=True))
    ):
        want = tuple("?" if s is None else s for s in shape)
        raise CorruptArtifact(f"{source} has shape {arr.shape}, expected {want}")
    return arr


def load_npy(
    path: Path, *, dtype: npt.DTypeLike | None = None, shape: Sequence[int | None] | None = None
) -> npt.NDArray[Any]:
    """Load a .npy with allow_pickle=False; `shape` entries of None match any size."""
    with os.fdopen(open_regular(path), "rb") as fh:
        if fh.read(len(NPY_MAGIC)) != NPY_MAGIC:
            raise UnsafeArtifact(f"{path.name} is not a .npy file (pickles are refused)")
        fh.seek(0)
        try:
            arr = np.load(fh, allow_pickle=False)
        except (ValueError, EOFError) as exc:
            raise UnsafeArtifact(f"{path.name} refused: {exc}") from exc
    return _check_array(arr, path.name, dtype, shape)


def load_npz(
    path: Path, *, keys: Collection[str] | None = None, max_bytes: int = MAX_NPZ_BYTES
) -> dict[str, npt.NDArray[Any]]:
    """Load every array of an .npz (allow_pickle=False); `keys`, if given, must match exactly."""
    with os.fdopen(open_regular(path), "rb") as fh:
        if fh.read(len(ZIP_MAGIC)) != ZIP_MAGIC:
            raise CorruptArtifact(f"{path.name} is not an .npz file")
        fh.seek(0)
        try:
            with zipfile.ZipFile(fh) as zf:
                if sum(info.file_size for info in zf.infolist()) > max_bytes:
                    raise UnsafeArtifact(f"{path.name} unpacks to more than {max_bytes} bytes")
            fh.seek(0)
            with np.load(fh, allow_pickle=False) as npz:
                if keys is not None and set(npz.files) != set(keys):
                    raise CorruptArtifact(
                        f"{path.name} holds {sorted(npz.files)}, expected {sorted(keys)}"
                    )
                raw = {key: npz[key] for key in npz.files}
        except (ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise UnsafeArtifact(f"{path.name} refused: {exc}") from exc
    return {key: _check_array(arr, f"{path.name}[{key}]", None, None) for key, arr in raw.items()}


def read_jsonl(path: Path, *, max_line_bytes: int = MAX_JSONL_LINE) -> list[dict[str, Any]]:
    """Parse a JSON-lines file of objects (UTF-8); blank lines are refused except at the end."""
    rows: list[dict[str, Any]] = []
    with os.fdopen(open_regular(path), "rb") as fh:
        for number, line in enumerate(iter(lambda: fh.readline(max_line_bytes + 1), b""), 1):
            if len(line) > max_line_bytes:
                raise CorruptArtifact(f"{path.name} line {number} is longer than {max_line_bytes}")
            try:
                row = json.loads(line)
            except (ValueError, UnicodeDecodeError) as exc:
                raise CorruptArtifact(f"{path.name} line {number}: not JSON ({exc})") from exc
            if not isinstance(row, dict):
                raise CorruptArtifact(f"{path.name} line {number}: expected a JSON object")
            rows.append(row)
    return rows


def load_onnx_bytes(bundle: VerifiedBundle, filename: str) -> bytes:
    """A listed ONNX file's bytes, re-hashed and checked to reference no external data."""
    data = bundle.read_bytes(filename)
    check_self_contained(data, filename)
    return data
