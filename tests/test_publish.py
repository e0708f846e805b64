"""Publishing a run's bundle into the store, and the tiny bundle factory the service tests use."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from model_store import ModelStore
from training.errors import CineSyncError
from training.publish import PublishError, publish_run
from training.tiny_bundle import make_tiny_bundle


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("run")
    make_tiny_bundle(run / "bundle", n_users=120, n_items=80, dim=16, epochs=1)
    return run


def test_tiny_bundle_is_published_and_verified_by_the_store(run_dir: Path, tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")
    version = publish_run(run_dir, tmp_path / "store", "tiny")
    verified = store.verify("tiny", version)
    assert store.latest("tiny") == version == 1
    info = json.loads((run_dir / "bundle" / "bundle.json").read_text())
    assert verified.manifest.model.kind == "sasrec"
    assert verified.manifest.model.max_len == info["model"]["max_len"]
    assert verified.manifest.metrics.test["ndcg@10"] == info["metrics"]["test"]["ndcg@10"]
    assert verified.manifest.parity is not None
    assert verified.manifest.parity["int8_top10_overlap"] >= 0.9
    items = np.load(verified.path("item_embeddings.npy"), allow_pickle=False)
    assert items.shape == (81, 16)


def test_tiny_bundle_model_learned_something(run_dir: Path) -> None:
    metrics = json.loads((run_dir / "bundle" / "bundle.json").read_text())["metrics"]
    # a random ranking of 80 items gives hr@10 ~ 0.125; the synthetic data is very sequential
    assert metrics["test"]["hr@10"] > 0.25


def test_publish_uses_the_model_name_from_the_environment(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CINESYNC_MODEL_NAME", "from-env")
    assert publish_run(run_dir, tmp_path, None) == 1
    assert publish_run(run_dir, tmp_path, None) == 2
    assert ModelStore(tmp_path).versions("from-env") == [1, 2]
    monkeypatch.delenv("CINESYNC_MODEL_NAME")
    assert publish_run(run_dir, tmp_path) == 1
    assert ModelStore(tmp_path).models() == ["cinesync", "from-env"]


def test_run_without_a_bundle_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PublishError, match="does not exist: export the run first"):
        publish_run(tmp_path, tmp_path / "store")
    with pytest.raises(PublishError, match=r"run folder .* does not exist"):
        publish_run(tmp_path / "nope", tmp_path / "store")
    assert not (tmp_path / "store").exists()


def test_incomplete_bundle_names_the_missing_file(run_dir: Path, tmp_path: Path) -> None:
    partial = tmp_path / "run"
    shutil.copytree(run_dir / "bundle", partial / "bundle")
    (partial / "bundle" / "encoder.int8.onnx").unlink()
    with pytest.raises(PublishError, match=r"incomplete \(missing encoder\.int8\.onnx\)"):
        publish_run(partial, tmp_path / "store")
    assert ModelStore(tmp_path / "store").models() == []


def test_invalid_model_name_is_refused_as_a_cinesync_error(run_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(CineSyncError, match="publishing"):
        publish_run(run_dir, tmp_path / "store", "../escape")
    assert not (tmp_path / "escape").exists()
