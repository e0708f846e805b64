"""MovieLens 100K download: served from a local loopback HTTP server, checksums enforced."""

from __future__ import annotations

import errno
import hashlib
import http.server
import shutil
import threading
import zipfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from training.data import resolve_data_dir
from training.data.download import ML100K, Archive, ensure_ml100k
from training.data.movielens import load_ml100k
from training.errors import DataError

FILES = {
    "ml-100k/u.data": "1\t10\t4\t881250949\n2\t10\t3\t881250950\n1\t20\t5\t881250951\n",
    "ml-100k/u.item": "10|Caf\xe9 (1995)|01-Jan-1995||http://x|0|1|0\n20|Other|||http://y|1|0|1\n",
    "ml-100k/u.genre": "unknown|0\nAction|1\nDrama|2\n\n",
    "ml-100k/u.user": "1|24|M|technician|85711\n2|53|F|other|94043\n",
}


def _zip(path: Path, files: dict[str, str]) -> str:
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text.encode("latin-1"))
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A loopback HTTP server over tmp_path/www; yields (base url, folder)."""
    www = tmp_path / "www"
    www.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", www
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_download_with_good_checksum_is_extracted_and_loads(
    served: tuple[str, Path], tmp_path: Path
) -> None:
    base, www = served
    sha = _zip(www / "ml-100k.zip", FILES)
    data_dir = tmp_path / "data"
    target = ensure_ml100k(
        data_dir, Archive(f"{base}/ml-100k.zip", sha256=sha), allow_download=True
    )
    assert target == data_dir / "ml-100k"
    assert (target / "u.data").is_file()
    ds = load_ml100k(target)
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (2, 2, 3)
    assert ds.item_meta.set_index("item_id").loc["10", "title"] == "Café"
    assert not list(data_dir.glob(".download-*"))
    assert not list(data_dir.glob(".extract-*"))


def test_checksum_mismatch_is_refused_and_nothing_is_extracted(
    served: tuple[str, Path], tmp_path: Path
) -> None:
    base, www = served
    _zip(www / "ml-100k.zip", FILES)
    data_dir = tmp_path / "data"
    archive = Archive(f"{base}/ml-100k.zip", sha256="0" * 64)
    with pytest.raises(DataError, match="sha256 checksum mismatch") as info:
        ensure_ml100k(data_dir, archive, allow_download=True)
    assert str(data_dir / "ml-100k") in str(info.value)
    assert list(data_dir.iterdir()) == []


def test_md5_is_checked_too(served: tuple[str, Path], tmp_path: Path) -> None:
    base, www = served
    sha = _zip(www / "ml-100k.zip", FILES)
    archive = Archive(f"{base}/ml-100k.zip", sha256=sha, md5="0" * 32)
    with pytest.raises(DataError, match="md5 checksum mismatch"):
        ensure_ml100k(tmp_path / "data", archive, allow_download=True)


def test_member_outside_the_target_is_refused(served: tuple[str, Path], tmp_path: Path) -> None:
    base, www = served
    sha = _zip(www / "ml-100k.zip", {"../escape.txt": "x"})
    with pytest.raises(DataError, match="unsafe member path"):
        ensure_ml100k(
            tmp_path / "data", Archive(f"{base}/ml-100k.zip", sha256=sha), allow_download=True
        )
    assert not (tmp_path / "escape.txt").exists()


def test_offline_and_missing_says_where_to_put_the_files(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        ensure_ml100k(tmp_path, allow_download=False)
    message = str(info.value)
    assert str(tmp_path / "ml-100k") in message
    assert ML100K.url in message
    assert "CINESYNC_DATA_DIR" in message


def test_unreachable_server_gives_the_same_guidance(
    served: tuple[str, Path], tmp_path: Path
) -> None:
    base, _ = served
    with pytest.raises(DataError, match="download failed") as info:
        ensure_ml100k(tmp_path, Archive(f"{base}/missing.zip"), allow_download=True)
    assert str(tmp_path / "ml-100k" / "u.data") in str(info.value)


def test_offline_env_disables_downloads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CINESYNC_OFFLINE", "1")
    with pytest.raises(DataError, match="downloads are disabled"):
        ensure_ml100k(tmp_path)


def test_official_checksums_are_pinned() -> None:
    assert ML100K.md5 == "0e33842e24a9c977be4e0107933c0723"
    assert ML100K.sha256 is not None
    assert len(ML100K.sha256) == 64
    assert {name for name, _ in ML100K.files} == {"u.data", "u.item", "u.user", "u.genre"}
    assert all(len(sha) == 64 for _, sha in ML100K.files)
    assert ML100K.url.startswith("https://files.grouplens.org/")


def _pins(files: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """Per-file sha256 pins of a fake archive, as ML100K pins the real files."""
    return tuple(
        (name.removeprefix("ml-100k/"), hashlib.sha256(text.encode("latin-1")).hexdigest())
        for name, text in files.items()
    )


def _leftovers(data_dir: Path) -> list[Path]:
    return [*data_dir.glob(".download-*"), *data_dir.glob(".extract-*")]


def test_a_partial_extraction_is_never_used(
    served: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, www = served
    sha = _zip(www / "ml-100k.zip", FILES)
    archive = Archive(f"{base}/ml-100k.zip", sha256=sha)
    data_dir = tmp_path / "data"
    real_extractall = zipfile.ZipFile.extractall

    def disk_full(self: zipfile.ZipFile, path: object = None, *args: object) -> None:
        self.extract(self.infolist()[0], str(path))  # u.data lands, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(zipfile.ZipFile, "extractall", disk_full)
    with pytest.raises(DataError, match="No space left on device"):
        ensure_ml100k(data_dir, archive, allow_download=True)
    assert not (data_dir / "ml-100k").exists()
    assert _leftovers(data_dir) == []

    monkeypatch.setattr(zipfile.ZipFile, "extractall", real_extractall)
    target = ensure_ml100k(data_dir, archive, allow_download=True)  # retried from scratch
    assert load_ml100k(target).n_interactions == 3


def test_a_modified_file_in_an_existing_folder_is_refused(
    served: tuple[str, Path], tmp_path: Path
) -> None:
    base, www = served
    sha = _zip(www / "ml-100k.zip", FILES)
    archive = Archive(f"{base}/ml-100k.zip", sha256=sha, files=_pins(FILES))
    data_dir = tmp_path / "data"
    target = ensure_ml100k(data_dir, archive, allow_download=True)
    assert ensure_ml100k(data_dir, archive, allow_download=False) == target  # intact: reused
    data = target / "u.data"
    data.write_bytes(data.read_bytes()[:-10])  # truncated
    with pytest.raises(DataError, match="sha256 checksum mismatch") as info:
        ensure_ml100k(data_dir, archive, allow_download=True)
    message = str(info.value)
    assert str(data) in message
    assert f"delete the folder {target}" in message


def test_an_existing_folder_missing_a_pinned_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "ml-100k"
    target.mkdir()
    (target / "u.data").write_text(FILES["ml-100k/u.data"], encoding="latin-1")
    archive = Archive("http://127.0.0.1:9/ml-100k.zip", files=_pins(FILES))
    with pytest.raises(DataError, match=r"u\.item: missing .*delete the folder"):
        ensure_ml100k(tmp_path, archive, allow_download=False)


def test_an_existing_folder_without_u_data_is_refused_not_merged_into(tmp_path: Path) -> None:
    (tmp_path / "ml-100k").mkdir()
    with pytest.raises(DataError, match=r"u\.data: missing .*delete the folder"):
        ensure_ml100k(tmp_path, allow_download=True)


def test_archive_files_that_do_not_match_their_pins_are_refused(
    served: tuple[str, Path], tmp_path: Path
) -> None:
    base, www = served
    sha = _zip(www / "ml-100k.zip", FILES)
    pins = (("u.data", "0" * 64),)
    archive = Archive(f"{base}/ml-100k.zip", sha256=sha, files=pins)
    data_dir = tmp_path / "data"
    with pytest.raises(DataError, match=r"u\.data: sha256 checksum mismatch") as refused:
        ensure_ml100k(data_dir, archive, allow_download=True)
    assert list(data_dir.iterdir()) == []
    # the message names where the file would have been, not the deleted extraction folder
    assert str(data_dir / "ml-100k" / "u.data") in str(refused.value)
    assert ".extract-" not in str(refused.value)


class _TruncatedChunks(http.server.BaseHTTPRequestHandler):
    """Starts a chunked response and closes the connection before its last chunk."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.write(b"a\r\n0123456789\r\n")
        self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


def test_a_truncated_response_is_a_data_error(tmp_path: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _TruncatedChunks)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/ml-100k.zip"
        with pytest.raises(DataError, match=r"download failed .*IncompleteRead"):
            ensure_ml100k(tmp_path / "data", Archive(url), allow_download=True)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert list((tmp_path / "data").iterdir()) == []


@pytest.mark.ml100k
def test_the_real_files_match_their_pins_and_a_truncated_copy_is_refused(tmp_path: Path) -> None:
    real = resolve_data_dir() / "ml-100k"
    if not (real / "u.data").is_file():
        pytest.skip(f"MovieLens 100K not found at {real} (set CINESYNC_DATA_DIR)")
    assert ensure_ml100k(real.parent, allow_download=False) == real
    copy = tmp_path / "ml-100k"
    copy.mkdir()
    for name, _ in ML100K.files:
        shutil.copyfile(real / name, copy / name)
    data = copy / "u.data"
    data.write_bytes(data.read_bytes()[: 1 << 20])  # a truncated u.data loads silently otherwise
    with pytest.raises(DataError, match=r"u\.data: sha256 checksum mismatch") as info:
        ensure_ml100k(tmp_path, allow_download=False)
    assert f"delete the folder {copy}" in str(info.value)
