"""Safe loaders: no pickle ever runs, dtypes/shapes are checked, ONNX must be self-contained."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from fake_bundle import make_fake_bundle

from model_store import CorruptArtifact, ModelStore, UnsafeArtifact
from model_store.safe_load import load_npy, load_npz, read_jsonl


class Payload:
    """Unpickling this would create a marker file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (Path.write_text, (str(self.marker), "pwned"))


def test_pickled_npy_passes_checksums_but_is_refused_without_running_code(
    tmp_path: Path,
) -> None:
    marker = tmp_path / "marker"
    bundle = make_fake_bundle(tmp_path / "bundle")
    np.save(
        bundle / "item_embeddings.npy", np.array([Payload(marker)], dtype=object), allow_pickle=True
    )
    (bundle / "content_embeddings.npy").write_bytes(pickle.dumps(Payload(marker)))
    store = ModelStore(tmp_path / "store")
    verified = store.verify("cinesync", store.publish("cinesync", bundle))
    with pytest.raises(UnsafeArtifact, match="allow_pickle=False"):
        load_npy(verified.path("item_embeddings.npy"))
    with pytest.raises(UnsafeArtifact, match=r"not a \.npy file"):
        load_npy(verified.path("content_embeddings.npy"))
    assert not marker.exists()


def test_npz_holding_a_pickled_array_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "h.npz"
    np.savez(
        path, user_ids=np.array([Payload(marker)], dtype=object), offsets=np.zeros(2, np.int64)
    )
    with pytest.raises(UnsafeArtifact, match="allow_pickle=False"):
        load_npz(path)
    assert not marker.exists()


def test_npy_dtype_and_shape_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "e.npy"
    np.save(path, np.ones((6, 8), np.float32))
    assert load_npy(path, dtype=np.float32, shape=(None, 8)).shape == (6, 8)
    with pytest.raises(CorruptArtifact, match="dtype float32, expected float64"):
        load_npy(path, dtype=np.float64)
    with pytest.raises(CorruptArtifact, match=r"shape \(6, 8\), expected \('\?', 16\)"):
        load_npy(path, shape=(None, 16))
    with pytest.raises(CorruptArtifact, match="shape"):
        load_npy(path, shape=(6,))


def test_npz_returns_exactly_the_expected_arrays(tmp_path: Path) -> None:
    bundle = make_fake_bundle(tmp_path / "b")
    arrays = load_npz(bundle / "histories.npz", keys=["user_ids", "offsets", "items"])
    assert arrays["user_ids"].tolist() == ["u1", "u2", "u3"]
    assert arrays["offsets"].dtype == np.int64
    with pytest.raises(CorruptArtifact, match="expected"):
        load_npz(bundle / "histories.npz", keys=["user_ids", "offsets"])
    with pytest.raises(CorruptArtifact, match=r"not an \.npz"):
        load_npz(bundle / "items.jsonl")


def test_npz_that_would_unpack_beyond_the_limit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.npz"
    np.savez_compressed(path, zeros=np.zeros(1_000_000, np.float64))
    assert load_npz(path)["zeros"].shape == (1_000_000,)
    with pytest.raises(UnsafeArtifact, match="unpacks to more than"):
        load_npz(path, max_bytes=1_000_000)


def test_jsonl_rows_must_be_json_objects(tmp_path: Path) -> None:
    path = tmp_path / "items.jsonl"
    path.write_text('{"index": 1}\n{"index": 2}\n')
    assert read_jsonl(path) == [{"index": 1}, {"index": 2}]
    path.write_text('{"index": 1}\n[2]\n')
    with pytest.raises(CorruptArtifact, match="line 2: expected a JSON object"):
        read_jsonl(path)
    path.write_text('{"index": 1}\n{"index": \n')
    with pytest.raises(CorruptArtifact, match="line 2: not JSON"):
        read_jsonl(path)
    path.write_text(json.dumps({"title": "x" * 200}) + "\n")
    with pytest.raises(CorruptArtifact, match="longer than"):
        read_jsonl(path, max_line_bytes=100)


def test_safe_loaders_refuse_symlinks(tmp_path: Path) -> None:
    real = tmp_path / "real.npy"
    np.save(real, np.ones(3, np.float32))
    link = tmp_path / "link.npy"
    link.symlink_to(real)
    with pytest.raises(UnsafeArtifact, match="symlink"):
        load_npy(link)
