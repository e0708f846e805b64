"""The HTTP contract's JSON shapes (DESIGN 3.2): every response is documented in OpenAPI."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt

StrategyName = Literal["sequential", "blend", "content", "popular"]
MAX_ITEM_ID_CHARS = 256


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
    """One interaction. `timestamp` is seconds since the epoch (default: now)."""

    model_config = ConfigDict(extra="forbid")

    item_id: Annotated[str, Field(min_length=1, max_length=MAX_ITEM_ID_CHARS)] | StrictInt
    type: Literal["view", "rating", "click"]
    value: Annotated[float, Field(ge=-1e6, le=1e6, allow_inf_nan=False)] | None = None
    timestamp: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None

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
    weight: float


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

    version: Annotated[StrictInt, Field(ge=1, le=10**18)] | None = None


class ReloadResponse(BaseModel):
    previous: int | None
    current: int


class IndexInfo(BaseModel):
    kind: str
    exact: bool
    recall_at_10: float
    fallback_reason: str | None


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
