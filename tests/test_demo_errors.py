"""`cinesync demo` over a store whose LATEST is damaged: one clear error that says how to fix it,
exit 2, no training and no server."""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_bundle import make_fake_bundle

import training.demo
import training.train_cli
from model_store import ModelStore
from service.settings import Settings


def test_a_corrupt_latest_version_stops_the_demo_with_a_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    store = ModelStore(tmp_path / "store")
    store.publish("cinesync", make_fake_bundle(tmp_path / "bundle"))
    encoder = store.verify("cinesync", 1).path("encoder.onnx")
    encoder.write_bytes(encoder.read_bytes()[:-1] + b"!")
    settings = Settings(store_dir=store.root, model_name="cinesync")

    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("the demo went on past a damaged LATEST")

    monkeypatch.setattr(training.demo, "load_settings", lambda: settings)
    monkeypatch.setattr(training.train_cli, "run_train", refuse)
    monkeypatch.setattr(training.demo, "_serve_demo", refuse)
    with pytest.raises(SystemExit) as caught:
        training.demo.run_demo(port=8123)
    assert caught.value.code == 2
    out, err = capsys.readouterr()
    assert "reusing" not in out
    assert err.count("\n") == 1
    assert err.startswith("error: cinesync version 1 (LATEST in ")
    assert "encoder.onnx does not match its sha256" in err
    assert f"cinesync store rollback --store {store.root} --name cinesync" in err
    assert f"remove {store.root / 'cinesync'}" in err
    assert store.latest("cinesync") == 1
