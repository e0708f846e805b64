"""`cinesync demo`: train SASRec on the bundled ml-latest-small when the store has no version of
the model (a short config, offline), publish it, then serve it on localhost. Redis is used when
one answers at CINESYNC_REDIS__URL (default redis://127.0.0.1:6379/0), else L1 only."""

from __future__ import annotations

import logging
import secrets
import sys
from pathlib import Path

from pydantic import SecretStr

from model_store.errors import StoreError
from model_store.fsops import describe
from model_store.safe_load import read_jsonl
from model_store.store import ModelStore
from service.errors import SettingsError
from service.settings import Settings, load_settings
from training.errors import CineSyncError

log = logging.getLogger(__name__)

DEMO_CONFIG = Path(__file__).resolve().parent / "configs" / "sasrec-demo.toml"
DEMO_DATASET = "ml-latest-small"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
PROBE_TIMEOUT_S = 0.3


def redis_answers(url: str) -> bool:
    """True when a Redis server at `url` answers PING within a fraction of a second."""
    import redis

    client = redis.Redis.from_url(
        url, socket_connect_timeout=PROBE_TIMEOUT_S, socket_timeout=PROBE_TIMEOUT_S
    )
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def ensure_model(settings: Settings) -> int:
    """The version to serve: LATEST if there is one, else a freshly trained and published one."""
    store = ModelStore(settings.store_dir)
    version = store.latest(settings.model_name)
    if version is not None:
        check_reusable(store, settings, version)
        print(f"reusing {settings.model_name} version {version} from {settings.store_dir}")
        return version
    print(
        f"no {settings.model_name!r} model in {settings.store_dir}: training SASRec on the "
        f"bundled {DEMO_DATASET} ({DEMO_CONFIG.name}, a minute or two on a CPU)"
    )
    from training.train_cli import run_train

    run_train(
        model="sasrec",
        dataset=DEMO_DATASET,
        config=DEMO_CONFIG,
        out=None,
        epochs=None,
        resume=False,
        device="auto",
        seed=None,
        publish=True,
        store=settings.store_dir,
        name=settings.model_name,
        data_dir=None,
    )
    version = store.latest(settings.model_name)
    if version is None:
        raise StoreError(f"training finished but {settings.store_dir} has no published version")
    return version


def check_reusable(store: ModelStore, settings: Settings, version: int) -> None:
    """Verify the version LATEST names; a damaged one is a StoreError that says how to fix it
    (the demo never trains over a store that already has a LATEST: that is the user's model)."""
    name, root = settings.model_name, settings.store_dir
    try:
        store.verify(name, version)
    except StoreError as exc:
        raise StoreError(
            f"{name} version {version} (LATEST in {root}) cannot be served: {exc}. Point LATEST "
            f"at a good version (cinesync store rollback --store {root} --name {name}) or remove "
            f"{root / name} to have the demo train a new model"
        ) from exc


def example_ids(settings: Settings, version: int) -> tuple[str, str]:
    """A known user and the catalogue's most popular item, for the example calls."""
    bundle = ModelStore(settings.store_dir).verify(settings.model_name, version)
    try:
        rows = read_jsonl(bundle.path("items.jsonl"))
    except OSError as exc:
        raise StoreError(
            f"reading items.jsonl of {settings.model_name} v{version} failed: {describe(exc)}"
        ) from exc
    top = max(rows, key=lambda row: int(row.get("popularity", 0)))
    return "1", str(top["item_id"])


def print_examples(base: str, user_id: str, item_id: str, token: str) -> None:
    print(
        f"\nCineSync is starting on {base} (OpenAPI docs: {base}/docs). Try:\n"
        f"  curl -s {base}/readyz\n"
        f"  curl -s '{base}/recommend/{user_id}?k=5'\n"
        f"  curl -s '{base}/recommend/{user_id}?k=5&genres=Comedy'\n"
        f"  curl -s '{base}/recommend/someone-new?k=5'\n"
        f"  curl -s -X POST {base}/users/{user_id}/events -H 'Content-Type: application/json' "
        f'-d \'{{"item_id": "{item_id}", "type": "view"}}\'\n'
        f"  curl -s {base}/explain/{user_id}/{item_id}\n"
        f"  curl -s -H 'Authorization: Bearer {token}' {base}/admin/models\n",
        flush=True,
    )


def run_demo(host: str = "127.0.0.1", port: int = 8000) -> None:
    """Train if needed, then serve (blocks until Ctrl-C). Bad settings, data or store: exit 2."""
    try:
        settings = load_settings()
        version = ensure_model(settings)
        user_id, item_id = example_ids(settings, version)
    except (SettingsError, StoreError, CineSyncError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    _serve_demo(settings, host, port, user_id, item_id)


def _serve_demo(settings: Settings, host: str, port: int, user_id: str, item_id: str) -> None:
    from service.main import serve

    url = settings.redis.url or DEFAULT_REDIS_URL
    if redis_answers(url):
        print(f"Redis answers at {url}: L1 + L2 caches, live histories in Redis")
        redis = settings.redis.model_copy(update={"url": url})
    else:
        print(f"no Redis at {url}: L1 (in-process) cache and in-process live histories only")
        redis = settings.redis.model_copy(update={"url": None})
    token = settings.admin_token_value() or secrets.token_urlsafe(18)
    settings = settings.model_copy(update={"redis": redis, "admin_token": SecretStr(token)})
    print_examples(f"http://{host}:{port}", user_id, item_id, token)
    serve(host=host, port=port, settings=settings)
