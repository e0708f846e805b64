"""Validation of model names, versions and bundle file names (nothing from a client is a path)."""

from __future__ import annotations

import re

from model_store.errors import InvalidName

MODEL_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
VERSION_RE = re.compile(r"[1-9][0-9]{0,17}")
FILE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
MAX_VERSION = 10**18 - 1
RESERVED_FILE_NAMES = frozenset({"manifest.json", "bundle.json", "LATEST"})


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def validate_model_name(name: object) -> str:
    """Return `name` if it matches ^[a-z0-9][a-z0-9_-]{0,63}$, else raise InvalidName."""
    if not isinstance(name, str) or MODEL_NAME_RE.fullmatch(name) is None:
        raise InvalidName(
            f"invalid model name {_show(name)}: use 1-64 characters of a-z, 0-9, '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def validate_version(version: object) -> int:
    """Return the version as an int >= 1; strings must be digits without a leading zero."""
    if isinstance(version, bool):
        raise InvalidName(f"invalid version {_show(version)}: expected a positive integer")
    if isinstance(version, int):
        if not 1 <= version <= MAX_VERSION:
            raise InvalidName(f"invalid version {version}: expected 1..{MAX_VERSION}")
        return version
    if isinstance(version, str) and VERSION_RE.fullmatch(version) is not None:
        return int(version)
    raise InvalidName(
        f"invalid version {_show(version)}: expected a positive integer written in digits "
        "without a leading zero (e.g. 3)"
    )


def validate_file_name(name: object) -> str:
    """Return a bundle file name: a plain name (no folders, no leading dot), not reserved."""
    if not isinstance(name, str) or FILE_NAME_RE.fullmatch(name) is None:
        raise InvalidName(
            f"invalid bundle file name {_show(name)}: use a plain name of letters, digits, "
            "'.', '_' or '-' that does not start with '.'"
        )
    if name in RESERVED_FILE_NAMES:
        raise InvalidName(f"invalid bundle file name {name!r}: the name is reserved by the store")
    return name
