"""The HTTP contract's JSON shapes (DESIGN 3.2): every response is documented in OpenAPI."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

StrategyName = Literal["sequential", "blend", "content", "features", "popular"]
MAX_ITEM_ID_CHARS = 256
# A user id: no control characters (C0, DEL, C1), no '/', not only spaces. Declared in OpenAPI
# and checked by both /recommend routes with this one expression.
_CTRL = r"\x00-\x1f\x7f-\x9f/"
USER_ID_PATTERN = rf"^[^{_CTRL}]*[^ {_CTRL}][^{_CTRL}]*$"
_USER_ID_RE = re.compile(USER_ID_PATTERN)


def is_valid_user_id(user_id: str, max_chars: int) -> bool:
    """1..max_chars characters matching USER_ID_PATTERN."""
    return 0 < len(user_id) <= max_chars and _USER_ID_RE.match(user_id) is not None


def _json_integer(value: object) -> object:
    """JSON Schema's integer: an int, or a number with a zero fraction (5.0); never a bool or
    a string (so "007" cannot name a version)."""
    if isinstance(value, bool):
        raise ValueError("Input should be a valid integer")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# Constraints go in Field before the validator, or OpenAPI loses them (minimum, maximum).
JsonInt = Annotated[int, Field(strict=True), BeforeValidator(_json_integer)]


class ErrorResponse(BaseModel):
    """Every error: a reason string (or FastAPI's list of validation problems for 422)."""

    detail: str | list[dict[str, Any]]


class RecommendedItem(BaseModel):
    item_id: str
    title: str
    genres: list[str]
    score: float


class RecommendResponse(BaseModel):
    user_id: str
    model_version: int
    strategy: StrategyName
    cache: Literal["l1", "l2", "miss"]
    items: list[RecommendedItem]


class EventIn(BaseModel):
    """One interaction. `timestamp` is seconds since the epoch (default: now). Numbers are JSON
    numbers: `true` or `"4.5"` are refused, as the schema says."""

    model_config = ConfigDict(extra="forbid")

    item_id: Annotated[str, Field(min_length=1, max_length=MAX_ITEM_ID_CHARS)] | JsonInt
    type: Literal["view", "rating", "click"]
    value: Annotated[float, Field(strict=True, ge=-1e6, le=1e6, allow_inf_nan=False)] | None = None
    timestamp: Annotated[float, Field(strict=True, ge=0, allow_inf_nan=False)] | None = None

    def item(self) -> str:
        return str(self.item_id)


class EventAccepted(BaseModel):
    status: Literal["accepted"] = "accepted"
    user_id: str
    item_id: str
    model_version: int


class ItemOut(BaseModel):
    item_id: str
    title: str
    genres: list[str]


class BecauseItem(BaseModel):
    item_id: str
    title: str
    weight: float = Field(
        description="How much this history item speaks for the explained one: sequential = "
        "the encoder's attention to it times its embedding cosine with the item; content = "
        "content cosine; blend = alpha * embedding cosine + (1 - alpha) * content cosine"
    )


class ExplainResponse(BaseModel):
    user_id: str
    model_version: int
    item: ItemOut
    strategy: StrategyName
    because: list[BecauseItem]
    shared_genres: list[str]
    score: float
    reason: str


class ReloadRequest(BaseModel):
    """Which version to load (default: the store's LATEST). A JSON integer >= 1, nothing else."""

    model_config = ConfigDict(extra="forbid")

    version: (
        Annotated[int, Field(strict=True, ge=1, le=10**18), BeforeValidator(_json_integer)] | None
    ) = None


class ReloadResponse(BaseModel):
    previous: int | None
    current: int


class IndexInfo(BaseModel):
    kind: str
    exact: bool
    recall_at_10: float
    fallback_reason: str | None


class UserFeatureInfo(BaseModel):
    """A user feature the served model's feature-only query reads (`features=name:value`)."""

    name: str
    kind: Literal["bucket", "category"]
    edges: list[float]  # bucket: a number's code counts the edges <= it
    values: list[str]  # category: the accepted values


class ServedInfo(BaseModel):
    name: str
    version: int
    loaded_at: datetime
    load_seconds: float
    precision: str
    providers: list[str]
    provider_fallback: str | None
    index: IndexInfo
    items: int
    users: int
    user_features: list[UserFeatureInfo] = []


class VersionInfo(BaseModel):
    version: int
    created_at: datetime | None
    latest: bool
    served: bool
    model_kind: str | None
    dataset: str | None
    metrics: dict[str, dict[str, float | None]]
    error: str | None = None


class ModelsResponse(BaseModel):
    name: str
    latest: int | None
    served: ServedInfo | None
    reloading: bool
    last_error: str | None
    versions: list[VersionInfo]


class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"


class ReadyResponse(BaseModel):
    status: Literal["ready"] = "ready"
    model: str
    model_version: int
    providers: list[str]
