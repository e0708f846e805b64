"""L2: recommendation responses in Redis, behind a time budget and a circuit breaker.

Values carry a header (``CS1`` + CRC-32 of the payload), so a corrupt, truncated or old-format
value is a miss (counted as an error) and is overwritten by the next ``set``. Each key is also
added to the user's index set (in the same Lua script as the SET), which ``invalidate_user`` deletes
with every key it lists. Every call is bounded by ``timeout_s``; while the breaker is open a call
costs nothing and answers a miss. Nothing here raises to the request.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis.asyncio as aioredis

from service import keys
from service.bounded import BoundedKeys
from service.breaker import CircuitBreaker
from service.metrics import ServiceMetrics
from service.redis_client import REDIS_ERRORS

log = logging.getLogger(__name__)
T = TypeVar("T")

MAGIC = b"CS1"
_HEADER = len(MAGIC) + 4


def encode_value(payload: bytes) -> bytes:
    """``CS1`` + big-endian CRC-32 of the payload + the payload."""
    return MAGIC + zlib.crc32(payload).to_bytes(4, "big") + payload


def decode_value(raw: bytes) -> bytes | None:
    """The payload, or None when the header or the checksum is wrong."""
    if len(raw) < _HEADER or not raw.startswith(MAGIC):
        return None
    payload = raw[_HEADER:]
    if zlib.crc32(payload).to_bytes(4, "big") != raw[len(MAGIC) : _HEADER]:
        return None
    return payload


class _UnavailableError(Exception):
    """Redis failed, timed out, or the breaker is open."""


# Deletes a user's index set (KEYS[n]) and every key it lists, atomically: a SET that comes
# after it starts a fresh index, one that came before is deleted. Also run inside the live
# history's append script (service.history), so an event and the drop of the user's L2 lists
# are one step.
def drop_user_lua(n: int) -> str:
    """Lua that deletes the index set KEYS[n] and its keys, leaving their count in ``dropped``."""
    return f"""
local members = redis.call('SMEMBERS', KEYS[{n}])
for _, k in ipairs(members) do redis.call('DEL', k) end
redis.call('DEL', KEYS[{n}])
local dropped = #members
"""


_INVALIDATE_LUA = drop_user_lua(1) + "return dropped\n"


# Stores a value and adds its key to the user's index set, both with the TTL: one atomic command
# (a MULTI/EXEC pipeline of the same three costs about 1.6x the client CPU in redis.asyncio).
# With KEYS[3] (the user's event generation) and ARGV[4] (the generation the value was computed
# from), the write is refused once the user has posted an event since: another replica may have
# taken that event and deleted the user's keys already.
# ARGV[3] bounds the user's index: a client sweeping parameters (k, genres) cannot grow it, and
# with it the work of the user's next invalidation, without limit; past it the write is dropped
# (2). An index expires ARGV[2] after its last write.
_SET_LUA = """
if KEYS[3] and (redis.call('GET', KEYS[3]) or '0') ~= ARGV[4] then return 0 end
if redis.call('SISMEMBER', KEYS[2], KEYS[1]) == 0
   and redis.call('SCARD', KEYS[2]) >= tonumber(ARGV[3]) then return 2 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SADD', KEYS[2], KEYS[1])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
"""


class RedisCache:
    """The L2 ``Cache`` implementation."""

    tier = "l2"

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        ttl_s: float,
        timeout_s: float,
        breaker: CircuitBreaker,
        metrics: ServiceMetrics | None = None,
        max_pending_invalidations: int = 1000,
        flush_batch: int = 128,
        max_keys_per_user: int = 64,
    ) -> None:
        if ttl_s <= 0 or timeout_s <= 0:
            raise ValueError(f"ttl_s and timeout_s must be > 0, got {ttl_s}, {timeout_s}")
        self._redis = client
        self._ttl_ms = max(1, round(ttl_s * 1000))
        self._timeout_s = timeout_s
        self.breaker = breaker
        self._metrics = metrics
        # Users whose invalidation failed (Redis away): their keys are misses until it is done.
        self._pending = BoundedKeys(max_pending_invalidations)
        if metrics is not None:
            metrics.watch_dropped("l2_invalidation", lambda: self._pending.dropped)
        self._flush_batch = flush_batch
        self.max_keys_per_user = max_keys_per_user
        self._set_script = client.register_script(_SET_LUA)

    async def _call(self, command: Callable[[], Awaitable[T]]) -> T:
        """Run one Redis call within the budget, reporting to the breaker."""
        if not self.breaker.allow():
            raise _UnavailableError("breaker open")
        try:
            async with asyncio.timeout(self._timeout_s):  # no extra task, unlike wait_for
                result = await command()
        except REDIS_ERRORS as exc:
            self.breaker.record_failure()
            raise _UnavailableError(f"{type(exc).__name__}: {exc}") from exc
        self.breaker.record_success()
        return result

    def _count(self, result: str) -> None:
        if self._metrics is not None:
            self._metrics.cache_result("l2", result)

    async def get(self, key: str) -> bytes | None:
        try:
            if self._pending:
                await self._flush_pending()
                if keys.index_key_for(key) in self._pending:
                    self._count("miss")
                    return None
            raw = await self._call(lambda: self._redis.get(key))
        except _UnavailableError:
            self._count("error")
            return None
        if raw is None:
            self._count("miss")
            return None
        payload = decode_value(raw) if isinstance(raw, bytes) else None
        if payload is None:
            log.warning("cache value under %s is corrupt or of an old format: a miss", key)
            self._count("error")
        else:
            self._count("hit")
        return payload

    async def set(
        self, key: str, value: bytes, user_id: str, model: str, generation: str | None = None
    ) -> None:
        if generation == keys.UNKNOWN_GENERATION:  # Redis would refuse it: not a stale write
            log.debug("cache set of %s skipped: computed from events read in process", key)
            return
        keys_ = [key, keys.user_index_key(model, user_id)]
        args: list[bytes | int | str] = [encode_value(value), self._ttl_ms, self.max_keys_per_user]
        if generation is not None:
            keys_.append(keys.events_generation_key(model, user_id))
            args.append(generation)
        try:
            stored = await self._call(lambda: self._set_script(keys=keys_, args=args))
        except _UnavailableError as exc:
            log.debug("cache set of %s skipped: %s", key, exc)
            return
        if stored == 2:
            log.debug(
                "cache set of %s skipped: %d lists of the user cached", key, self.max_keys_per_user
            )
        elif not stored and self._metrics is not None:
            self._metrics.stale_writes.inc()

    async def invalidate_user(self, model: str, user_id: str) -> None:
        index_key = keys.user_index_key(model, user_id)
        try:
            await self._call(lambda: self._redis.eval(_INVALIDATE_LUA, 1, index_key))
        except _UnavailableError as exc:
            log.warning("cache invalidation deferred until Redis answers: %s", exc)
            self._pending.add(index_key)

    async def _flush_pending(self) -> None:
        """Carry out up to ``flush_batch`` deferred invalidations in one round trip."""
        batch = list(self._pending)[: self._flush_batch]
        pipe = self._redis.pipeline(transaction=False)
        for index_key in batch:
            pipe.eval(_INVALIDATE_LUA, 1, index_key)
        await self._call(pipe.execute)
        for index_key in batch:
            self._pending.discard(index_key)

    async def close(self) -> None:
        await self._redis.aclose()
