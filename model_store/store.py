"""ModelStore: list, read, verify, publish, roll back and prune versioned model bundles."""

from __future__ import annotations

import logging
import os
import shutil
import stat
import uuid
from pathlib import Path

from model_store.errors import StoreError, UnsafeArtifact, VersionNotFound
from model_store.fsops import (
    describe,
    exclusive_lock,
    fsync_dir,
    read_small,
    replace_atomically,
    store_errors,
)
from model_store.manifest import Manifest
from model_store.publish import STAGING_PREFIX, next_version, read_bundle, stage_and_rename
from model_store.validation import (
    MODEL_NAME_RE,
    VERSION_RE,
    validate_model_name,
    validate_version,
)
from model_store.verified import VerifiedBundle, read_manifest, verify_directory

log = logging.getLogger(__name__)

LATEST = "LATEST"
LOCK = ".lock"
TRASH_PREFIX = ".trash-"


class ModelStore:
    """A folder of `<name>/<version>/` bundles with a `<name>/LATEST` pointer (see README).

    Every public method raises StoreError (or a subclass) for a refusal or a file-system error,
    never a bare OSError. Only `publish` creates folders; the other writers need the model's
    folder to exist already (VersionNotFound "no model ..." otherwise).
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # -- paths: every one is a validated component under the resolved root, never a symlink --
    def _root(self) -> Path:
        return Path(os.path.realpath(self.root))

    def _model_dir(self, name: str) -> Path:
        root = self._root()
        path = root / validate_model_name(name)
        if os.path.islink(path) or not Path(os.path.realpath(path)).is_relative_to(root):
            raise UnsafeArtifact(f"model folder {name} is a symlink; the store refuses links")
        return path

    def _version_dir(self, name: str, version: int) -> Path:
        model_dir = self._model_dir(name)
        path = model_dir / str(validate_version(version))
        if os.path.islink(path) or not Path(os.path.realpath(path)).is_relative_to(model_dir):
            raise UnsafeArtifact(f"{name} version {version} is a symlink; the store refuses links")
        return path

    def _existing_model_dir(self, name: str) -> Path:
        """The model's folder, which must exist: nothing is created for a missing store or model."""
        model_dir = self._model_dir(name)
        root = model_dir.parent
        if not root.is_dir():
            if os.path.lexists(root):
                raise StoreError(f"store {self.root} is not a folder")
            raise VersionNotFound(f"no model {name!r} in {self.root}: the store does not exist")
        if not model_dir.is_dir():
            if os.path.lexists(model_dir):
                raise StoreError(
                    f"{self.root / name} is not a folder (a model is a folder of versions)"
                )
            raise VersionNotFound(f"no model {name!r} in {self.root}")
        return model_dir

    # -- reading --
    def models(self) -> list[str]:
        """Model names that have a folder in the store, sorted."""
        root = self._root()
        if not root.is_dir():
            return []
        with store_errors(f"listing the models in {self.root}"):
            return sorted(
                p.name
                for p in root.iterdir()
                if MODEL_NAME_RE.fullmatch(p.name) and stat.S_ISDIR(p.lstat().st_mode)
            )

    def versions(self, name: str) -> list[int]:
        """Complete versions (manifest present, valid and matching), ascending."""
        model_dir = self._model_dir(name)
        if not model_dir.is_dir():
            return []
        with store_errors(f"listing the versions of {name!r} in {self.root}"):
            entries = list(model_dir.iterdir())
        found = []
        for entry in entries:
            if not VERSION_RE.fullmatch(entry.name):
                continue
            try:
                read_manifest(self._version_dir(name, int(entry.name)), name, int(entry.name))
            except StoreError as exc:
                if type(exc) is StoreError:  # the file system failed (EIO, EACCES): not a
                    raise  # refusal of the version, and prune must not decide without it
                log.debug("not listing %s/%s: %s", name, entry.name, exc)
                continue
            found.append(int(entry.name))
        return sorted(found)

    def latest(self, name: str) -> int | None:
        """The version in LATEST; None when the store, the model or LATEST is missing or LATEST
        does not hold a valid version; StoreError when it cannot be read (e.g. not a folder)."""
        path = self._model_dir(name) / LATEST
        try:
            text = read_small(path, 64).decode("ascii").strip()
            return validate_version(text)
        except FileNotFoundError:
            return None
        except NotADirectoryError as exc:
            self._existing_model_dir(name)  # raises "... is not a folder"
            raise StoreError(f"reading {path} failed: {describe(exc)}") from exc
        except OSError as exc:
            raise StoreError(f"reading {path} failed: {describe(exc)}") from exc
        except (StoreError, UnicodeDecodeError) as exc:
            log.warning("ignoring unreadable %s for model %s: %s", LATEST, name, exc)
            return None

    def manifest(self, name: str, version: int) -> Manifest:
        """The parsed, validated manifest of a version (checksums are not checked)."""
        return read_manifest(self._version_dir(name, version), name, validate_version(version))

    def verify(self, name: str, version: int) -> VerifiedBundle:
        """Check every file's sha256 against the manifest before anything is deserialised."""
        return verify_directory(self._version_dir(name, version), name, validate_version(version))

    # -- writing: every change holds the model's lock (<name>/.lock) --
    def _create_model_dir(self, model_dir: Path) -> None:
        """Create the store and model folders if needed; fsync each parent of a new folder."""
        root = model_dir.parent
        if not root.is_dir():
            if os.path.lexists(root):
                raise StoreError(f"store {self.root} is not a folder")
            root.mkdir(parents=True, exist_ok=True)
            fsync_dir(root.parent)
        try:
            model_dir.mkdir()
        except FileExistsError:
            self._existing_model_dir(model_dir.name)  # raises when it is not a folder
            return
        fsync_dir(root)

    def publish(self, name: str, bundle_dir: Path, *, set_latest: bool = True) -> int:
        """Publish `bundle_dir` as the next version and (by default) point LATEST at it."""
        with store_errors(f"publishing {bundle_dir} as {name!r}", refusals=True):
            model_dir = self._model_dir(name)
            info, files = read_bundle(Path(bundle_dir))
            self._create_model_dir(model_dir)
            with exclusive_lock(model_dir / LOCK):
                version = next_version(model_dir, self.latest(name))
                stage_and_rename(model_dir, name, version, Path(bundle_dir), info, files)
                if set_latest:
                    self._write_latest(model_dir, version)
        log.info("published %s version %d", name, version)
        return version

    def _write_latest(self, model_dir: Path, version: int) -> None:
        replace_atomically(model_dir / LATEST, f"{version}\n".encode("ascii"))

    def set_latest(self, name: str, version: int) -> None:
        """Point LATEST at an existing version after verifying it."""
        model_dir = self._existing_model_dir(name)
        with (
            store_errors(f"setting LATEST of {name!r} in {self.root}"),
            exclusive_lock(model_dir / LOCK),
        ):
            self.verify(name, version)
            self._write_latest(model_dir, validate_version(version))

    def rollback(self, name: str, to: int | None = None) -> int:
        """Point LATEST at `to`, or at the newest complete version older than LATEST."""
        model_dir = self._existing_model_dir(name)
        with (
            store_errors(f"rolling back {name!r} in {self.root}"),
            exclusive_lock(model_dir / LOCK),
        ):
            if to is None:
                current = self.latest(name)
                if current is None:
                    raise VersionNotFound(f"{name} has no valid LATEST to roll back from")
                older = [v for v in self.versions(name) if v < current]
                if not older:
                    raise VersionNotFound(f"{name} has no complete version older than {current}")
                to = older[-1]
            self.verify(name, to)
            self._write_latest(model_dir, validate_version(to))
        log.info("LATEST of %s now %d", name, to)
        return to

    def prune(self, name: str, keep: int) -> list[int]:
        """Delete complete versions beyond the newest `keep` (never LATEST) and stale staging."""
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise StoreError(f"keep must be an integer >= 1, got {keep!r}")
        model_dir = self._existing_model_dir(name)
        with store_errors(f"pruning {name!r} in {self.root}"), exclusive_lock(model_dir / LOCK):
            complete = self.versions(name)
            kept = set(complete[-keep:]) | {self.latest(name)}
            doomed = [v for v in complete if v not in kept]
            for version in doomed:
                trash = model_dir / f"{TRASH_PREFIX}{uuid.uuid4().hex}"
                os.rename(self._version_dir(name, version), trash)
                shutil.rmtree(trash)
            for leftover in model_dir.iterdir():
                if leftover.name.startswith((STAGING_PREFIX, TRASH_PREFIX)):
                    shutil.rmtree(leftover)
            fsync_dir(model_dir)
        return doomed
