"""Reading and verifying one version folder: manifest first, then every checksum, nothing else."""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from model_store.errors import (
    ChecksumMismatch,
    IncompleteVersion,
    ManifestError,
    StoreError,
    UnsafeArtifact,
    VersionNotFound,
)
from model_store.fsops import describe, open_regular, read_small, sha256_file, store_errors
from model_store.manifest import Manifest, parse_manifest

MANIFEST = "manifest.json"
MANIFEST_MAX_BYTES = 1 << 20


@dataclass(frozen=True)
class VerifiedBundle:
    """A version whose files all matched their manifest checksums when verified."""

    name: str
    version: int
    manifest: Manifest
    directory: Path

    def path(self, filename: str) -> Path:
        """The path of a file the manifest lists; any other name raises StoreError."""
        if filename not in self.manifest.files:
            raise StoreError(
                f"{filename!r} is not a file of {self.name} version {self.version} "
                f"(listed: {', '.join(sorted(self.manifest.files))})"
            )
        return self.directory / filename

    def read_bytes(self, filename: str) -> bytes:
        """A listed file's bytes, re-checked against its sha256 (e.g. for ONNX Runtime).
        A file gone since verification (a concurrent prune) raises VersionNotFound or
        IncompleteVersion; any other OSError a StoreError."""
        path = self.path(filename)
        label = f"{filename} of {self.name} v{self.version}"
        try:
            with os.fdopen(open_regular(path), "rb") as fh:
                data = fh.read()
        except FileNotFoundError as exc:
            if not os.path.isdir(self.directory):
                raise VersionNotFound(
                    f"{self.name} v{self.version} was removed (pruned?) after it was verified"
                ) from exc
            raise IncompleteVersion(f"{label} was removed after it was verified") from exc
        except OSError as exc:
            raise StoreError(f"reading {label} failed: {describe(exc)}") from exc
        if hashlib.sha256(data).hexdigest() != self.manifest.files[filename]:
            raise ChecksumMismatch(f"{filename} of {self.name} v{self.version} changed on disk")
        return data


def read_manifest(directory: Path, name: str, version: int) -> Manifest:
    """Parse a version folder's manifest; it must name this model and version."""
    if not os.path.isdir(directory) or os.path.islink(directory):
        raise VersionNotFound(f"{name} version {version} does not exist")
    try:
        data = read_small(directory / MANIFEST, MANIFEST_MAX_BYTES)
    except FileNotFoundError as exc:
        raise IncompleteVersion(
            f"{name} version {version} has no {MANIFEST} (an unfinished or damaged publish)"
        ) from exc
    except OSError as exc:
        raise StoreError(f"reading {name} v{version} {MANIFEST} failed: {describe(exc)}") from exc
    manifest = parse_manifest(data, f"{name} v{version} {MANIFEST}")
    if manifest.name != name or manifest.version != version:
        raise ManifestError(
            f"{name} version {version}: its manifest says {manifest.name} v{manifest.version}"
        )
    return manifest


def verify_directory(directory: Path, name: str, version: int) -> VerifiedBundle:
    """Check the folder holds exactly the listed regular files with matching sha256."""
    manifest = read_manifest(directory, name, version)
    with store_errors(f"verifying {name} v{version}"):
        _check_files(directory, name, version, manifest)
    return VerifiedBundle(name=name, version=version, manifest=manifest, directory=directory)


def _check_files(directory: Path, name: str, version: int, manifest: Manifest) -> None:
    """Exactly the listed regular files, each matching its sha256 in the manifest."""
    present: set[str] = set()
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.name == MANIFEST:
                continue
            mode = entry.stat(follow_symlinks=False).st_mode
            if not stat.S_ISREG(mode):
                kind = "a symlink" if stat.S_ISLNK(mode) else "not a regular file"
                raise UnsafeArtifact(f"{name} v{version}: {entry.name} is {kind}")
            if entry.name not in manifest.files:
                raise UnsafeArtifact(f"{name} v{version}: {entry.name} is not in the manifest")
            present.add(entry.name)
    missing = sorted(set(manifest.files) - present)
    if missing:
        raise IncompleteVersion(f"{name} v{version} is missing {', '.join(missing)}")
    for filename, expected in sorted(manifest.files.items()):
        if sha256_file(directory / filename) != expected:
            raise ChecksumMismatch(
                f"{name} v{version}: {filename} does not match its sha256 in the manifest"
            )
