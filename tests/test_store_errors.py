"""The store's error contract: a file-system error is a StoreError (one `error:` line and exit 2
from the CLI), never a bare OSError; only publish creates folders."""

from __future__ import annotations

import errno
import re
import shutil
from pathlib import Path

import pytest
from fake_bundle import make_fake_bundle
from typer.testing import CliRunner

import model_store.store
import model_store.verified
from model_store import (
    IncompleteVersion,
    ModelStore,
    StoreError,
    UnsafeArtifact,
    VersionNotFound,
)
from model_store.cli_ops import list_store
from training.cli import app

NAME = "cinesync"


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    store = ModelStore(tmp_path / "store")
    store.publish(NAME, make_fake_bundle(tmp_path / "a"))
    store.publish(NAME, make_fake_bundle(tmp_path / "b", seed=1))
    return store


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def assert_one_error_line(args: list[str], expected: str) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ")
    assert expected in result.output
    assert result.output.count("\n") == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_a_model_path_that_is_a_file_is_a_store_error_everywhere(tmp_path: Path) -> None:
    root = tmp_path / "store"
    root.mkdir()
    (root / NAME).write_text("hi\n")
    store = ModelStore(root)
    for call in (
        lambda: store.latest(NAME),
        lambda: store.rollback(NAME),
        lambda: store.rollback(NAME, 1),
        lambda: store.set_latest(NAME, 1),
        lambda: store.prune(NAME, 1),
        lambda: store.publish(NAME, make_fake_bundle(tmp_path / "bundle")),
    ):
        with pytest.raises(StoreError, match="is not a folder"):
            call()
    assert files_under(root) == [NAME]
    for args in (
        ["store", "rollback", "--to", "1"],
        ["store", "rollback"],
        ["store", "list", "--name", NAME],
        ["store", "prune"],
    ):
        assert_one_error_line([*args, "--store", str(root)], f"{root / NAME} is not a folder")


def test_a_store_root_that_is_a_file_is_a_store_error(tmp_path: Path) -> None:
    root = tmp_path / "file"
    root.write_text("hi\n")
    for args in (["store", "prune"], ["store", "rollback"], ["store", "list"]):
        assert_one_error_line([*args, "--store", str(root)], "is not a folder")
    with pytest.raises(StoreError, match="is not a folder"):
        ModelStore(root).publish(NAME, make_fake_bundle(tmp_path / "bundle"))
    assert root.read_text() == "hi\n"


def test_an_os_error_while_publishing_is_a_store_error_naming_the_publish(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(src: Path, dst: Path) -> str:
        raise OSError(errno.ENOSPC, "No space left on device", str(dst))

    monkeypatch.setattr(model_store.publish, "copy_with_hash", disk_full)
    bundle = make_fake_bundle(tmp_path / "bundle")
    store = ModelStore(tmp_path / "store")
    with pytest.raises(StoreError) as caught:
        store.publish(NAME, bundle)
    assert str(caught.value).startswith(f"publishing {bundle} as 'cinesync' failed: No space left")
    assert not isinstance(caught.value, OSError)
    assert store.versions(NAME) == []


def test_an_os_error_while_verifying_is_a_store_error(
    store: ModelStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreadable(path: Path) -> str:
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(model_store.verified, "sha256_file", unreadable)
    for call in (lambda: store.verify(NAME, 1), lambda: store.rollback(NAME)):
        with pytest.raises(StoreError, match=r"verifying cinesync v1 failed: Permission denied"):
            call()
    assert store.latest(NAME) == 2


def test_reading_a_file_of_a_version_pruned_after_verification_is_a_store_error(
    store: ModelStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = store.verify(NAME, 1)
    (old.directory / "items.jsonl").unlink()
    with pytest.raises(IncompleteVersion, match="removed after it was verified"):
        old.read_bytes("items.jsonl")
    assert store.prune(NAME, 1) == [1]
    with pytest.raises(VersionNotFound, match="removed"):
        old.read_bytes("encoder.onnx")
    current = store.verify(NAME, 2)
    (current.directory / "items.jsonl").unlink()
    (current.directory / "items.jsonl").mkdir()
    with pytest.raises(UnsafeArtifact, match="not a regular file"):
        current.read_bytes("items.jsonl")

    def unreadable(path: Path) -> int:
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(model_store.verified, "open_regular", unreadable)
    with pytest.raises(StoreError, match=r"reading encoder\.onnx of cinesync v2 failed: Perm"):
        current.read_bytes("encoder.onnx")


def test_rollback_set_latest_and_prune_of_a_missing_store_create_nothing(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "absent")
    for call in (
        lambda: store.rollback(NAME),
        lambda: store.rollback(NAME, 1),
        lambda: store.set_latest(NAME, 1),
        lambda: store.prune(NAME, 1),
    ):
        with pytest.raises(VersionNotFound, match=r"no model 'cinesync' in .*absent"):
            call()
    assert store.latest(NAME) is None
    assert not (tmp_path / "absent").exists()
    assert_one_error_line(
        ["store", "rollback", "--store", str(tmp_path / "absent")], "the store does not exist"
    )
    assert not (tmp_path / "absent").exists()


def test_rollback_of_an_unknown_model_changes_nothing(store: ModelStore) -> None:
    before = files_under(store.root)
    for call in (
        lambda: store.rollback("cinesynk"),
        lambda: store.set_latest("cinesynk", 1),
        lambda: store.prune("cinesynk", 1),
    ):
        with pytest.raises(
            VersionNotFound, match=f"no model 'cinesynk' in {re.escape(str(store.root))}$"
        ):
            call()
    for command in ("rollback", "prune"):
        assert_one_error_line(
            ["store", command, "--store", str(store.root), "--name", "cinesynk"],
            "no model 'cinesynk'",
        )
    assert files_under(store.root) == before
    assert store.models() == [NAME]


def test_the_first_publish_of_a_model_fsyncs_the_folders_that_name_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[Path] = []
    real = model_store.store.fsync_dir

    def record(path: Path) -> None:
        synced.append(Path(path))
        real(path)

    monkeypatch.setattr(model_store.store, "fsync_dir", record)
    root = tmp_path / "new" / "store"
    store = ModelStore(root)
    store.publish(NAME, make_fake_bundle(tmp_path / "a"))
    assert synced == [root.parent, root]
    store.publish(NAME, make_fake_bundle(tmp_path / "b"))
    store.publish("other", make_fake_bundle(tmp_path / "c"))
    assert synced == [root.parent, root, root]


def test_listing_a_missing_store_is_an_error_and_an_empty_one_is_not(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        list_store(tmp_path / "absent")
    assert_one_error_line(
        ["store", "list", "--store", str(tmp_path / "absent")],
        f"no model store at {tmp_path / 'absent'}: the path does not exist",
    )
    (tmp_path / "empty").mkdir()
    listed = CliRunner().invoke(app, ["store", "list", "--store", str(tmp_path / "empty")])
    assert listed.exit_code == 0, listed.output
    assert listed.output == f"no models in {tmp_path / 'empty'}\n"
    assert not (tmp_path / "absent").exists()


def test_an_invalid_model_name_in_the_environment_is_refused_by_every_command(
    store: ModelStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from training.publish import PublishError, publish_run

    monkeypatch.setenv("CINESYNC_MODEL_NAME", "cinesync ")
    run = tmp_path / "run"
    shutil.copytree(tmp_path / "a", run / "bundle")
    with pytest.raises(PublishError, match=r"^\$CINESYNC_MODEL_NAME: invalid model name"):
        publish_run(run, store.root)
    for command in ("rollback", "prune"):
        assert_one_error_line(
            ["store", command, "--store", str(store.root)],
            "$CINESYNC_MODEL_NAME: invalid model name 'cinesync '",
        )
    assert store.versions(NAME) == [1, 2]
    assert store.latest(NAME) == 2
    monkeypatch.setenv("CINESYNC_MODEL_NAME", "")
    assert publish_run(run, store.root) == 3


def test_a_version_whose_manifest_cannot_be_read_stops_prune_instead_of_being_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ModelStore(tmp_path / "store")
    for _ in range(3):
        store.publish("m", make_fake_bundle(tmp_path / "bundle"))
    real_read_small = model_store.verified.read_small

    def failing_disk(path: Path, limit: int) -> bytes:
        if path.parent.name == "2":
            raise OSError(errno.EIO, "Input/output error", str(path))
        return real_read_small(path, limit)

    monkeypatch.setattr(model_store.verified, "read_small", failing_disk)
    with pytest.raises(StoreError, match="Input/output error"):
        store.prune("m", keep=1)  # skipping v2 would make it keep and delete the wrong ones
    monkeypatch.undo()
    assert store.versions("m") == [1, 2, 3]
