"""The HTTP edge (DESIGN 3.2): routes, their documented shapes, and the one place where domain
errors become HTTP responses. Parameter bounds come from the settings, so OpenAPI shows the
real limits (k <= max_k, user_id length)."""

# No `from __future__ import annotations`: the routes use local Annotated aliases, which
# FastAPI must resolve at definition time.

import logging
import math
import time
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Body, FastAPI, Path, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from service.admin import list_models
from service.deps import (
    AdminDep,
    EventRateDep,
    MetricsDep,
    RecommenderDep,
    RegistryDep,
    StateDep,
    check_user_id,
)
from service.errors import (
    InvalidRequestError,
    NotReadyError,
    RateLimitedError,
    ServiceError,
    UnauthorizedError,
    UnknownItemError,
    http_status,
)
from service.ratelimit import retry_after_header
from service.schemas import (
    MAX_ITEM_ID_CHARS,
    USER_ID_PATTERN,
    BecauseItem,
    ErrorResponse,
    EventAccepted,
    EventIn,
    ExplainResponse,
    HealthResponse,
    ItemOut,
    ModelsResponse,
    ReadyResponse,
    RecommendResponse,
    ReloadRequest,
    ReloadResponse,
)
from service.settings import Settings
from service.user_features import FEATURES_PATTERN, MAX_FEATURES_CHARS

log = logging.getLogger(__name__)
JSON = "application/json"


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """Documented error answers: validation (422), headers too large (431), at capacity (503),
    plus the route's own (a body route adds 400 undecodable body and 413 body too large)."""
    return {code: {"model": ErrorResponse} for code in sorted({422, 431, 503, *codes})}


FeaturesParam = Annotated[
    str | None,
    Query(
        max_length=MAX_FEATURES_CHARS,
        pattern=FEATURES_PATTERN,
        description="user features as name:value pairs, for users with no history "
        "(the names and values the served model reads: GET /admin/models)",
        examples=["age:25,gender:F,occupation:student"],
    ),
]


def build_router(settings: Settings) -> APIRouter:
    """All routes; bounds that depend on settings are baked into the parameters here."""
    router = APIRouter()
    UserId = Annotated[
        str,
        Path(min_length=1, max_length=settings.max_user_id_chars, pattern=USER_ID_PATTERN),
    ]
    ItemId = Annotated[str, Path(min_length=1, max_length=MAX_ITEM_ID_CHARS)]

    @router.get("/recommend/{user_id}", response_model=RecommendResponse, responses=_errors())
    async def recommend(
        request: Request,
        user_id: UserId,
        rec: RecommenderDep,
        k: Annotated[int, Query(ge=1, le=settings.max_k)] = 10,
        exclude_seen: bool = True,
        genres: Annotated[str | None, Query(max_length=1024, examples=["Drama,Comedy"])] = None,
        features: FeaturesParam = None,
    ) -> Response:
        """Top-k recommendations; unknown users are cold-start users. A user with no history
        gets the model's feature-only query (strategy `features`) when `features` is given and
        the served model has one; otherwise popular items."""
        served = await rec.recommend(check_user_id(user_id), k, exclude_seen, genres, features)
        request.state.strategy, request.state.tier = served.strategy, served.tier
        return Response(served.body, media_type=JSON)

    @router.post(
        "/users/{user_id}/events",
        status_code=202,
        response_model=EventAccepted,
        responses=_errors(400, 404, 413, 429),
        dependencies=[EventRateDep],
    )
    async def post_event(
        user_id: UserId,
        event: EventIn,
        rec: RecommenderDep,
        metrics: MetricsDep,
    ) -> EventAccepted:
        """Append to the user's live history; the next /recommend reflects it. Each client
        (see service/ratelimit.py) may post `events.rate_per_s` per second, bursts of
        `events.burst`; past that: 429 with Retry-After."""
        check_user_id(user_id)
        now = time.time()
        ts = now if event.timestamp is None else event.timestamp
        if ts > now + settings.events.max_future_skew_s:
            metrics.count_event(False)
            raise InvalidRequestError("timestamp is in the future")
        try:
            bundle = await rec.record_event(user_id, event.item(), ts)
        except UnknownItemError:
            metrics.count_event(False)
            raise
        metrics.count_event(True)
        return EventAccepted(user_id=user_id, item_id=event.item(), model_version=bundle.version)

    @router.get(
        "/explain/{user_id}/{item_id}", response_model=ExplainResponse, responses=_errors(404)
    )
    async def explain(
        request: Request,
        user_id: UserId,
        item_id: ItemId,
        rec: RecommenderDep,
        features: FeaturesParam = None,
    ) -> ExplainResponse:
        """Why `item_id` would be recommended to `user_id` (with `features` as for /recommend)."""
        bundle, ex = await rec.explain(check_user_id(user_id), item_id, features)
        request.state.strategy = ex.strategy
        cat = bundle.catalog
        return ExplainResponse(
            user_id=user_id,
            model_version=bundle.version,
            item=ItemOut(
                item_id=cat.item_ids[ex.item],
                title=cat.titles[ex.item],
                genres=list(cat.genres[ex.item]),
            ),
            strategy=ex.strategy,
            score=ex.score,
            shared_genres=ex.shared_genres,
            because=[
                BecauseItem(item_id=cat.item_ids[i], title=cat.titles[i], weight=w)
                for i, w in ex.because
            ],
            reason=ex.reason,
        )

    @router.post(
        "/admin/reload",
        response_model=ReloadResponse,
        dependencies=[AdminDep],
        responses=_errors(400, 401, 403, 404, 409, 413),
    )
    async def reload(
        registry: RegistryDep,
        body: Annotated[ReloadRequest | None, Body()] = None,
    ) -> ReloadResponse:
        """Load a version (default LATEST) and swap it in; a bad bundle -> 409, old one stays."""
        previous, current = await registry.reload(body.version if body is not None else None)
        return ReloadResponse(
            previous=previous.version if previous is not None else None, current=current.version
        )

    @router.get(
        "/admin/models",
        response_model=ModelsResponse,
        dependencies=[AdminDep],
        responses=_errors(401, 403),
    )
    async def models(state: StateDep) -> ModelsResponse:
        """Versions in the store with offline metrics; the served one with index recall."""
        return await anyio.to_thread.run_sync(
            list_models, state.store, state.registry, state.settings
        )

    @router.get("/healthz", response_model=HealthResponse)
    async def healthz() -> HealthResponse:
        """The process is alive."""
        return HealthResponse()

    @router.get("/readyz", response_model=ReadyResponse, responses={503: {"model": ErrorResponse}})
    async def readyz(state: StateDep) -> ReadyResponse:
        """A bundle is loaded and warmed, and the process is not shutting down."""
        bundle = state.registry.current
        if state.lifecycle.draining:
            raise NotReadyError("shutting down")
        if bundle is None:
            raise NotReadyError(
                f"no model bundle is loaded: {state.registry.last_error or 'loading'}"
            )
        return ReadyResponse(
            model=bundle.name, model_version=bundle.version, providers=bundle.providers
        )

    @router.get("/metrics", include_in_schema=False)
    async def metrics_endpoint(metrics: MetricsDep) -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    return router


async def _service_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)
    headers: dict[str, str] = {}
    if isinstance(exc, UnauthorizedError):
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(exc, NotReadyError):
        headers["Retry-After"] = "1"
    if isinstance(exc, RateLimitedError):
        headers["Retry-After"] = retry_after_header(exc.retry_after_s)
    return JSONResponse({"detail": exc.detail}, status_code=http_status(exc), headers=headers)


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.error("unhandled error", exc_info=exc, extra={"path": request.url.path})
    return JSONResponse({"detail": "internal server error"}, status_code=500)


def _finite(value: Any) -> Any:
    """JSON-safe: NaN and infinities (which a request body may hold) become strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


async def _validation_error(request: Request, exc: Exception) -> Response:
    """FastAPI's 422 body, rendered even when it echoes a NaN the client sent (else a 500)."""
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": _finite(jsonable_encoder(exc.errors()))}, status_code=422)


def install_error_handlers(app: FastAPI) -> None:
    """Domain errors -> {"detail": reason} with their status (errors.HTTP_STATUS); validation
    errors -> 422 with FastAPI's list of problems."""
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _internal_error)
