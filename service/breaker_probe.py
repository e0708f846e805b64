"""Closes the Redis circuit breaker when Redis is back even if no request comes: without it, an
open breaker only probes on the next request, so on an idle replica the breaker gauge (and the
alert on it) would stay at "open" long after Redis recovered."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from service.breaker import CircuitBreaker


async def watch_breaker(
    breaker: CircuitBreaker, ping: Callable[[], Awaitable[bool]], interval_s: float
) -> None:
    """Every `interval_s`: when the breaker is open and lets a probe through, ping Redis and
    report the answer to the breaker (success closes it, failure keeps it open). Runs until
    cancelled; a closed breaker costs nothing (no ping)."""
    while True:
        await asyncio.sleep(interval_s)
        if breaker.is_open and breaker.allow():
            if await ping():
                breaker.record_success()
            else:
                breaker.record_failure()
