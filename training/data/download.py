"""Fetch MovieLens 100K from GroupLens, verify its published checksums, extract it safely.

Checksums of ml-100k.zip (4,924,029 bytes): the md5 that GroupLens publishes next to the archive
(ml-100k.zip.md5) and the sha256 that independent projects pin for the same file. The sha256 of
the files inside it (u.data, u.item, u.user, u.genre) are pinned too: an existing ml-100k folder
is used only when they match, so a truncated or edited file is refused rather than loaded.

Extraction goes into a temporary folder inside the data dir that is renamed into place only once
complete: a failed extraction (disk full, interrupted) never leaves a folder that looks usable.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
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
    """A zip to download. `files`: (name, sha256) of files inside its extracted folder, checked
    after extraction and every time an existing folder is reused (empty: only u.data must exist)."""

    url: str
    sha256: str | None = None
    md5: str | None = None
    max_bytes: int = 64 * 1024 * 1024
    files: tuple[tuple[str, str], ...] = ()


ML100K = Archive(
    url="https://files.grouplens.org/datasets/movielens/ml-100k.zip",
    sha256="50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
    md5="0e33842e24a9c977be4e0107933c0723",
    files=(
        ("u.data", "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490"),
        ("u.item", "553841ebc7de3a0fd0d6b62a204ea30c1e651aacfb2814c7a6584ac52f2c5701"),
        ("u.user", "f120e114da2e8cf314fd28f99417c94ae9ddf1cb6db8ce0e4b5995d40e90e62c"),
        ("u.genre", "9757e0d3e6b298159a80dd48eaf938114690e911e39af97a76949ef1663610bb"),
    ),
)
FOLDER = "ml-100k"
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
    except (urllib.error.URLError, http.client.HTTPException, OSError, TimeoutError) as exc:
        raise DataError(f"{archive.url}: download failed ({exc})") from exc


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def verify_folder(
    folder: Path, archive: Archive, advice: str | None = None, shown: Path | None = None
) -> None:
    """Raise DataError unless every file the archive pins exists in folder with its sha256.
    `advice` ends the message (default: delete the folder to download it again); `shown` is the
    folder the message names (a temporary extraction folder is gone when the user reads it)."""
    advice = advice or f"delete the folder {folder} to download it again"
    for name, expected in archive.files:
        path, label = folder / name, (shown or folder) / name
        if not path.is_file():
            raise DataError(f"{label}: missing ({shown or folder} is incomplete); {advice}")
        try:
            actual = _sha256(path)
        except OSError as exc:
            raise DataError(f"{label}: cannot read ({exc}); {advice}") from exc
        if actual != expected.lower():
            raise DataError(
                f"{label}: sha256 checksum mismatch (expected {expected}, got {actual}): "
                f"the file is truncated or modified; {advice}"
            )


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


def download_and_extract(
    archive: Archive, data_dir: Path, folder: str = FOLDER, timeout: float = 60.0
) -> Path:
    """Download archive into data_dir (via a temp file), verify it, extract it into a temporary
    folder there, verify the files it pins and only then rename <folder> into data_dir/<folder>.
    Any failure leaves data_dir/<folder> absent and no temporary file or folder behind."""
    target = data_dir / folder
    tmp: Path | None = None
    staging: Path | None = None
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=".download-", suffix=".zip", dir=data_dir)
        os.close(fd)
        tmp = Path(tmp_name)
        _fetch(archive, tmp, timeout)
        verify(tmp, archive)
        staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=data_dir))
        try:
            _extract(tmp, staging)
        except zipfile.BadZipFile as exc:
            raise DataError(f"{archive.url}: not a valid zip archive ({exc})") from exc
        extracted = staging / folder
        if not (extracted / "u.data").is_file():
            raise DataError(f"{archive.url}: the archive has no {folder}/u.data")
        verify_folder(extracted, archive, advice=f"{archive.url} was refused", shown=target)
        try:
            os.replace(extracted, target)
        except OSError:
            if not (target / "u.data").is_file():  # else: another process installed it first
                raise
            verify_folder(target, archive)
        with contextlib.suppress(OSError):  # keeping the zip is a convenience, not a requirement
            os.replace(tmp, data_dir / Path(archive.url).name)
    except OSError as exc:
        raise DataError(
            f"{archive.url}: download or extraction into {data_dir} failed ({exc})"
        ) from exc
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def ensure_ml100k(
    data_dir: Path, archive: Archive = ML100K, allow_download: bool | None = None
) -> Path:
    """Return <data_dir>/ml-100k, downloading it first when missing and downloads are allowed.
    An existing folder is used only when it holds u.data and every file the archive pins matches
    its sha256; otherwise DataError says which file is wrong and to delete the folder."""
    target = data_dir / FOLDER
    if target.exists():
        if not (target / "u.data").is_file():
            raise DataError(
                f"{target / 'u.data'}: missing ({target} is incomplete); delete the folder "
                f"{target} to download it again, or unzip {archive.url} into {data_dir}"
            )
        verify_folder(target, archive)
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
        return download_and_extract(archive, data_dir)
    except DataError as exc:
        raise DataError(f"{exc}. {where}") from exc
