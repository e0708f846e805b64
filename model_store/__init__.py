"""Versioned, verified model bundles: the contract between training and serving (README.md)."""

from model_store.errors import (
    ChecksumMismatch,
    CorruptArtifact,
    IncompleteVersion,
    InvalidName,
    ManifestError,
    StoreError,
    UnsafeArtifact,
    VersionNotFound,
)
from model_store.manifest import BundleInfo, DatasetInfo, Manifest, Metrics, ModelInfo
from model_store.store import ModelStore
from model_store.validation import validate_model_name, validate_version
from model_store.verified import VerifiedBundle

__all__ = [
    "BundleInfo",
    "ChecksumMismatch",
    "CorruptArtifact",
    "DatasetInfo",
    "IncompleteVersion",
    "InvalidName",
    "Manifest",
    "ManifestError",
    "Metrics",
    "ModelInfo",
    "ModelStore",
    "StoreError",
    "UnsafeArtifact",
    "VerifiedBundle",
    "VersionNotFound",
    "validate_model_name",
    "validate_version",
]
