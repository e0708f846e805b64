"""`Annotated` dependencies: handlers declare what they need (`RecommenderDep`, `AdminDep`, ...)
and get the lifespan's resources from `app.state.cinesync`."""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.errors import (
    AdminDisabledError,
    InvalidRequestError,
    NotReadyError,
    RateLimitedError,
    UnauthorizedError,
)
from service.metrics import ServiceMetrics
from service.recommender import Recommender
from service.registry import ModelRegistry
from service.schemas import is_valid_user_id
from service.settings import Settings
from service.state import AppState

_bearer = HTTPBearer(auto_error=False, description="CINESYNC_ADMIN_TOKEN")


async def get_state(request: Request) -> AppState:
    state: AppState | None = getattr(request.app.state, "cinesync", None)
    if state is None:
        raise NotReadyError("the service is starting")
    return state


StateDep = Annotated[AppState, Depends(get_state)]


async def _settings(state: StateDep) -> Settings:
    return state.settings


async def _metrics(state: StateDep) -> ServiceMetrics:
    return state.metrics


async def _registry(state: StateDep) -> ModelRegistry:
    return state.registry


async def _recommender(state: StateDep) -> Recommender:
    return state.recommender


SettingsDep = Annotated[Settings, Depends(_settings)]
MetricsDep = Annotated[ServiceMetrics, Depends(_metrics)]
RegistryDep = Annotated[ModelRegistry, Depends(_registry)]
RecommenderDep = Annotated[Recommender, Depends(_recommender)]


def check_user_id(user_id: str) -> str:
    """No control characters, not blank (the path parameter also declares the pattern and the
    length; this guards any caller that bypasses it)."""
    if not is_valid_user_id(user_id, len(user_id)):
        raise InvalidRequestError("user_id must be text without control characters, not blank")
    return user_id


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def require_admin(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    settings: SettingsDep,
) -> None:
    """Bearer token compared in constant time (digests of equal length)."""
    expected = settings.admin_token_value()
    if expected is None:
        raise AdminDisabledError("admin endpoints are disabled: set CINESYNC_ADMIN_TOKEN")
    given = credentials.credentials if credentials is not None else ""
    if not hmac.compare_digest(_digest(given), _digest(expected)) or not given:
        raise UnauthorizedError("missing or wrong admin token")


AdminDep = Depends(require_admin)


async def limit_events(request: Request, state: StateDep) -> None:
    """One token from the client's event bucket (before the body is validated, so invalid
    requests count too); none left -> RateLimitedError (429 with Retry-After)."""
    peer = request.client.host if request.client is not None else None
    decision = state.event_limiter.check(peer, request.headers.getlist("x-forwarded-for"))
    if not decision.allowed:
        state.metrics.count_event(False)
        raise RateLimitedError(
            "too many events from this client; slow down", decision.retry_after_s
        )


EventRateDep = Depends(limit_events)
