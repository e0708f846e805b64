"""Liveness, readiness, Prometheus metrics and the OpenAPI document."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import httpx
import pytest
from service_fixtures import make_settings, running_app, wait_ready

import service.state
from service.bundle import Bundle, load_bundle

pytestmark = pytest.mark.asyncio

METRIC_NAMES = (
    "cinesync_request_duration_seconds_bucket", "cinesync_requests_total",
    "cinesync_cache_requests_total", "cinesync_encoder_duration_seconds",
    "cinesync_index_search_duration_seconds", "cinesync_reloads_total",
    "cinesync_redis_breaker_open", "cinesync_bundle_ready", "cinesync_model_info",
    "cinesync_index_recall_at_10", "cinesync_online_coverage", "cinesync_online_gini",
    "cinesync_inflight_requests",
)  # fmt: skip


async def test_health_and_readiness_when_serving(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = (await client.get("/readyz")).json()
    assert ready == {
        "status": "ready",
        "model": "cinesync",
        "model_version": 2,
        "providers": ["CPUExecutionProvider"],
    }


async def test_readiness_stays_false_until_a_slow_load_finishes(
    published_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = threading.Event()

    def slow_load(*args: object, **kwargs: object) -> Bundle:
        gate.wait(10)
        return load_bundle(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(service.state, "load_bundle", slow_load)
    async with running_app(make_settings(published_store), ready=False) as client:
        for _ in range(5):
            assert (await client.get("/healthz")).status_code == 200
            r = await client.get("/readyz")
            assert r.status_code == 503
            assert "loading" in r.json()["detail"]
            assert (await client.get("/recommend/1")).status_code == 503
            await asyncio.sleep(0.02)
        text = (await client.get("/metrics")).text
        assert "cinesync_bundle_ready 0.0" in text
        # a probe told "not ready" is not a server error (the 5xx alert must not fire on it)
        assert 'cinesync_requests_total{endpoint="other",result="not_ready"} 5.0' in text
        assert 'endpoint="other",result="server_error"' not in text
        gate.set()
        await wait_ready(client)
        assert (await client.get("/recommend/1")).status_code == 200
        assert "cinesync_bundle_ready 1.0" in (await client.get("/metrics")).text


async def test_metrics_expose_the_contract_names(client: httpx.AsyncClient) -> None:
    await client.get("/recommend/1")
    await client.get("/recommend/1")
    await client.get("/recommend/1", params={"k": 0})
    text = (await client.get("/metrics")).text
    for name in METRIC_NAMES:
        assert name in text, name
    assert 'cinesync_model_info{name="cinesync",version="2"} 1.0' in text
    assert 'cinesync_requests_total{endpoint="recommend",result="ok"} 2.0' in text
    assert 'cinesync_requests_total{endpoint="recommend",result="client_error"} 1.0' in text
    assert 'cinesync_cache_requests_total{result="hit",tier="l1"} 1.0' in text
    assert 'endpoint="recommend",le="0.005",strategy="sequential",tier="l1"' in text
    assert "cinesync_online_coverage 0.05\n" in text  # one list of 10 out of 200 items


async def test_openapi_documents_every_response_shape(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    paths = spec["paths"]
    expected = {
        ("/recommend/{user_id}", "get", "200"): "RecommendResponse",
        ("/users/{user_id}/events", "post", "202"): "EventAccepted",
        ("/explain/{user_id}/{item_id}", "get", "200"): "ExplainResponse",
        ("/admin/reload", "post", "200"): "ReloadResponse",
        ("/admin/models", "get", "200"): "ModelsResponse",
        ("/readyz", "get", "503"): "ErrorResponse",
        ("/recommend/{user_id}", "get", "422"): "ErrorResponse",
    }
    for (path, method, code), model in expected.items():
        schema = paths[path][method]["responses"][code]["content"]["application/json"]["schema"]
        assert schema["$ref"].endswith(f"/{model}"), (path, code)
    k = next(p for p in paths["/recommend/{user_id}"]["get"]["parameters"] if p["name"] == "k")
    assert (k["schema"]["minimum"], k["schema"]["maximum"]) == (1, 100)
