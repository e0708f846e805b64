"""Fetch MovieLens 100K from GroupLens, verify its published checksums, extract it safely.

Checksums of ml-100k.zip (4,924,029 bytes): the md5 that GroupLens publishes next to the archive
(ml-100k.zip.md5) and the sha256 that independent projects pin for the same file.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from training.errors import DataError


@dataclass(frozen=True)
class Archive:
    url: str
    sha256: str | None = None
    md5: str | None = None
    max_bytes: int = 64 * 1024 * 1024


ML100K = Archive(
    url="https://files.grouplens.org/datasets/movielens/ml-100k.zip",
    sha256="50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
    md5="0e33842e24a9c977be4e0107933c0723",
)
OFFLINE_ENV = "CINESYNC_OFFLINE"


def downloads_allowed() -> bool:
    """False when CINESYNC_OFFLINE is set to anything but '', '0' or 'false'."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("", "0", "false", "no")


def _fetch(archive: Archive, dest: Path, timeout: float) -> None:
    try:
        with (
            urllib.request.urlopen(archive.url, timeout=timeout) as response,
            dest.open("wb") as out,
        ):
            total = 0
            while chunk := response.read(1 << 20):
                total += len(chunk)
                if total > archive.max_bytes:
                    raise DataError(
                        f"{archive.url}: larger than {archive.max_bytes} bytes; refused"
                    )
                out.write(chunk)
    except urllib.error.HTTPError as exc:
        exc.close()
        raise DataError(f"{archive.url}: download failed (HTTP {exc.code} {exc.reason})") from exc
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise DataError(f"{archive.url}: download failed ({exc})") from exc


def verify(path: Path, archive: Archive) -> None:
    """Raise DataError unless every checksum the archive declares matches the file."""
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
            md5.update(chunk)
    for kind, expected, actual in (
        ("sha256", archive.sha256, sha.hexdigest()),
        ("md5", archive.md5, md5.hexdigest()),
    ):
        if expected is not None and actual != expected.lower():
            raise DataError(
                f"{archive.url}: {kind} checksum mismatch (expected {expected}, got {actual}); "
                f"the download was refused and deleted"
            )


def _extract(path: Path, target: Path) -> None:
    """Extract into target, refusing members that would land outside it."""
    root = target.resolve()
    with zipfile.ZipFile(path) as zf:
        for member in zf.infolist():
            dest = (root / member.filename).resolve()
            if not dest.is_relative_to(root):
                raise DataError(f"{path}: unsafe member path {member.filename!r}; refused")
        zf.extractall(root)


def download_and_extract(archive: Archive, data_dir: Path, timeout: float = 60.0) -> None:
    """Download archive into data_dir (atomically, via a temp file), verify, then extract there."""
    data_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".download-", suffix=".zip", dir=data_dir)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        _fetch(archive, tmp, timeout)
        verify(tmp, archive)
        try:
            _extract(tmp, data_dir)
        except zipfile.BadZipFile as exc:
            raise DataError(f"{archive.url}: not a valid zip archive ({exc})") from exc
        shutil.move(tmp, data_dir / Path(archive.url).name)
    finally:
        tmp.unlink(missing_ok=True)


def ensure_ml100k(
    data_dir: Path, archive: Archive = ML100K, allow_download: bool | None = None
) -> Path:
    """Return <data_dir>/ml-100k, downloading it first when missing and downloads are allowed."""
    target = data_dir / "ml-100k"
    if (target / "u.data").is_file():
        return target
    where = (
        f"MovieLens 100K was not found at {target}. Download "
        f"{archive.url}, unzip it into {data_dir} (so that {target / 'u.data'} exists), "
        f"or point --data-dir / CINESYNC_DATA_DIR at a folder that holds ml-100k/"
    )
    if allow_download is None:
        allow_download = downloads_allowed()
    if not allow_download:
        raise DataError(f"{where} (downloads are disabled: {OFFLINE_ENV} is set)")
    try:
        download_and_extract(archive, data_dir)
    except DataError as exc:
        raise DataError(f"{exc}. {where}") from exc
    if not (target / "u.data").is_file():
        raise DataError(f"{archive.url}: the archive has no ml-100k/u.data. {where}")
    return target
