"""The one place a Redis client is made: short timeouts, no retries, a bounded blocking pool."""

from __future__ import annotations

from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.connection import BlockingConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

# Errors a Redis call may raise that mean "Redis is not answering properly": a miss, never a 5xx.
REDIS_ERRORS: tuple[type[BaseException], ...] = (aioredis.RedisError, OSError, TimeoutError)


def make_redis(
    url: str,
    *,
    socket_timeout_s: float,
    connect_timeout_s: float,
    max_connections: int,
    pool_timeout_s: float | None = None,
) -> aioredis.Redis:
    """A ``redis.asyncio.Redis`` (hiredis parser when installed) on a ``BlockingConnectionPool``.

    A caller that finds every connection busy waits at most ``pool_timeout_s`` (default: the
    socket timeout) and then gets a ``redis.ConnectionError`` — a miss for the caches — instead of
    "Too many connections". Only a connection error is retried, once and at once (a stale pooled
    connection); callers have a time budget, and the circuit breaker deals with a Redis that is
    down.
    """
    scheme = urlsplit(url).scheme
    if scheme not in {"redis", "rediss", "unix"}:
        raise ValueError(f"unsupported Redis URL scheme {scheme!r} (redis://, rediss://, unix://)")
    if max_connections < 1:
        raise ValueError(f"max_connections must be >= 1, got {max_connections}")
    if socket_timeout_s <= 0 or connect_timeout_s <= 0:
        raise ValueError(f"timeouts must be > 0, got {socket_timeout_s}, {connect_timeout_s}")
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=socket_timeout_s if pool_timeout_s is None else pool_timeout_s,
        socket_timeout=socket_timeout_s,
        socket_connect_timeout=connect_timeout_s,
        socket_keepalive=True,
        # One immediate retry on a connection error only: a pooled connection that went stale
        # (Redis restarted) is replaced at once; a timeout is never retried.
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        health_check_interval=0,
    )
    return aioredis.Redis.from_pool(pool)  # the client owns the pool: aclose() closes both
