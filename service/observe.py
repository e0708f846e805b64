"""Request metrics as pure ASGI middleware: latency by endpoint/strategy/tier (handlers put the
strategy and cache tier into the request state) and counts by result."""

from __future__ import annotations

import asyncio
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.metrics import ServiceMetrics

CLIENT_CLOSED = 499
_PREFIXES = (
    ("/recommend/", "recommend"),
    ("/users/", "events"),
    ("/explain/", "explain"),
    ("/admin/reload", "admin_reload"),
    ("/admin/models", "admin_models"),
)


def endpoint_of(path: str) -> str:
    """The low-cardinality endpoint label of a request path."""
    for prefix, name in _PREFIXES:
        if path.startswith(prefix):
            return name
    return "other"


def result_of(status: int, path: str) -> str:
    """The result label: a 503 from /readyz is the answer "not ready" (starting, draining or no
    bundle), which a probe asks for, not a failed request."""
    if status == 503 and path == "/readyz":
        return "not_ready"
    if status >= 500:
        return "server_error"
    if status >= 400:
        return "client_error"
    return "ok"


class RequestMetrics:
    """Observe every HTTP request's latency and result."""

    def __init__(self, app: ASGIApp, *, metrics: ServiceMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        state = scope.setdefault("state", {})

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        endpoint = endpoint_of(scope["path"])
        try:
            await self.app(scope, receive, send_status)
        except asyncio.CancelledError:
            status = CLIENT_CLOSED  # the client went away
            raise
        except Exception:
            status = 500
            raise
        finally:
            self.metrics.observe_request(
                endpoint,
                state.get("strategy", "none"),
                state.get("tier", "none"),
                time.perf_counter() - started,
            )
            self.metrics.count_request(endpoint, result_of(status, scope["path"]))
