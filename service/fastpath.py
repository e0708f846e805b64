"""A lean ASGI route for the hottest call, GET /recommend/{user_id}, when its query is in
canonical form (k digits, exclude_seen true|false|1|0, genres, features, each at most once): it
calls the same `Recommender.recommend` as the FastAPI route, minus the framework's per-request
dependency and validation work (about half the cost of an L1 hit). Anything else, and any domain
error (which is raised before any side effect), falls through to the FastAPI route, which
validates, documents and answers it. Tests check both routes give the same bodies."""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import ServiceError
from service.schemas import is_valid_user_id
from service.state import AppState
from service.user_features import MAX_FEATURES_CHARS

PREFIX = "/recommend/"
_BOOLS = {"true": True, "1": True, "false": False, "0": False}
MAX_GENRES_CHARS = 1024
JSON_HEADERS = [(b"content-type", b"application/json")]


class RecommendFastPath:
    """Serve canonical /recommend requests directly; pass everything else on."""

    def __init__(self, app: ASGIApp, *, max_k: int, max_user_id_chars: int) -> None:
        self.app, self.max_k, self.max_user_chars = app, max_k, max_user_id_chars

    def _parse(self, scope: Scope) -> tuple[str, int, bool, str | None, str | None] | None:
        user_id = scope["path"][len(PREFIX) :]
        if not is_valid_user_id(user_id, self.max_user_chars):
            return None
        k, exclude_seen, genres, features = 10, True, None, None
        seen: set[str] = set()
        for name, value in parse_qsl(scope["query_string"].decode("latin-1"), True):
            if name in seen:
                return None
            seen.add(name)
            if name == "k":
                if not (value.isascii() and value.isdigit() and len(value) <= 6):
                    return None
                if not 1 <= int(value) <= self.max_k:
                    return None
                k = int(value)
            elif name == "exclude_seen":
                if value.lower() not in _BOOLS:
                    return None
                exclude_seen = _BOOLS[value.lower()]
            elif name == "genres":
                if len(value) > MAX_GENRES_CHARS:
                    return None
                genres = value
            elif name == "features":
                if len(value) > MAX_FEATURES_CHARS:
                    return None
                features = value
        return user_id, k, exclude_seen, genres, features

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "GET"
            or not scope["path"].startswith(PREFIX)
        ):
            await self.app(scope, receive, send)
            return
        parsed = self._parse(scope)
        state: AppState | None = getattr(scope["app"].state, "cinesync", None)
        if parsed is None or state is None:
            await self.app(scope, receive, send)
            return
        try:
            served = await state.recommender.recommend(*parsed)
        except ServiceError:  # raised before any side effect: the framework answers it
            await self.app(scope, receive, send)
            return
        request_state = scope.setdefault("state", {})
        request_state["strategy"], request_state["tier"] = served.strategy, served.tier
        await send({
            "type": "http.response.start", "status": 200,
            "headers": [*JSON_HEADERS, (b"content-length", str(len(served.body)).encode())],
        })  # fmt: skip
        await send({"type": "http.response.body", "body": served.body})
