"""POST /admin/reload and GET /admin/models: auth, swap, rollback, failed reloads, concurrency."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
from service_fixtures import AUTH, MODEL, make_settings, running_app

from model_store.store import ModelStore

pytestmark = pytest.mark.asyncio


async def reload(client: httpx.AsyncClient, version: int | None = None) -> httpx.Response:
    body = {} if version is None else {"version": version}
    return await client.post("/admin/reload", json=body, headers=AUTH)


async def served_version(client: httpx.AsyncClient) -> int:
    return int((await client.get("/readyz")).json()["model_version"])


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token-wrong-token"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer "},
    ],
)
async def test_admin_endpoints_refuse_a_missing_or_wrong_token(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    for method, url in (("POST", "/admin/reload"), ("GET", "/admin/models")):
        r = await client.request(method, url, headers=headers)
        assert r.status_code == 401
        assert r.headers["www-authenticate"] == "Bearer"
        assert r.json() == {"detail": "missing or wrong admin token"}
    assert await served_version(client) == 2


async def test_admin_endpoints_are_off_without_a_configured_token(published_store: Path) -> None:
    async with running_app(make_settings(published_store, admin_token=None)) as client:
        r = await client.post("/admin/reload", headers={"Authorization": "Bearer anything"})
        assert r.status_code == 403
        assert "CINESYNC_ADMIN_TOKEN" in r.json()["detail"]


@pytest.mark.parametrize(
    "body",
    [{"version": "007"}, {"version": "../../etc"}, {"version": "/etc/passwd"},
     {"version": "http://evil.example/model"}, {"version": 0}, {"version": -1},
     {"version": 1.5}, {"version": "2"}, {"path": "/tmp/model"}, {"version": True}],
)  # fmt: skip
async def test_reload_accepts_only_a_positive_integer_version(
    client: httpx.AsyncClient, body: dict[str, object]
) -> None:
    r = await client.post("/admin/reload", json=body, headers=AUTH)
    assert r.status_code == 422
    assert await served_version(client) == 2


async def test_reload_of_a_missing_version_is_404(client: httpx.AsyncClient) -> None:
    r = await reload(client, 99)
    assert r.status_code == 404
    assert "99" in r.json()["detail"]
    assert await served_version(client) == 2


async def test_rollback_serves_the_older_version_and_nothing_cached_for_the_newer(
    client: httpx.AsyncClient,
) -> None:
    v2 = (await client.get("/recommend/5", params={"k": 10})).json()
    assert (await client.get("/recommend/5", params={"k": 10})).json()["cache"] == "l1"
    r = await reload(client, 1)
    assert r.status_code == 200
    assert r.json() == {"previous": 2, "current": 1}
    v1 = (await client.get("/recommend/5", params={"k": 10})).json()
    assert (v1["model_version"], v1["cache"]) == (1, "miss")
    assert v1["items"] != v2["items"]  # the versions have different item embeddings
    back = await reload(client)
    assert back.json() == {"previous": 1, "current": 2}
    again = (await client.get("/recommend/5", params={"k": 10})).json()
    assert again["model_version"] == 2
    assert again["items"] == v2["items"]


def _publish_broken(store_dir: Path, tiny_bundle: Path, tmp_path: Path, how: str) -> int:
    bundle = tmp_path / f"broken-{how}"
    shutil.copytree(tiny_bundle, bundle)
    if how == "wrong dimension":
        emb = np.load(bundle / "item_embeddings.npy")
        np.save(bundle / "item_embeddings.npy", np.hstack([emb, emb[:, :1]]))
    elif how == "wrong item count":
        emb = np.load(bundle / "content_embeddings.npy")
        np.save(bundle / "content_embeddings.npy", emb[:-1])
    elif how == "truncated onnx":
        data = (bundle / "encoder.onnx").read_bytes()
        (bundle / "encoder.onnx").write_bytes(data[: len(data) // 2])
    elif how == "pickled npy":
        np.save(
            bundle / "item_embeddings.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True
        )
    version = ModelStore(store_dir).publish(MODEL, bundle, set_latest=False)
    folder = store_dir / MODEL / str(version)
    if how == "checksum mismatch":
        with (folder / "item_embeddings.npy").open("r+b") as f:
            f.seek(-4, 2)
            f.write(b"\x00\x01\x02\x03")
    elif how == "missing file":
        (folder / "histories.npz").unlink()
    return version


@pytest.mark.parametrize(
    ("how", "reason"),
    [("checksum mismatch", "sha256"), ("missing file", "missing"),
     ("wrong dimension", "item_embeddings.npy: shape"),
     ("wrong item count", "content_embeddings.npy: shape"),
     ("truncated onnx", "encoder.onnx"), ("pickled npy", "item_embeddings.npy")],
)  # fmt: skip
async def test_failed_reload_is_409_and_the_old_bundle_keeps_serving(
    store_dir: Path, tiny_bundle: Path, tmp_path: Path, how: str, reason: str
) -> None:
    bad = _publish_broken(store_dir, tiny_bundle, tmp_path, how)
    async with running_app(make_settings(store_dir)) as client:
        before = (await client.get("/recommend/3")).json()
        r = await reload(client, bad)
        assert r.status_code == 409, r.text
        assert reason in r.json()["detail"]
        assert await served_version(client) == 2
        after = await client.get("/recommend/3")
        assert after.status_code == 200
        assert after.json()["items"] == before["items"]
        metrics = (await client.get("/metrics")).text
        assert 'cinesync_reloads_total{result="failure"} 1.0' in metrics
        models = (await client.get("/admin/models", headers=AUTH)).json()
        assert reason in models["last_error"]


async def test_concurrent_reloads_run_one_at_a_time(client: httpx.AsyncClient) -> None:
    results = await asyncio.gather(*(reload(client, 1) for _ in range(8)))
    codes = sorted(r.status_code for r in results)
    assert codes == [200] + [409] * 7
    assert all("in progress" in r.json()["detail"] for r in results if r.status_code == 409)
    assert await served_version(client) == 1
    assert (await reload(client, 2)).status_code == 200  # and the next one is accepted


async def test_versions_never_go_back_under_concurrent_requests(client: httpx.AsyncClient) -> None:
    users = [str(u) for u in range(12)]
    expected: dict[int, dict[str, list[str]]] = {}
    for version in (1, 2):
        assert (await reload(client, version)).status_code == 200
        expected[version] = {
            u: [i["item_id"] for i in (await client.get(f"/recommend/{u}")).json()["items"]]
            for u in users
        }
    assert (await reload(client, 1)).status_code == 200
    seen: dict[str, list[int]] = {u: [] for u in users}
    stop = asyncio.Event()

    async def hammer(user_id: str) -> None:
        while not stop.is_set():
            r = await client.get(f"/recommend/{user_id}")
            assert r.status_code == 200
            body = r.json()
            assert [i["item_id"] for i in body["items"]] == expected[body["model_version"]][user_id]
            seen[user_id].append(body["model_version"])
            await asyncio.sleep(0)

    tasks = [asyncio.create_task(hammer(u)) for u in users]
    await asyncio.sleep(0.05)
    r = await reload(client, 2)
    await asyncio.sleep(0.05)
    stop.set()
    await asyncio.gather(*tasks)
    assert r.json() == {"previous": 1, "current": 2}
    for versions in seen.values():
        assert versions == sorted(versions)
        assert versions[0] == 1
        assert versions[-1] == 2


async def test_models_lists_store_versions_metrics_and_the_served_bundle(
    client: httpx.AsyncClient,
) -> None:
    r = await client.get("/admin/models", headers=AUTH)
    assert r.status_code == 200
    body = r.json()
    assert (body["name"], body["latest"], body["reloading"]) == (MODEL, 2, False)
    assert [v["version"] for v in body["versions"]] == [1, 2]
    assert [v["served"] for v in body["versions"]] == [False, True]
    assert all("ndcg@10" in v["metrics"]["test"] for v in body["versions"])
    served = body["served"]
    assert served["version"] == 2
    assert served["providers"] == ["CPUExecutionProvider"]
    assert served["index"]["kind"] == "flat"
    assert served["index"]["recall_at_10"] == 1.0
