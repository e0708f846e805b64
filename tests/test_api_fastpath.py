"""The lean /recommend route answers exactly what the FastAPI route answers."""

from __future__ import annotations

from pathlib import Path

import pytest
from service_fixtures import make_settings, running_app

pytestmark = pytest.mark.asyncio

URLS = [
    "/recommend/1", "/recommend/1?k=5", "/recommend/1?k=5&exclude_seen=false",
    "/recommend/2?k=7&genres=Drama,comedy", "/recommend/new-user?k=3&genres=War",
    "/recommend/2?k=7&exclude_seen=0&unknown=1", "/recommend/Zo%C3%AB?k=4",
    "/recommend/1?k=5&exclude_seen=yes", "/recommend/1?k=05", "/recommend/1?k=5&k=6",
    "/recommend/1?k=0", "/recommend/1?k=101", "/recommend/1?k=%D9%A1", "/recommend/1?k=%C2%B2",
    "/recommend/1?exclude_seen=", "/recommend/1?genres=Nope", "/recommend/%00",
    "/recommend/" + "a" * 129, "/recommend/%20",
    "/recommend/new-user?features=age:25,taste:Horror", "/recommend/new-user?features=age",
    "/recommend/new-user?features=", "/recommend/new-user?features=a:1,a:2",
    "/recommend/new-user?features=%20", "/recommend/1?features=" + "a:1," * 200 + "b:2",
]  # fmt: skip


async def test_both_routes_give_the_same_status_and_body(published_store: Path) -> None:
    answers = {}
    for fast in (True, False):
        async with running_app(make_settings(published_store, fast_path=fast)) as client:
            answers[fast] = [
                (r.status_code, r.headers["content-type"], r.content)
                for url in URLS
                for r in [await client.get(url), await client.get(url)]
            ]
    for url, slow, fast in zip(
        [u for u in URLS for _ in range(2)], answers[False], answers[True], strict=True
    ):
        assert fast == slow, url
    assert {status for status, _, _ in answers[True]} == {200, 422}


async def test_the_fast_route_feeds_the_same_metrics(published_store: Path) -> None:
    async with running_app(make_settings(published_store)) as client:
        await client.get("/recommend/1?k=5")
        await client.get("/recommend/1?k=5")
        text = (await client.get("/metrics")).text
    assert 'cinesync_requests_total{endpoint="recommend",result="ok"} 2.0' in text
    assert 'strategy="sequential",tier="l1"' in text
    assert 'cinesync_cache_requests_total{result="hit",tier="l1"} 1.0' in text


async def test_canonical_requests_skip_the_framework_and_others_reach_it(
    published_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import service.api

    calls: list[str] = []
    real = service.api.check_user_id

    def counting(user_id: str) -> str:
        calls.append(user_id)
        return real(user_id)

    monkeypatch.setattr(service.api, "check_user_id", counting)
    async with running_app(make_settings(published_store)) as client:
        assert (await client.get("/recommend/1?k=5&exclude_seen=false")).status_code == 200
        assert calls == []
        assert (await client.get("/recommend/1?k=5&exclude_seen=yes")).status_code == 200
        assert calls == ["1"]
