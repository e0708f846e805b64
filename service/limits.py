"""Protection at the edge, as pure ASGI middleware (cheap on the hot path):

- `ConcurrencyLimit`: at most N requests in flight; the next one gets a fast JSON 503 with
  Retry-After instead of queueing (health, readiness and metrics are exempt).
- `RequestSizeLimit`: headers over a byte budget -> 431; a body over the limit -> 413, whether
  announced by Content-Length or streamed in chunks.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


async def send_json(
    send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]]
) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class ConcurrencyLimit:
    """Fast 503 once `limit` requests are in flight; `on_reject(path)` counts each rejection."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        limit: int,
        on_change: Callable[[int], None],
        on_reject: Callable[[str], None],
    ) -> None:
        self.app, self.limit = app, limit
        self.inflight = 0
        self._on_change, self._on_reject = on_change, on_reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        if self.inflight >= self.limit:
            self._on_reject(scope["path"])
            await send_json(
                send, 503, "the server is at capacity; retry shortly", [(b"retry-after", b"1")]
            )
            return
        self.inflight += 1
        self._on_change(self.inflight)
        try:
            await self.app(scope, receive, send)
        finally:
            self.inflight -= 1
            self._on_change(self.inflight)


class _BodyTooLarge(HTTPException):
    """Raised from `receive` when a streamed body passes the limit. An HTTPException, so a
    framework that catches errors while reading the body re-raises it (413, not 400)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body exceeds {limit} bytes")


class RequestSizeLimit:
    """431 for oversized headers, 413 for bodies over `max_body_bytes`."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, max_header_bytes: int) -> None:
        self.app, self.max_body, self.max_headers = app, max_body_bytes, max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope["headers"]
        if sum(len(k) + len(v) for k, v in headers) > self.max_headers:
            await send_json(send, 431, f"request headers exceed {self.max_headers} bytes", [])
            return
        for name, value in headers:
            if name == b"content-length":
                if not value.isdigit():
                    await send_json(send, 400, "invalid Content-Length header", [])
                    return
                if int(value) > self.max_body:
                    await send_json(
                        send,
                        413,
                        f"request body exceeds {self.max_body} bytes",
                        [(b"connection", b"close")],
                    )
                    return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise _BodyTooLarge(self.max_body)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if started:
                raise
            await send_json(
                send,
                413,
                f"request body exceeds {self.max_body} bytes",
                [(b"connection", b"close")],
            )
