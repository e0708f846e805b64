"""Publishing a bundle folder as the next version: staging copy, manifest last, atomic rename."""

from __future__ import annotations

import os
import shutil
import stat
import uuid
from pathlib import Path

from model_store.errors import ManifestError, StoreError, UnsafeArtifact
from model_store.fsops import copy_with_hash, fsync_dir, read_small, write_new
from model_store.manifest import BundleInfo, Manifest, parse_bundle_info, utc_now
from model_store.validation import VERSION_RE, validate_file_name
from model_store.verified import MANIFEST

BUNDLE_INFO = "bundle.json"
BUNDLE_INFO_MAX_BYTES = 16 << 20
STAGING_PREFIX = ".staging-"


def read_bundle(bundle_dir: Path) -> tuple[BundleInfo, list[str]]:
    """Validate a bundle folder: bundle.json plus only plain regular files; no links, no folders."""
    if not bundle_dir.is_dir():
        raise StoreError(f"bundle folder {bundle_dir} does not exist or is not a folder")
    try:
        info = parse_bundle_info(read_small(bundle_dir / BUNDLE_INFO, BUNDLE_INFO_MAX_BYTES))
    except FileNotFoundError as exc:
        raise ManifestError(f"{bundle_dir} has no {BUNDLE_INFO}") from exc
    names: list[str] = []
    with os.scandir(bundle_dir) as entries:
        for entry in entries:
            mode = entry.stat(follow_symlinks=False).st_mode
            if stat.S_ISLNK(mode):
                raise UnsafeArtifact(f"bundle file {entry.name} is a symlink; copy the file in")
            if not stat.S_ISREG(mode):
                raise UnsafeArtifact(f"bundle entry {entry.name} is not a regular file")
            if entry.name != BUNDLE_INFO:
                names.append(validate_file_name(entry.name))
    if not names:
        raise StoreError(f"bundle folder {bundle_dir} holds no files besides {BUNDLE_INFO}")
    return info, sorted(names)


def next_version(model_dir: Path, latest: int | None) -> int:
    """One more than any number in use: every numeric folder (complete or not) and LATEST."""
    used = [int(p.name) for p in model_dir.iterdir() if VERSION_RE.fullmatch(p.name)]
    return max([0, *used, *([latest] if latest is not None else [])]) + 1


def stage_and_rename(
    model_dir: Path, name: str, version: int, bundle_dir: Path, info: BundleInfo, files: list[str]
) -> Path:
    """Copy into a fresh staging folder, write the manifest last, rename it to `version`."""
    target = model_dir / str(version)
    if os.path.lexists(target):
        raise StoreError(f"{target} already exists; refusing to overwrite a version")
    staging = model_dir / f"{STAGING_PREFIX}{uuid.uuid4().hex}"
    staging.mkdir()
    try:
        digests = {f: copy_with_hash(bundle_dir / f, staging / f) for f in files}
        manifest = Manifest.from_bundle(
            info, name=name, version=version, files=digests, created_at=utc_now()
        )
        write_new(staging / MANIFEST, manifest.to_json())
        fsync_dir(staging)
        os.rename(staging, target)
        fsync_dir(model_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
