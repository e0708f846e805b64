"""`cinesync publish` errors: one clear line that says "publishing ... failed" exactly once."""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_bundle import make_fake_bundle
from typer.testing import CliRunner

from model_store import ModelStore
from model_store.cli_ops import default_model_name as store_default_name
from training.cli import app
from training.publish import PublishError, default_model_name, publish_run


@pytest.fixture
def run(tmp_path: Path) -> Path:
    make_fake_bundle(tmp_path / "run" / "bundle")
    return tmp_path / "run"


def test_a_store_error_is_reported_with_one_publishing_prefix(run: Path, tmp_path: Path) -> None:
    bundle = run / "bundle"
    blocker = tmp_path / "file"
    blocker.write_text("not a folder\n")
    for store, detail in (
        (blocker / "store", "Not a directory"),  # an OSError inside the store
        (blocker, "is not a folder"),  # a refusal of the store
    ):
        with pytest.raises(PublishError) as caught:
            publish_run(run, store, "cinesync")
        message = str(caught.value)
        assert message.startswith(f"publishing {bundle} as 'cinesync' failed: ")
        assert message.count("publishing") == 1, message
        assert detail in message
        assert "[Errno" not in message
    result = CliRunner().invoke(
        app, ["publish", "--run", str(run), "--store", str(blocker / "store")]
    )
    assert result.exit_code == 2, result.output
    assert result.output.count("publishing") == 1, result.output
    assert result.output.count("\n") == 1


def test_publish_and_the_store_commands_share_one_default_model_name(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert default_model_name is store_default_name
    monkeypatch.setenv("CINESYNC_MODEL_NAME", "cinesync ")
    with pytest.raises(PublishError, match=r"CINESYNC_MODEL_NAME: invalid model name 'cinesync '"):
        publish_run(run, tmp_path / "store")
    assert not (tmp_path / "store").exists()
    monkeypatch.setenv("CINESYNC_MODEL_NAME", "from-env")
    assert publish_run(run, tmp_path / "store") == 1
    assert ModelStore(tmp_path / "store").models() == ["from-env"]
