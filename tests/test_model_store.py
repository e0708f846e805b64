"""ModelStore: atomic publish, verification before use, safe names, rollback and retention."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from fake_bundle import BUNDLE_FILES, make_fake_bundle

from model_store import (
    ChecksumMismatch,
    IncompleteVersion,
    InvalidName,
    ManifestError,
    ModelStore,
    StoreError,
    UnsafeArtifact,
    VersionNotFound,
)

REPO = Path(__file__).resolve().parents[1]
NAME = "cinesync"


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    return make_fake_bundle(tmp_path / "bundle")


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "store")


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_publish_lists_the_version_and_points_latest_at_it(store: ModelStore, bundle: Path) -> None:
    assert store.versions(NAME) == []
    assert store.latest(NAME) is None
    assert store.publish(NAME, bundle) == 1
    assert store.publish(NAME, bundle) == 2
    assert store.models() == [NAME]
    assert store.versions(NAME) == [1, 2]
    assert store.latest(NAME) == 2
    verified = store.verify(NAME, 2)
    assert verified.directory == store.root.resolve() / NAME / "2"
    assert sorted(os.listdir(verified.directory)) == sorted([*BUNDLE_FILES, "manifest.json"])
    for name in BUNDLE_FILES:
        digest = hashlib.sha256((bundle / name).read_bytes()).hexdigest()
        assert verified.manifest.files[name] == digest
        assert verified.path(name).read_bytes() == (bundle / name).read_bytes()
    info = json.loads((bundle / "bundle.json").read_text())
    manifest = store.manifest(NAME, 2)
    assert manifest.metrics.model_dump() == info["metrics"]
    assert manifest.model.kind == "sasrec"
    assert manifest.dataset.items == 5
    assert (manifest.name, manifest.version, manifest.schema_version) == (NAME, 2, 1)


def test_publish_without_set_latest_leaves_latest_alone(store: ModelStore, bundle: Path) -> None:
    store.publish(NAME, bundle)
    assert store.publish(NAME, bundle, set_latest=False) == 2
    assert store.latest(NAME) == 1
    store.set_latest(NAME, 2)
    assert store.latest(NAME) == 2


def test_publish_interrupted_before_rename_keeps_latest_and_lists_nothing_new(
    store: ModelStore, bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.publish(NAME, bundle)

    def failing_rename(src: object, dst: object) -> None:
        raise OSError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr("model_store.publish.os.rename", failing_rename)
        with pytest.raises(StoreError, match="disk full"):
            store.publish(NAME, bundle)
    assert store.latest(NAME) == 1
    assert store.versions(NAME) == [1]
    assert sorted(os.listdir(store.root / NAME)) == [".lock", "1", "LATEST"]
    assert store.publish(NAME, bundle) == 2


def test_publisher_killed_before_rename_leaves_an_unlisted_staging_folder_that_prune_removes(
    store: ModelStore, bundle: Path
) -> None:
    store.publish(NAME, bundle)
    script = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "import model_store.publish as p\n"
        "p.os.rename = lambda a, b: os.kill(os.getpid(), signal.SIGKILL)\n"
        "from model_store import ModelStore\n"
        "ModelStore(Path(sys.argv[1])).publish('cinesync', Path(sys.argv[2]))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(store.root), str(bundle)],
        cwd=REPO,
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == -9, proc.stderr.decode()
    staging = [p for p in (store.root / NAME).iterdir() if p.name.startswith(".staging-")]
    assert len(staging) == 1
    assert (staging[0] / "manifest.json").is_file()
    assert store.latest(NAME) == 1
    assert store.versions(NAME) == [1]
    with pytest.raises(VersionNotFound):
        store.verify(NAME, 2)
    assert store.publish(NAME, bundle) == 2
    assert store.prune(NAME, keep=5) == []
    assert not staging[0].exists()


def test_version_folder_without_manifest_is_never_listed_served_or_reused(
    store: ModelStore, bundle: Path
) -> None:
    store.publish(NAME, bundle)
    partial = store.root / NAME / "2"
    shutil.copytree(store.root / NAME / "1", partial)
    (partial / "manifest.json").unlink()
    assert store.versions(NAME) == [1]
    with pytest.raises(IncompleteVersion):
        store.verify(NAME, 2)
    with pytest.raises(IncompleteVersion):
        store.set_latest(NAME, 2)
    assert store.publish(NAME, bundle) == 3
    assert store.versions(NAME) == [1, 3]


def test_version_missing_a_listed_file_is_refused(store: ModelStore, bundle: Path) -> None:
    store.publish(NAME, bundle)
    (store.root / NAME / "1" / "items.jsonl").unlink()
    with pytest.raises(IncompleteVersion, match=r"items\.jsonl"):
        store.verify(NAME, 1)


def test_copied_version_whose_manifest_names_another_version_is_refused(
    store: ModelStore, bundle: Path
) -> None:
    store.publish(NAME, bundle)
    shutil.copytree(store.root / NAME / "1", store.root / NAME / "7")
    assert store.versions(NAME) == [1]
    with pytest.raises(ManifestError, match="v1"):
        store.verify(NAME, 7)


@pytest.mark.parametrize("where", ["first", "middle", "last"])
@pytest.mark.parametrize("filename", BUNDLE_FILES)
def test_a_flipped_byte_in_any_bundle_file_is_refused(
    store: ModelStore, bundle: Path, filename: str, where: str
) -> None:
    store.publish(NAME, bundle)
    path = store.root / NAME / "1" / filename
    size = path.stat().st_size
    flip_byte(path, {"first": 0, "middle": size // 2, "last": size - 1}[where])
    with pytest.raises(ChecksumMismatch, match=filename.replace(".", r"\.")):
        store.verify(NAME, 1)


def test_a_flipped_byte_in_the_manifest_is_refused(store: ModelStore, bundle: Path) -> None:
    store.publish(NAME, bundle)
    manifest = store.root / NAME / "1" / "manifest.json"
    text = manifest.read_text()
    digest = json.loads(text)["files"]["encoder.onnx"]
    tampered = digest[:-1] + ("0" if digest[-1] != "0" else "1")
    manifest.write_text(text.replace(digest, tampered))
    with pytest.raises(ChecksumMismatch, match=r"encoder\.onnx"):
        store.verify(NAME, 1)
    manifest.write_text(text.replace("{", "[", 1))
    with pytest.raises(ManifestError):
        store.verify(NAME, 1)
    assert store.versions(NAME) == []


def test_unlisted_file_in_a_version_folder_is_refused(store: ModelStore, bundle: Path) -> None:
    store.publish(NAME, bundle)
    (store.root / NAME / "1" / "encoder.onnx.data").write_bytes(b"weights")
    with pytest.raises(UnsafeArtifact, match="not in the manifest"):
        store.verify(NAME, 1)


def test_symlinked_bundle_file_is_refused_even_with_matching_content(
    store: ModelStore, bundle: Path, tmp_path: Path
) -> None:
    store.publish(NAME, bundle)
    target = store.root / NAME / "1" / "item_embeddings.npy"
    outside = tmp_path / "outside.npy"
    shutil.copy(target, outside)
    target.unlink()
    target.symlink_to(outside)
    with pytest.raises(UnsafeArtifact, match="symlink"):
        store.verify(NAME, 1)


def test_symlinked_version_or_model_folder_escaping_the_root_is_refused(
    store: ModelStore, bundle: Path, tmp_path: Path
) -> None:
    store.publish(NAME, bundle)
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(store.root / NAME / "1", elsewhere / "2")
    manifest = elsewhere / "2" / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"version": 1', '"version": 2'))
    (store.root / NAME / "2").symlink_to(elsewhere / "2")
    assert store.versions(NAME) == [1]
    with pytest.raises(UnsafeArtifact, match="symlink"):
        store.verify(NAME, 2)
    (store.root / "evil").symlink_to(elsewhere, target_is_directory=True)
    assert store.models() == [NAME]
    with pytest.raises(UnsafeArtifact, match="symlink"):
        store.versions("evil")


BAD_NAMES = [
    "",
    "..",
    ".",
    "../etc",
    "/etc",
    "a/b",
    "CineSync",
    "-x",
    "_x",
    "x" * 65,
    "http://evil.example/m",
    "cinesync\n",
    "cine sync",
    "ciné",
    "cinesync/../x",
]
BAD_VERSIONS: list[object] = [
    "007",
    "0",
    "../../etc",
    "/etc/passwd",
    "-1",
    "1e3",
    "",
    " 1",
    "1\n",
    "1.0",
    "https://evil.example/3",
    "٣",
    0,
    -1,
    True,
    1.5,
    10**18,
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_malformed_model_names_are_refused_everywhere(
    store: ModelStore, bundle: Path, name: str
) -> None:
    for call in (
        lambda: store.versions(name),
        lambda: store.latest(name),
        lambda: store.verify(name, 1),
        lambda: store.publish(name, bundle),
        lambda: store.rollback(name),
        lambda: store.prune(name, 1),
    ):
        with pytest.raises(InvalidName, match="invalid model name"):
            call()
    assert not store.root.exists()


@pytest.mark.parametrize("version", BAD_VERSIONS)
def test_malformed_versions_are_refused_everywhere(
    store: ModelStore, bundle: Path, version: object
) -> None:
    store.publish(NAME, bundle)
    for call in (
        lambda: store.verify(NAME, version),
        lambda: store.manifest(NAME, version),
        lambda: store.set_latest(NAME, version),
        lambda: store.rollback(NAME, version),
    ):
        with pytest.raises(InvalidName, match="invalid version"):
            call()
    assert store.latest(NAME) == 1


def test_garbage_in_latest_reads_as_no_latest(store: ModelStore, bundle: Path) -> None:
    store.publish(NAME, bundle)
    for garbage in ("../../etc/passwd", "007", "", "\xff"):
        (store.root / NAME / "LATEST").write_text(garbage)
        assert store.latest(NAME) is None
    (store.root / NAME / "LATEST").write_text("1\n")
    assert store.latest(NAME) == 1


def test_concurrent_threads_publish_distinct_versions(store: ModelStore, bundle: Path) -> None:
    barrier = threading.Barrier(6)
    results: list[int] = []
    errors: list[BaseException] = []

    def publish() -> None:
        barrier.wait()
        try:
            results.append(store.publish(NAME, bundle))
        except StoreError as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=publish) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert sorted(results) == [1, 2, 3, 4, 5, 6]
    assert store.versions(NAME) == [1, 2, 3, 4, 5, 6]
    assert store.latest(NAME) == 6
    for version in results:
        store.verify(NAME, version)


def test_concurrent_processes_publish_distinct_versions(store: ModelStore, bundle: Path) -> None:
    script = (
        "import sys\nfrom pathlib import Path\nfrom model_store import ModelStore\n"
        "print(ModelStore(Path(sys.argv[1])).publish('cinesync', Path(sys.argv[2])))\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(store.root), str(bundle)],
            cwd=REPO,
            stdout=subprocess.PIPE,
        )
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=60)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0]
    assert sorted(int(out) for out in outputs) == [1, 2, 3]
    assert store.versions(NAME) == [1, 2, 3]


def test_rollback_steps_back_over_incomplete_versions(store: ModelStore, bundle: Path) -> None:
    for _ in range(4):
        store.publish(NAME, bundle)
    (store.root / NAME / "3" / "manifest.json").unlink()
    assert store.rollback(NAME) == 2
    assert store.latest(NAME) == 2
    assert store.rollback(NAME) == 1
    with pytest.raises(VersionNotFound, match="older than 1"):
        store.rollback(NAME)
    assert store.rollback(NAME, to=4) == 4
    with pytest.raises(IncompleteVersion):
        store.rollback(NAME, to=3)
    with pytest.raises(VersionNotFound):
        store.rollback(NAME, to=9)
    assert store.latest(NAME) == 4


def test_rollback_refuses_a_corrupted_target_and_keeps_latest(
    store: ModelStore, bundle: Path
) -> None:
    store.publish(NAME, bundle)
    store.publish(NAME, bundle)
    flip_byte(store.root / NAME / "1" / "encoder.onnx", 3)
    with pytest.raises(ChecksumMismatch):
        store.rollback(NAME)
    assert store.latest(NAME) == 2


def test_prune_keeps_the_newest_and_latest_and_never_reuses_numbers(
    store: ModelStore, bundle: Path
) -> None:
    for _ in range(5):
        store.publish(NAME, bundle)
    store.rollback(NAME, to=1)
    stale = store.root / NAME / ".staging-deadbeef"
    stale.mkdir()
    (stale / "encoder.onnx").write_bytes(b"half")
    assert store.prune(NAME, keep=2) == [2, 3]
    assert store.versions(NAME) == [1, 4, 5]
    assert store.latest(NAME) == 1
    assert not stale.exists()
    assert [p.name for p in (store.root / NAME).iterdir() if p.name.startswith(".")] == [".lock"]
    assert store.prune(NAME, keep=2) == []
    assert store.publish(NAME, bundle) == 6
    with pytest.raises(StoreError, match="keep"):
        store.prune(NAME, keep=0)


def test_publish_refuses_links_folders_and_bad_bundle_json_without_writing(
    store: ModelStore, tmp_path: Path
) -> None:
    cases = {}
    cases["symlink"] = make_fake_bundle(tmp_path / "a")
    (cases["symlink"] / "extra.npy").symlink_to(tmp_path / "a" / "item_embeddings.npy")
    cases["folder"] = make_fake_bundle(tmp_path / "b")
    (cases["folder"] / "sub").mkdir()
    cases["no bundle.json"] = make_fake_bundle(tmp_path / "c")
    (cases["no bundle.json"] / "bundle.json").unlink()
    cases["bad bundle.json"] = make_fake_bundle(tmp_path / "d", model={"kind": "sasrec"})
    cases["reserved name"] = make_fake_bundle(tmp_path / "e")
    (cases["reserved name"] / "manifest.json").write_text("{}")
    cases["hidden file"] = make_fake_bundle(tmp_path / "f")
    (cases["hidden file"] / ".secret").write_text("x")
    for case, folder in cases.items():
        with pytest.raises(StoreError):
            store.publish(NAME, folder)
        assert store.versions(NAME) == [], case
    assert not (store.root / NAME).exists() or os.listdir(store.root / NAME) in ([], [".lock"])


def test_verified_bundle_gives_paths_only_for_listed_files(store: ModelStore, bundle: Path) -> None:
    store.publish(NAME, bundle)
    verified = store.verify(NAME, 1)
    for name in ("manifest.json", "../1/encoder.onnx", "/etc/passwd", "bundle.json"):
        with pytest.raises(StoreError, match="not a file of"):
            verified.path(name)
    assert verified.read_bytes("encoder.onnx") == (bundle / "encoder.onnx").read_bytes()
    flip_byte(verified.path("encoder.onnx"), 0)
    with pytest.raises(ChecksumMismatch, match="changed on disk"):
        verified.read_bytes("encoder.onnx")
