"""Scenario 21: malicious artifacts in the store are refused and run no code.

Each case is published through the store, so its manifest checksums are VALID: the checksum
cannot be what stops it; the safe loaders must. Pickle payloads would create a marker folder
(os.mkdir) when unpickled; a self-check proves the payload is armed. Every case: reload -> 409
with the reason, the marker does not exist, the process keeps serving the previous version.
Bundles carry no serialized FAISS index (it is built from the verified embeddings at load), so
"a corrupted FAISS file" is an index file dropped into a version folder, plus corrupted
embeddings. The training side's checkpoints load with torch.load(weights_only=True).
"""

from __future__ import annotations

import os
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import pytest
from service_fixtures import AUTH, MODEL, make_settings, running_app

from model_store.store import ModelStore


class Payload:
    """Unpickling this calls os.mkdir(marker): code execution, observable on disk."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[str]]:
        return (os.mkdir, (self.marker,))


def test_the_payload_is_armed(tmp_path: Path) -> None:
    marker = tmp_path / "armed"
    pickle.loads(pickle.dumps(Payload(marker)))
    assert marker.is_dir()


def _pickled_npy(bundle: Path, marker: Path, outside: Path) -> None:
    np.save(bundle / "item_embeddings.npy", np.array([Payload(marker)], dtype=object))


def _raw_pickle_as_npy(bundle: Path, marker: Path, outside: Path) -> None:
    (bundle / "content_embeddings.npy").write_bytes(pickle.dumps(Payload(marker)))


def _pickle_in_npz(bundle: Path, marker: Path, outside: Path) -> None:
    with np.load(bundle / "histories.npz") as npz:
        arrays = dict(npz)
    arrays["user_ids"] = np.array([Payload(marker)] * len(arrays["user_ids"]), dtype=object)
    np.savez(bundle / "histories.npz", **arrays)


def _onnx_external_data(bundle: Path, marker: Path, outside: Path) -> None:
    """The largest initializer's bytes moved to a file outside the bundle, referenced by a
    relative path (a loader that followed it would read outside its folder)."""
    model = onnx.load_model_from_string((bundle / "encoder.onnx").read_bytes())
    tensor = max(model.graph.initializer, key=lambda t: len(t.raw_data))
    (outside / "weights.bin").write_bytes(tensor.raw_data)
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", "../../../outside/weights.bin"), ("offset", "0"),
                       ("length", str((outside / "weights.bin").stat().st_size))):  # fmt: skip
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    (bundle / "encoder.onnx").write_bytes(model.SerializeToString())


def _truncated_embeddings(bundle: Path, marker: Path, outside: Path) -> None:
    data = (bundle / "item_embeddings.npy").read_bytes()
    (bundle / "item_embeddings.npy").write_bytes(data[: len(data) - 100])


def _nan_embeddings(bundle: Path, marker: Path, outside: Path) -> None:
    emb = np.load(bundle / "item_embeddings.npy")
    emb[5, 3] = np.nan
    np.save(bundle / "item_embeddings.npy", emb)


def _header_bomb(bundle: Path, marker: Path, outside: Path) -> None:
    """A valid .npy header claiming 233 TiB over a few bytes of data."""
    with (bundle / "item_embeddings.npy").open("wb") as fh:
        header = {"descr": "<f4", "fortran_order": False, "shape": (10**12, 64)}
        np.lib.format.write_array_header_1_0(fh, header)
        fh.write(b"\0" * 4096)


def _garbage_embeddings(bundle: Path, marker: Path, outside: Path) -> None:
    (bundle / "item_embeddings.npy").write_bytes(os.urandom(4096))


CASES = {
    "pickled npy": (_pickled_npy, "pickle"),
    "raw pickle named .npy": (_raw_pickle_as_npy, "content_embeddings.npy"),
    "pickle inside histories.npz": (_pickle_in_npz, "histories.npz"),
    "onnx external data outside its folder": (_onnx_external_data, "external tensor data"),
    "truncated embeddings": (_truncated_embeddings, "bytes"),
    "non-finite embeddings": (_nan_embeddings, "non-finite"),
    "npy header claiming 233 TiB": (_header_bomb, "header says"),
    "random bytes as embeddings": (_garbage_embeddings, "item_embeddings.npy"),
}


async def _refused(client: httpx.AsyncClient, version: int, reason: str) -> None:
    before = (await client.get("/recommend/3")).json()
    r = await client.post("/admin/reload", json={"version": version}, headers=AUTH)
    assert r.status_code == 409, r.text
    assert reason in r.json()["detail"], r.text
    assert (await client.get("/healthz")).status_code == 200
    ready = (await client.get("/readyz")).json()
    assert ready["model_version"] == 2
    after = await client.get("/recommend/3")
    assert after.status_code == 200
    assert after.json()["items"] == before["items"]


@pytest.mark.asyncio
@pytest.mark.parametrize("case", sorted(CASES))
async def test_a_malicious_artifact_with_a_valid_checksum_is_refused_and_runs_no_code(
    store_dir: Path, tiny_bundle: Path, tmp_path: Path, case: str
) -> None:
    make, reason = CASES[case]
    marker, outside = tmp_path / "pwned", tmp_path / "outside"
    outside.mkdir()
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    make(bundle, marker, outside)
    version = ModelStore(store_dir).publish(MODEL, bundle, set_latest=False)
    ModelStore(store_dir).verify(MODEL, version)  # the checksums match: the loader must refuse
    async with running_app(make_settings(store_dir)) as client:
        await _refused(client, version, reason)
        metrics = (await client.get("/metrics")).text
        assert 'cinesync_reloads_total{result="failure"} 1.0' in metrics
    assert not marker.exists()


@pytest.mark.asyncio
async def test_an_index_file_dropped_into_a_version_folder_is_refused(
    store_dir: Path, tiny_bundle: Path, tmp_path: Path
) -> None:
    version = ModelStore(store_dir).publish(MODEL, tiny_bundle, set_latest=False)
    (store_dir / MODEL / str(version) / "index.faiss").write_bytes(pickle.dumps(Payload(tmp_path)))
    async with running_app(make_settings(store_dir)) as client:
        await _refused(client, version, "index.faiss is not in the manifest")


@pytest.mark.asyncio
async def test_a_file_changed_after_publishing_is_refused_by_its_checksum(
    store_dir: Path, tiny_bundle: Path, tmp_path: Path
) -> None:
    version = ModelStore(store_dir).publish(MODEL, tiny_bundle, set_latest=False)
    marker = tmp_path / "pwned"
    np.save(store_dir / MODEL / str(version) / "item_embeddings.npy",
            np.array([Payload(marker)], dtype=object))  # fmt: skip
    async with running_app(make_settings(store_dir)) as client:
        await _refused(client, version, "sha256")
    assert not marker.exists()


def test_a_checkpoint_with_a_pickle_payload_is_refused_by_the_training_loader(
    tmp_path: Path,
) -> None:
    import torch

    from training.checkpoint import CheckpointError, load

    marker = tmp_path / "pwned"
    path = tmp_path / "ckpt.pt"
    torch.save({"model": {"w": torch.zeros(2)}, "step": 1, "evil": Payload(marker)}, path)
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load(path)
    assert not marker.exists()
    torch.save({"model": {"w": torch.zeros(2)}, "step": 1}, path)
    assert load(path)["step"] == 1  # a plain checkpoint still loads
