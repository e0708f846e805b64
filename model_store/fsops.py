"""Low-level file operations of the store: no-follow reads, streamed hashing, fsync, locking."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

from model_store.errors import StoreError, UnsafeArtifact

CHUNK = 1 << 20
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC


def describe(exc: OSError) -> str:
    """An OSError as "Permission denied: /path" (its errno number left out)."""
    if not exc.strerror:
        return str(exc)
    names = [str(n) for n in (exc.filename, exc.filename2) if n is not None]
    return f"{exc.strerror}: {' -> '.join(names)}" if names else exc.strerror


@contextlib.contextmanager
def store_errors(doing: str, *, refusals: bool = False) -> Iterator[None]:
    """Turn an OSError inside the block into a StoreError: "<doing> failed: <what the OS said>".
    With `refusals`, a StoreError raised inside gets the same prefix (and keeps its type)."""
    try:
        yield
    except OSError as exc:
        raise StoreError(f"{doing} failed: {describe(exc)}") from exc
    except StoreError as exc:
        if not refusals:
            raise
        raise type(exc)(f"{doing} failed: {exc}") from exc


def open_regular(path: Path) -> int:
    """Open a regular file for reading without following a symlink; return the descriptor."""
    try:
        fd = os.open(path, _READ_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeArtifact(f"{path.name} is a symlink; the store refuses links") from exc
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnsafeArtifact(f"{path.name} is not a regular file")
    return fd


def read_small(path: Path, limit: int) -> bytes:
    """Read a whole regular file of at most `limit` bytes (manifest, LATEST, bundle.json)."""
    fd = open_regular(path)
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise UnsafeArtifact(f"{path.name} is larger than {limit} bytes")
    return data


def sha256_file(path: Path) -> str:
    """The sha256 (hex) of a regular file, streamed in 1 MiB chunks."""
    digest = hashlib.sha256()
    with os.fdopen(open_regular(path), "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def copy_with_hash(src: Path, dst: Path) -> str:
    """Copy a regular file to a new file (never overwriting), fsync it; return its sha256."""
    digest = hashlib.sha256()
    out_fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    with os.fdopen(open_regular(src), "rb") as fin, os.fdopen(out_fd, "wb") as fout:
        while chunk := fin.read(CHUNK):
            digest.update(chunk)
            fout.write(chunk)
        fout.flush()
        os.fsync(fout.fileno())
    return digest.hexdigest()


def write_new(path: Path, data: bytes) -> None:
    """Create a new file with `data` and fsync it (fails if the file exists)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def fsync_dir(path: Path) -> None:
    """fsync a directory so that renames and new entries in it are durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_atomically(path: Path, data: bytes) -> None:
    """Write `data` to a temp file beside `path`, fsync, os.replace it over `path`, fsync dir."""
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")
    try:
        write_new(tmp, data)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    fsync_dir(path.parent)


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on `path` (created if needed); works across threads and processes."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
