"""The manifest schema (pydantic v2): what a published version is, written last by the store."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from model_store.errors import InvalidName, ManifestError
from model_store.validation import validate_file_name, validate_model_name

SCHEMA_VERSION: Final = 1
SHA256_HEX_LEN = 64
_HEX = frozenset("0123456789abcdef")


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)


class ModelInfo(_Strict):
    """The query encoder: architecture, hyper-parameters, embedding size and similarity."""

    kind: str = Field(min_length=1, max_length=64)
    config: dict[str, Any]
    dim: int = Field(ge=1)
    max_len: int = Field(ge=1)
    metric: Literal["ip", "cosine", "l2"] = "ip"


class DatasetInfo(_Strict):
    """The training data: name, sizes and evaluation split."""

    name: str = Field(min_length=1, max_length=256)
    users: int = Field(ge=0)
    items: int = Field(ge=0)
    interactions: int = Field(ge=0)
    split: str = Field(min_length=1, max_length=64)


class Metrics(_Strict):
    """Offline metrics by stage (`ndcg@10`, `hr@10`, ...); null where undefined."""

    valid: dict[str, float | None]
    test: dict[str, float | None]


class BundleInfo(_Strict):
    """bundle.json, written by the exporter and folded into the manifest on publish."""

    model: ModelInfo
    dataset: DatasetInfo
    metrics: Metrics
    parity: dict[str, Any] | None = None


class Manifest(_Strict):
    """manifest.json of one version; `files` maps every bundle file to its sha256 (hex)."""

    schema_version: Literal[1]
    name: str
    version: int = Field(ge=1)
    model: ModelInfo
    files: dict[str, str] = Field(min_length=1)
    dataset: DatasetInfo
    metrics: Metrics
    parity: dict[str, Any] | None = None
    created_at: datetime

    @classmethod
    def from_bundle(
        cls,
        info: BundleInfo,
        *,
        name: str,
        version: int,
        files: dict[str, str],
        created_at: datetime,
    ) -> Manifest:
        """The manifest of a new version: bundle.json's sections plus identity and checksums."""
        return cls(
            schema_version=SCHEMA_VERSION,
            name=name,
            version=version,
            model=info.model,
            files=files,
            dataset=info.dataset,
            metrics=info.metrics,
            parity=info.parity,
            created_at=created_at,
        )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        try:
            return validate_model_name(value)
        except InvalidName as exc:
            raise ValueError(str(exc)) from None

    @field_validator("files")
    @classmethod
    def _files(cls, value: dict[str, str]) -> dict[str, str]:
        for file_name, digest in value.items():
            try:
                validate_file_name(file_name)
            except InvalidName as exc:
                raise ValueError(str(exc)) from None
            if len(digest) != SHA256_HEX_LEN or not set(digest) <= _HEX:
                raise ValueError(f"sha256 of {file_name!r} must be 64 lowercase hex digits")
        return value

    @field_validator("created_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("created_at must carry a time zone (UTC)")
        return value.astimezone(UTC)

    def ndcg10(self, stage: Literal["valid", "test"]) -> float | None:
        """The stage's `ndcg@10`, or None when absent or undefined."""
        value: float | None = getattr(self.metrics, stage).get("ndcg@10")
        return value

    def to_json(self) -> bytes:
        """UTF-8 JSON, indented, as written to manifest.json."""
        return self.model_dump_json(indent=2).encode("utf-8") + b"\n"


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        parts.append(f"{where}: {err['msg']}")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def parse_manifest(data: bytes, source: str = "manifest.json") -> Manifest:
    """Parse and validate manifest JSON; raise ManifestError naming the first problems."""
    try:
        return Manifest.model_validate_json(data)
    except ValidationError as exc:
        raise ManifestError(f"{source} is invalid: {_describe(exc)}") from exc


def parse_bundle_info(data: bytes, source: str = "bundle.json") -> BundleInfo:
    """Parse and validate an exporter's bundle.json; raise ManifestError on any problem."""
    try:
        return BundleInfo.model_validate_json(data)
    except ValidationError as exc:
        raise ManifestError(f"{source} is invalid: {_describe(exc)}") from exc


def utc_now() -> datetime:
    """The current time in UTC (manifest `created_at`)."""
    return datetime.now(UTC)
