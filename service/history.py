"""Live (online) history: the events users post, as EXTERNAL item ids, oldest -> newest.

External ids survive model reloads (internal indices do not). Order is arrival order; ``ts`` is
accepted for the interface but neither stored nor used to reorder. A repeat of the user's last
item (a view then a rating of the same film) collapses into one entry, so a flood of the same
event cannot push a user's real history out. Every store is bounded: ``cap`` items per user and,
in process, ``max_users`` users (least recently used dropped first).

``RedisHistory`` keeps a capped list per user (Lua: compare last, RPUSH, LTRIM, PEXPIRE, one
atomic round trip) and writes every event through to an in-process ``MemoryHistory`` too; when
Redis fails or its breaker is open, reads and writes use that local store (counted), and nothing
raises to the request. Events accepted during an outage live only in this process.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar, runtime_checkable

import redis.asyncio as aioredis

from service import keys
from service.breaker import CircuitBreaker
from service.metrics import ServiceMetrics
from service.redis_client import REDIS_ERRORS

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_ITEM_ID_CHARS = 256

_APPEND_LUA = """
if redis.call('LINDEX', KEYS[1], -1) ~= ARGV[1] then
  redis.call('RPUSH', KEYS[1], ARGV[1])
  redis.call('LTRIM', KEYS[1], -tonumber(ARGV[2]), -1)
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return redis.call('LLEN', KEYS[1])
"""


@runtime_checkable
class LiveHistory(Protocol):
    """A user's recent events, newest last."""

    async def append(self, user_id: str, item_id: str, ts: float) -> None: ...

    async def recent(self, user_id: str, limit: int) -> list[str]: ...

    async def close(self) -> None: ...


def _check_item(item_id: str) -> None:
    if not item_id or len(item_id) > MAX_ITEM_ID_CHARS:
        raise ValueError(f"item id must have 1..{MAX_ITEM_ID_CHARS} characters")


class MemoryHistory:
    """In-process store: ``cap`` items per user, ``max_users`` users (LRU)."""

    def __init__(self, cap: int = 200, max_users: int = 100_000) -> None:
        if cap < 1 or max_users < 1:
            raise ValueError(f"cap and max_users must be >= 1, got {cap}, {max_users}")
        self.cap = cap
        self.max_users = max_users
        self._users: OrderedDict[str, deque[str]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """Users held."""
        return len(self._users)

    def append_now(self, user_id: str, item_id: str) -> None:
        _check_item(item_id)
        token = keys.user_token(user_id)  # bounded size whatever the client sent
        with self._lock:
            events = self._users.get(token)
            if events is None:
                events = self._users[token] = deque(maxlen=self.cap)
            self._users.move_to_end(token)
            if not events or events[-1] != item_id:
                events.append(item_id)
            while len(self._users) > self.max_users:
                self._users.popitem(last=False)

    def recent_now(self, user_id: str, limit: int) -> list[str]:
        if limit <= 0:
            return []
        with self._lock:
            events = self._users.get(keys.user_token(user_id))
            return [] if events is None else list(events)[-limit:]

    async def append(self, user_id: str, item_id: str, ts: float) -> None:
        self.append_now(user_id, item_id)

    async def recent(self, user_id: str, limit: int) -> list[str]:
        return self.recent_now(user_id, limit)

    async def close(self) -> None:
        with self._lock:
            self._users.clear()


class RedisHistory:
    """Redis capped lists, with an in-process store written through and used as the fallback."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        model: str,
        cap: int = 200,
        ttl_s: float = 30 * 24 * 3600,
        timeout_s: float = 0.05,
        breaker: CircuitBreaker,
        local: MemoryHistory | None = None,
        metrics: ServiceMetrics | None = None,
    ) -> None:
        if ttl_s <= 0 or timeout_s <= 0:
            raise ValueError(f"ttl_s and timeout_s must be > 0, got {ttl_s}, {timeout_s}")
        keys.events_key(model, "probe")  # validates the model name now, not on the first event
        self._redis = client
        self._model = model
        self.cap = cap
        self._ttl_ms = max(1, round(ttl_s * 1000))
        self._timeout_s = timeout_s
        self.breaker = breaker
        self.local = local if local is not None else MemoryHistory(cap=cap)
        self._metrics = metrics

    async def _call(self, command: Callable[[], Awaitable[T]]) -> T | None:
        """The command's answer, or None when Redis failed, timed out or the breaker is open."""
        if not self.breaker.allow():
            return None
        try:
            result = await asyncio.wait_for(command(), self._timeout_s)
        except REDIS_ERRORS as exc:
            self.breaker.record_failure()
            log.warning("live history: Redis failed (%s: %s)", type(exc).__name__, exc)
            return None
        self.breaker.record_success()
        return result

    def _fallback(self, op: str) -> None:
        if self._metrics is not None:
            self._metrics.count_history_fallback(op)

    async def append(self, user_id: str, item_id: str, ts: float) -> None:
        self.local.append_now(user_id, item_id)
        key = keys.events_key(self._model, user_id)
        ok = await self._call(
            lambda: self._redis.eval(_APPEND_LUA, 1, key, item_id, self.cap, self._ttl_ms)
        )
        if ok is None:
            self._fallback("append")

    async def recent(self, user_id: str, limit: int) -> list[str]:
        if limit <= 0:
            return []
        key = keys.events_key(self._model, user_id)
        raw = await self._call(lambda: self._redis.lrange(key, -min(limit, self.cap), -1))
        if raw is None:
            self._fallback("recent")
            return self.local.recent_now(user_id, limit)
        return [v.decode() if isinstance(v, bytes) else str(v) for v in raw]

    async def close(self) -> None:
        await self.local.close()
