"""The app's long-lived resources, opened in the lifespan and closed at shutdown. Handlers reach
them through the `Annotated` dependencies of service/deps.py, never through globals."""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis

from model_store.store import ModelStore
from service.breaker import CircuitBreaker
from service.bundle import Bundle, load_bundle
from service.cache import Cache, NullCache, TieredCache
from service.cache_l1 import L1Cache
from service.cache_redis import RedisCache
from service.exposure import OnlineExposure
from service.history import LiveHistory, MemoryHistory, RedisHistory
from service.index import set_threads
from service.invalidation import Invalidations
from service.metrics import ServiceMetrics
from service.ratelimit import ClientResolver, EventRateLimit, TokenBuckets
from service.recommender import Recommender
from service.redis_client import REDIS_ERRORS, make_redis
from service.registry import ModelRegistry
from service.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Lifecycle:
    """Process-level flags; `draining` turns readiness off before shutdown (SIGTERM)."""

    draining: bool = False


@dataclass
class AppState:
    settings: Settings
    metrics: ServiceMetrics
    lifecycle: Lifecycle
    store: ModelStore
    registry: ModelRegistry
    recommender: Recommender
    cache: TieredCache
    history: LiveHistory
    exposure: OnlineExposure
    event_limiter: EventRateLimit
    redis: aioredis.Redis | None = None
    invalidations: Invalidations | None = None
    background: set[asyncio.Task[None]] = field(default_factory=set)
    breaker: CircuitBreaker | None = None  # Redis's, probed in the background while open

    @property
    def ready(self) -> bool:
        return self.registry.current is not None and not self.lifecycle.draining


def redacted(url: str) -> str:
    """The Redis URL without its password, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


async def probe_redis(client: aioredis.Redis, timeout_s: float) -> bool:
    try:
        async with asyncio.timeout(timeout_s):
            await client.ping()
    except REDIS_ERRORS:
        return False
    return True


def _on_swap(metrics: ServiceMetrics, exposure: OnlineExposure, bundle: Bundle) -> None:
    metrics.set_model(bundle.name, bundle.version)
    metrics.set_index_recall(bundle.index_recall)
    metrics.set_bundle_ready(True)
    exposure.set_catalogue_size(bundle.n_items)
    exposure.reset()


@dataclass
class _RedisParts:
    client: aioredis.Redis
    l2: Cache
    history: RedisHistory
    breaker: CircuitBreaker


async def _open_redis(
    settings: Settings, metrics: ServiceMetrics, local: MemoryHistory
) -> _RedisParts | None:
    rs = settings.redis
    if rs.url is None:
        log.info(
            "no Redis configured (CINESYNC_REDIS__URL unset): L1 cache and in-process "
            "live history only"
        )
        return None
    client = make_redis(
        rs.url,
        socket_timeout_s=rs.socket_timeout_s,
        connect_timeout_s=rs.connect_timeout_s,
        max_connections=rs.max_connections,
    )
    breaker = CircuitBreaker(
        rs.breaker_failures, rs.breaker_reset_s, on_change=metrics.set_breaker_open
    )
    reachable = await probe_redis(client, rs.connect_timeout_s)
    if reachable:
        log.info("Redis reachable", extra={"redis": redacted(rs.url)})
    else:
        log.warning(
            "Redis unreachable at start: serving from L1 only until it answers",
            extra={"redis": redacted(rs.url)},
        )
    l2: Cache = NullCache()
    if settings.cache.l2_enabled:
        l2 = RedisCache(
            client,
            ttl_s=settings.cache.l2_ttl_s,
            timeout_s=rs.socket_timeout_s,
            breaker=breaker,
            metrics=metrics,
        )
    history = RedisHistory(
        client,
        model=settings.model_name,
        cap=settings.events.history_cap,
        timeout_s=rs.socket_timeout_s,
        breaker=breaker,
        local=local,
        metrics=metrics,
    )
    return _RedisParts(client, l2, history, breaker)


async def open_state(settings: Settings, metrics: ServiceMetrics, lifecycle: Lifecycle) -> AppState:
    """Build every resource; Redis is optional and never a reason not to start."""
    set_threads(settings.faiss_threads)
    store = ModelStore(settings.store_dir)
    local = MemoryHistory(cap=settings.events.history_cap, max_users=settings.events.max_users)
    redis = await _open_redis(settings, metrics, local)
    l1 = L1Cache(settings.cache.l1_size, settings.cache.l1_ttl_s, metrics)
    cache = TieredCache(l1, redis.l2 if redis is not None else NullCache())
    metrics.watch_dropped("l2_write", lambda: cache.skipped_writes)
    invalidations = None
    if redis is not None:
        invalidations = Invalidations(
            redis.client,
            settings.model_name,
            cache.invalidate_local,  # the event's own Redis step dropped the user's L2 lists
            on_subscribed=cache.forget_local,
            breaker=redis.breaker,
            timeout_s=settings.redis.socket_timeout_s,
        )
        announcer = invalidations
        metrics.watch_dropped("announcement", lambda: announcer.dropped)
    history: LiveHistory = redis.history if redis is not None else local
    exposure = metrics.online_exposure(settings.exposure_window, 0)
    metrics.set_bundle_ready(False)
    registry = ModelRegistry(
        functools.partial(_load, store, settings),
        on_swap=functools.partial(_on_swap, metrics, exposure),
        on_result=metrics.count_reload,
    )
    recommender = Recommender(
        registry,
        cache,
        history,
        metrics,
        exposure,
        n_full=settings.n_full,
        n_content=settings.n_content,
        inline_max_items=settings.inline_compute_max_items,
        feature_queries=settings.feature_queries,
        announce=invalidations.publish if invalidations is not None else None,
    )
    if redis is not None:
        redis.history.on_synced = functools.partial(recommender.forget_user, settings.model_name)
    limiter = EventRateLimit(
        ClientResolver(settings.trusted_proxies),
        TokenBuckets(
            settings.events.rate_per_s, settings.events.burst, settings.events.max_clients
        ),
    )
    return AppState(
        settings,
        metrics,
        lifecycle,
        store,
        registry,
        recommender,
        cache,
        history,
        exposure,
        limiter,
        redis.client if redis is not None else None,
        invalidations,
        breaker=redis.breaker if redis is not None else None,
    )


def _load(store: ModelStore, settings: Settings, version: int | None) -> Bundle:
    return load_bundle(store, settings.model_name, version, settings)


async def close_state(state: AppState) -> None:
    """Close caches, live history and the Redis client (each at most once)."""
    state.metrics.set_bundle_ready(False)
    tasks = list(state.background)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    if isinstance(state.history, RedisHistory):  # before the caches close: it invalidates users
        await state.history.flush(state.settings.events.shutdown_flush_s)
    await state.cache.close()
    await state.history.close()
    if state.redis is not None:
        try:
            await state.redis.aclose()
        except REDIS_ERRORS as exc:
            log.warning("closing Redis: %s", exc)
