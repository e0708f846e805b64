"""Errors raised by the model store; every one is a `StoreError` with a clear message."""


class StoreError(Exception):
    """Base class: the store refused an operation or a bundle."""


class InvalidName(StoreError):  # noqa: N818 (store contract name)
    """A model name, version or file name is malformed (e.g. `..`, an absolute path, `007`)."""


class VersionNotFound(StoreError):  # noqa: N818 (store contract name)
    """The model or version does not exist in the store."""


class ChecksumMismatch(StoreError):  # noqa: N818 (store contract name)
    """A file's sha256 differs from the one recorded in the manifest."""


class IncompleteVersion(StoreError):  # noqa: N818 (store contract name)
    """A version folder lacks its manifest or a file the manifest lists (a partial write)."""


class ManifestError(StoreError):
    """A manifest or bundle.json is missing a field, has a wrong type or is not valid JSON."""


class UnsafeArtifact(StoreError):  # noqa: N818 (store contract name)
    """A file refused for safety: symlink, unlisted file, path escape, pickle, external data."""


class CorruptArtifact(StoreError):  # noqa: N818 (store contract name)
    """A verified file does not have the expected format, dtype or shape."""
