"""load_bundle over real published bundles: what loads, and every malformed artifact it refuses."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from service_fixtures import MODEL, make_settings

from model_store.store import ModelStore
from service.bundle import load_bundle
from service.errors import BundleLoadError, UnknownVersionError


def load(store_dir: Path, version: int | None = None, **overrides: object) -> object:
    return load_bundle(ModelStore(store_dir), MODEL, version, make_settings(store_dir, **overrides))


def test_latest_bundle_loads_with_consistent_parts(store_dir: Path) -> None:
    bundle = load_bundle(ModelStore(store_dir), MODEL, None, make_settings(store_dir))
    manifest = bundle.manifest
    assert bundle.version == 2
    assert bundle.n_items == manifest.dataset.items
    assert bundle.item_embeddings.shape == (manifest.dataset.items + 1, manifest.model.dim)
    assert bundle.content_embeddings.shape[0] == manifest.dataset.items + 1
    assert len(bundle.users) == manifest.dataset.users
    assert bundle.providers == ["CPUExecutionProvider"]
    assert (bundle.index.kind, bundle.index_recall) == ("flat", 1.0)
    assert bundle.encoder.max_len == manifest.model.max_len
    assert bundle.load_seconds > 0


def test_an_approximate_index_gets_its_recall_measured_at_load(store_dir: Path) -> None:
    bundle = load_bundle(
        ModelStore(store_dir), MODEL, 1, make_settings(store_dir, index={"kind": "hnsw"})
    )
    assert bundle.index.kind == "hnsw"
    assert 0.9 <= bundle.index_recall <= 1.0


def test_int8_encoder_ranks_like_fp32(store_dir: Path) -> None:
    store = ModelStore(store_dir)
    fp32 = load_bundle(store, MODEL, 1, make_settings(store_dir))
    int8 = load_bundle(store, MODEL, 1, make_settings(store_dir, encoder={"precision": "int8"}))
    histories = fp32.users.sample(50, seed=3, min_len=5)
    q32 = fp32.encoder.encode(histories).query
    q8 = int8.encoder.encode(histories).query
    top32 = np.argsort(-(q32 @ fp32.item_embeddings[1:].T), axis=1)[:, :10]
    top8 = np.argsort(-(q8 @ fp32.item_embeddings[1:].T), axis=1)[:, :10]
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(top32, top8, strict=True)])
    assert overlap >= 0.8


def test_encoder_output_does_not_depend_on_left_padding(store_dir: Path) -> None:
    bundle = load_bundle(ModelStore(store_dir), MODEL, 1, make_settings(store_dir))
    history = bundle.users.sample(1, seed=5, min_len=8)[0][-8:]
    alone = bundle.encoder.encode([history])
    padded = bundle.encoder.encode([history, np.arange(1, 31)])  # pads `history` to 30
    np.testing.assert_allclose(alone.query[0], padded.query[0], atol=1e-4)
    assert alone.attention is not None
    assert alone.attention[0].sum() == pytest.approx(1.0, abs=1e-4)


def test_missing_version_and_empty_store(store_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(UnknownVersionError, match="version 7"):
        load(store_dir, 7)
    with pytest.raises(BundleLoadError, match="no published version"):
        load(tmp_path / "empty")


def test_cuda_requested_and_required_is_refused_without_it(store_dir: Path) -> None:
    with pytest.raises(BundleLoadError, match="CUDAExecutionProvider"):
        load(store_dir, 1, encoder={"use_gpu": True, "require_gpu": True})


def test_cuda_requested_without_it_falls_back_to_cpu_and_says_so(store_dir: Path) -> None:
    bundle = load_bundle(
        ModelStore(store_dir), MODEL, 1, make_settings(store_dir, encoder={"use_gpu": True})
    )
    assert bundle.providers == ["CPUExecutionProvider"]
    assert bundle.encoder.fallback_reason is not None
    assert "CUDAExecutionProvider" in bundle.encoder.fallback_reason


ONNX_RUNTIME_GPU_WITHOUT_A_GPU = ["CUDAExecutionProvider", "CPUExecutionProvider"]


def _has_cuda_provider() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


# the simulation needs an ONNX Runtime without CUDA: with onnxruntime-gpu on a GPU machine the
# session really gets CUDA (that case is test_reliability_lifecycle's `gpu` test)
simulates_gpu_package = pytest.mark.skipif(
    _has_cuda_provider(), reason="this ONNX Runtime has the CUDA provider: nothing to simulate"
)


def _list_cuda_as_available(monkeypatch: pytest.MonkeyPatch) -> None:
    """What onnxruntime-gpu does on a machine with no GPU: it lists the CUDA provider, and a
    session asked for it runs on the CPU (this CPU build warns that it has no such provider)."""
    import onnxruntime as ort

    monkeypatch.setattr(ort, "get_available_providers", lambda: ONNX_RUNTIME_GPU_WITHOUT_A_GPU)


@simulates_gpu_package
def test_a_cuda_provider_listed_but_unusable_is_a_cpu_fallback_that_says_so(
    store_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _list_cuda_as_available(monkeypatch)
    settings = make_settings(store_dir, encoder={"use_gpu": True})
    with pytest.warns(UserWarning, match="CUDAExecutionProvider"):
        bundle = load_bundle(ModelStore(store_dir), MODEL, 1, settings)
    assert bundle.providers == ["CPUExecutionProvider"]
    assert bundle.encoder.fallback_reason is not None
    assert "could not use it" in bundle.encoder.fallback_reason


@simulates_gpu_package
def test_a_cuda_provider_listed_but_unusable_is_refused_when_required(
    store_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _list_cuda_as_available(monkeypatch)
    with (
        pytest.warns(UserWarning, match="CUDAExecutionProvider"),
        pytest.raises(BundleLoadError, match="requested but is not in use"),
    ):
        load(store_dir, 1, encoder={"use_gpu": True, "require_gpu": True})


@simulates_gpu_package
def test_requiring_a_gpu_that_onnxruntime_lists_but_cannot_use_stops_the_start() -> None:
    from service.encoder import check_gpu_at_start
    from service.errors import SettingsError
    from service.settings import EncoderSettings

    settings = EncoderSettings(use_gpu=True, require_gpu=True)
    with (
        pytest.warns(UserWarning, match="CUDAExecutionProvider"),
        pytest.raises(SettingsError, match="a session cannot use it"),
    ):
        check_gpu_at_start(settings, ONNX_RUNTIME_GPU_WITHOUT_A_GPU)


def test_the_provider_probe_is_a_valid_onnx_identity_model() -> None:
    import onnx
    import onnxruntime as ort

    from service.encoder import identity_model

    model = onnx.load_from_string(identity_model())
    onnx.checker.check_model(model, full_check=True)
    session = ort.InferenceSession(identity_model(), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"x": np.array([2.5], dtype=np.float32)})
    assert out.tolist() == [2.5]


def _external_data_onnx(folder: Path) -> None:
    import onnx
    from onnx.external_data_helper import convert_model_to_external_data

    model = onnx.load(str(folder / "encoder.onnx"))
    convert_model_to_external_data(
        model, all_tensors_to_one_file=True, location="../../../outside.bin", size_threshold=0
    )
    (folder / "encoder.onnx").write_bytes(model.SerializeToString())


def _float64_embeddings(folder: Path) -> None:
    emb = np.load(folder / "item_embeddings.npy")
    np.save(folder / "item_embeddings.npy", emb.astype(np.float64))


def _history_out_of_range(folder: Path) -> None:
    with np.load(folder / "histories.npz") as data:
        arrays = {k: data[k] for k in data.files}
    arrays["items"] = arrays["items"].copy()
    arrays["items"][0] = 10**6
    np.savez(folder / "histories.npz", **arrays)


def _items_missing_a_row(folder: Path) -> None:
    lines = (folder / "items.jsonl").read_text().splitlines()
    (folder / "items.jsonl").write_text("\n".join(lines[:-1]) + "\n")


def _items_out_of_order(folder: Path) -> None:
    lines = (folder / "items.jsonl").read_text().splitlines()
    lines[0], lines[1] = lines[1], lines[0]
    (folder / "items.jsonl").write_text("\n".join(lines) + "\n")


def _nan_embedding(folder: Path) -> None:
    emb = np.load(folder / "content_embeddings.npy")
    emb[3, 0] = np.nan
    np.save(folder / "content_embeddings.npy", emb)


def _title_not_a_string(folder: Path) -> None:
    rows = [json.loads(x) for x in (folder / "items.jsonl").read_text().splitlines()]
    rows[2]["title"] = 42
    (folder / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [(_external_data_onnx, "external"), (_float64_embeddings, "float32"),
     (_history_out_of_range, "histories.npz"), (_items_missing_a_row, "items.jsonl"),
     (_items_out_of_order, "index"), (_nan_embedding, "non-finite"),
     (_title_not_a_string, "title")],
)  # fmt: skip
def test_malformed_artifacts_are_refused_with_a_clear_reason(
    store_dir: Path,
    tiny_bundle: Path,
    tmp_path: Path,
    tamper: Callable[[Path], None],
    reason: str,
) -> None:
    folder = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, folder)
    tamper(folder)
    version = ModelStore(store_dir).publish(MODEL, folder, set_latest=False)
    with pytest.raises(BundleLoadError, match=reason) as info:
        load(store_dir, version)
    assert f"{MODEL} v{version}" in str(info.value)
