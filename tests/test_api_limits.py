"""Edge protection: bounded concurrency answers a fast 503, oversized headers a 431."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
from service_fixtures import make_settings, running_app

import service.recommender

pytestmark = pytest.mark.asyncio


async def test_requests_past_the_concurrency_limit_get_a_fast_503(
    published_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = threading.Event()
    real_rank = service.recommender.rank

    def blocked_rank(*args, **kwargs):  # type: ignore[no-untyped-def]
        gate.wait(10)
        return real_rank(*args, **kwargs)

    monkeypatch.setattr(service.recommender, "rank", blocked_rank)
    # scoring in worker threads, so the held requests block threads, not the event loop
    settings = make_settings(published_store, max_concurrency=2, inline_compute_max_items=0)
    async with running_app(settings) as client:
        held = [asyncio.create_task(client.get(f"/recommend/held-{i}")) for i in range(2)]
        await asyncio.sleep(0.05)
        started = time.perf_counter()
        rejected = await client.get("/recommend/one-too-many")
        elapsed = time.perf_counter() - started
        assert rejected.status_code == 503
        assert rejected.headers["retry-after"] == "1"
        assert "capacity" in rejected.json()["detail"]
        assert elapsed < 0.5
        assert (await client.get("/healthz")).status_code == 200  # probes are never rejected
        assert (await client.get("/readyz")).status_code == 200
        gate.set()
        assert [r.status_code for r in await asyncio.gather(*held)] == [200, 200]
        assert (await client.get("/recommend/after")).status_code == 200
        text = (await client.get("/metrics")).text
        assert 'cinesync_requests_total{endpoint="recommend",result="rejected"} 1.0' in text
        assert "cinesync_inflight_requests 0.0" in text


async def test_oversized_headers_are_431(published_store: Path) -> None:
    async with running_app(make_settings(published_store, max_header_bytes=2048)) as client:
        r = await client.get("/recommend/1", headers={"X-Padding": "p" * 4096})
        assert r.status_code == 431
        assert "headers" in r.json()["detail"]
        assert (await client.get("/recommend/1")).status_code == 200
