"""The background probe closes an open Redis breaker without any request, against a real Redis
that is stopped and started again."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest
from conftest import RedisServer
from service_fixtures import make_settings, running_app

from service.breaker import CircuitBreaker
from service.breaker_probe import watch_breaker
from service.redis_client import make_redis
from service.state import probe_redis

RESET_S = 0.05

pytestmark = pytest.mark.asyncio


async def _until(condition: object, seconds: float) -> bool:
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        if condition():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.01)
    return bool(condition())  # type: ignore[operator]


async def test_an_open_breaker_stays_open_while_redis_is_down_and_closes_once_it_answers(
    private_redis: RedisServer,
) -> None:
    gauge: list[bool] = []
    breaker = CircuitBreaker(1, RESET_S, on_change=gauge.append)
    client = make_redis(
        private_redis.url, socket_timeout_s=0.1, connect_timeout_s=0.1, max_connections=2
    )
    private_redis.stop()
    breaker.record_failure()  # a request saw Redis fail: open
    watcher = asyncio.create_task(watch_breaker(breaker, lambda: probe_redis(client, 0.1), RESET_S))
    try:
        await asyncio.sleep(10 * RESET_S)  # several probes, all failing
        assert breaker.state == "open"
        assert breaker.opened_count >= 2  # each failed probe re-opened it
        assert gauge[-1] is True
        private_redis.start()  # Redis is back; no request comes
        assert await _until(lambda: breaker.state == "closed", 3.0)
        assert gauge[-1] is False  # the gauge follows without traffic
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await client.aclose()


async def test_a_closed_breaker_is_never_probed() -> None:
    pings = 0

    async def ping() -> bool:
        nonlocal pings
        pings += 1
        return True

    watcher = asyncio.create_task(watch_breaker(CircuitBreaker(1, RESET_S), ping, RESET_S))
    await asyncio.sleep(6 * RESET_S)
    watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watcher
    assert pings == 0


async def test_the_service_gauge_returns_to_closed_with_no_request_after_redis_recovers(
    private_redis: RedisServer, published_store: Path
) -> None:
    redis = {"url": private_redis.url, "breaker_failures": 1, "breaker_reset_s": RESET_S}
    async with running_app(make_settings(published_store, redis=redis)) as client:
        private_redis.stop()
        assert (await client.get("/recommend/someone-new")).status_code == 200  # L2 fails
        metrics = (await client.get("/metrics")).text
        assert "cinesync_redis_breaker_open 1.0" in metrics
        private_redis.start()

        async def closed() -> bool:  # /metrics alone never touches Redis
            return "cinesync_redis_breaker_open 0.0" in (await client.get("/metrics")).text

        for _ in range(300):
            if await closed():
                break
            await asyncio.sleep(0.01)
        assert await closed()
