"""Live (online) history: the events users post, as EXTERNAL item ids, oldest -> newest.

External ids survive model reloads (internal indices do not). Order is arrival order; ``ts`` is
accepted for the interface but neither stored nor used to reorder. A repeat of the user's last
item (a view then a rating of the same film) collapses into one entry, so a flood of the same
event cannot push a user's real history out. Every store is bounded: ``cap`` items per user and,
in process, ``max_users`` users (least recently used dropped first).

``RedisHistory`` keeps a capped list per user (Lua: compare last, RPUSH, LTRIM, PEXPIRE, one
atomic round trip, which also drops the user's L2 lists) with the ids of the latest events, so a
push that Redis ran after the client timed out on it adds nothing when it is sent again; it
writes every event through to an in-process ``MemoryHistory`` too; when Redis fails or its
breaker is open, reads and writes use that local store (counted), and nothing raises to the
request. Events accepted while Redis could not take them wait in a bounded
``PendingEvents`` and are pushed, in order, once it answers again: by the user's next call on
this replica, or by the background ``sync`` within a second, whichever comes first (a user's
pushes run one at a time, so Redis gets the events in the order they were accepted). A push
that did not come with the user's own event is followed by ``on_synced(user_id)``, which the
service wires to invalidate the user everywhere (L2 and, over pub/sub, every L1): other replicas
may have served that user from Redis without those events meanwhile. At shutdown, ``flush``
keeps pushing them for a bounded time, then logs what is lost; a push cancelled mid-way (the
request went away) puts its events back, as a failed one does.

Every append to a user's Redis list also raises the user's event *generation* (a counter, in the
same script), and a read returns the generation it saw with the events (one script). A replica
hands that generation to its L2 write, which Redis refuses when the user has posted an event
since (``service.cache_redis``): a list computed from the old events can never land in L2 after
another replica took the new event and invalidated the user.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import uuid
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar, runtime_checkable

import redis.asyncio as aioredis

from service import keys
from service.breaker import CircuitBreaker
from service.cache_redis import drop_user_lua
from service.keyed_lock import KeyedLock
from service.metrics import ServiceMetrics
from service.redis_client import REDIS_ERRORS

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_ITEM_ID_CHARS = 256
# how long Redis remembers the ids of a user's events after the user's last push: a push sent
# again (its first send timed out on the client, though Redis ran it) comes within seconds
EVENT_IDS_TTL_S = 600.0

# KEYS[1] = the user's list, KEYS[2] = its generation, KEYS[3] = the index of the user's L2
# lists (service.cache_redis), dropped with them in the same step, KEYS[4] = the ids of the
# user's latest events; ARGV = cap, ttl_ms, ids_ttl_ms, seed, then (event id, item) pairs. An
# event whose id is known was applied by an earlier send of the same push (one the client timed
# out on) and is skipped; a repeat of the last item collapses. The ids live ids_ttl_ms after the
# user's last push (a re-send comes within seconds), so idle users cost Redis nothing for them.
# With seed = 1 nothing happens unless the list is gone (re-seeding a restarted Redis: two
# replicas doing it at once must not both push).
_APPEND_LUA = (
    drop_user_lua(3)
    + """
if ARGV[4] == '1' and redis.call('EXISTS', KEYS[1]) == 1 then return -1 end
local last = redis.call('LINDEX', KEYS[1], -1)
for i = 5, #ARGV, 2 do
  if not redis.call('LPOS', KEYS[4], ARGV[i]) then
    if ARGV[i + 1] ~= last then
      redis.call('RPUSH', KEYS[1], ARGV[i + 1])
      last = ARGV[i + 1]
    end
    redis.call('RPUSH', KEYS[4], ARGV[i])
  end
end
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[1]), -1)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('LTRIM', KEYS[4], -tonumber(ARGV[1]), -1)
redis.call('PEXPIRE', KEYS[4], ARGV[3])
redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return redis.call('LLEN', KEYS[1])
"""
)

# KEYS as above; ARGV[1] = how many of the newest events. The generation and the events, read
# atomically (an append between two separate reads would pair new events with an old generation).
_READ_LUA = """
return {redis.call('GET', KEYS[2]) or '0', redis.call('LRANGE', KEYS[1], -tonumber(ARGV[1]), -1)}
"""

UNKNOWN_GENERATION = keys.UNKNOWN_GENERATION  # (see there)


@dataclass(frozen=True)
class LiveEvents:
    """One read of a user's live events (oldest first) and the generation it saw.

    ``generation`` is None when the events are not shared between replicas (the in-process
    store), so there is nothing to guard an L2 write against.
    """

    items: list[str]
    generation: str | None


@runtime_checkable
class LiveHistory(Protocol):
    """A user's recent events, newest last: at most ``cap`` per user."""

    cap: int

    async def append(self, user_id: str, item_id: str, ts: float) -> None: ...

    async def read(self, user_id: str, limit: int) -> LiveEvents: ...

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

    async def read(self, user_id: str, limit: int) -> LiveEvents:
        return LiveEvents(self.recent_now(user_id, limit), None)

    async def recent(self, user_id: str, limit: int) -> list[str]:
        return self.recent_now(user_id, limit)

    async def close(self) -> None:
        with self._lock:
            self._users.clear()


Event = tuple[str, str]  # (event id, item id): the id lets Redis skip an event sent twice


class PendingEvents:
    """Events accepted by this replica that Redis has not taken yet, per user id, oldest first.

    At most ``cap`` events per user (the newest kept) and ``max_users`` users; beyond that the
    user touched least recently is dropped, with a warning (their events stay in this replica's
    in-process history). User ids are kept as given (their length is bounded by the API).
    """

    def __init__(self, cap: int, max_users: int) -> None:
        self.cap, self.max_users = cap, max_users
        self._users: OrderedDict[str, list[Event]] = OrderedDict()
        self.dropped_users = 0
        self.dropped_events = 0  # lost for good: past the per-user cap or with a dropped user

    def __len__(self) -> int:
        return len(self._users)

    def __contains__(self, user_id: object) -> bool:
        return user_id in self._users

    def users(self) -> list[str]:
        """The user ids with pending events, least recently touched first."""
        return list(self._users)

    def take(self, user_id: str) -> list[Event]:
        return self._users.pop(user_id, [])

    def restore(self, user_id: str, events: list[Event]) -> None:
        """Put back ``events`` that a push did not deliver, before any queued since."""
        kept = events + self._users.pop(user_id, [])
        self.dropped_events += max(0, len(kept) - self.cap)
        self._users[user_id] = kept[-self.cap :]
        while len(self._users) > self.max_users:
            dropped, lost = self._users.popitem(last=False)
            self.dropped_users += 1
            self.dropped_events += len(lost)
            log.warning("live history: events of user %r never reached Redis", dropped[:64])


class RedisHistory:
    """Redis capped lists, with an in-process store written through and used as the fallback.

    Events that could not reach Redis are kept (bounded) and pushed, in order, with the user's
    next successful call; a user whose Redis list is empty while this process holds events (a
    restarted Redis) gets the list re-seeded from the in-process store.
    """

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
        self._ids_ttl_ms = min(self._ttl_ms, round(EVENT_IDS_TTL_S * 1000))
        self._timeout_s = timeout_s
        self.breaker = breaker
        self.local = local if local is not None else MemoryHistory(cap=cap)
        self._metrics = metrics
        self.pending = PendingEvents(cap, self.local.max_users)
        # a user's pushes, one at a time: events reach Redis in the order this replica took them,
        # and a read waits for a push of that user's pending events that is under way
        self._pushes = KeyedLock()
        if metrics is not None:
            metrics.history_pending_users.set_function(lambda: len(self.pending))
            metrics.watch_dropped("pending_events", lambda: self.pending.dropped_events)
        # set by the service: invalidate the user everywhere after a push of pending events
        self.on_synced: Callable[[str], Awaitable[None]] | None = None
        self._append_script = client.register_script(_APPEND_LUA)
        self._read_script = client.register_script(_READ_LUA)
        self._origin = uuid.uuid4().hex[:12]  # event ids: this replica's prefix + a counter
        self._events_taken = itertools.count()

    async def _call(self, command: Callable[[], Awaitable[T]]) -> T | None:
        """The command's answer, or None when Redis failed, timed out or the breaker is open."""
        if not self.breaker.allow():
            return None
        try:
            async with asyncio.timeout(self._timeout_s):  # no extra task, unlike wait_for
                result = await command()
        except REDIS_ERRORS as exc:
            self.breaker.record_failure()
            log.warning("live history: Redis failed (%s: %s)", type(exc).__name__, exc)
            return None
        self.breaker.record_success()
        return result

    def _keys(self, user_id: str) -> list[str]:
        return [
            keys.events_key(self._model, user_id),
            keys.events_generation_key(self._model, user_id),
        ]

    def _event(self, item_id: str) -> Event:
        return f"{self._origin}.{next(self._events_taken):x}", item_id

    async def _push(self, user_id: str, events: list[Event], *, seed: bool = False) -> bool:
        keys_ = [
            *self._keys(user_id),
            keys.user_index_key(self._model, user_id),
            keys.event_ids_key(self._model, user_id),
        ]
        args: list[str | int] = [self.cap, self._ttl_ms, self._ids_ttl_ms, int(seed)]
        args += itertools.chain.from_iterable(events)
        return await self._call(lambda: self._append_script(keys=keys_, args=args)) is not None

    async def _push_or_restore(self, user_id: str, events: list[Event]) -> bool:
        """Push ``events``; unless delivered (a failure, or the caller cancelled mid-push), they
        go back to the front of the user's pending events (with their ids: if Redis did run the
        push, sending it again adds nothing)."""
        delivered = False
        try:
            delivered = await self._push(user_id, events)
        finally:
            if not delivered:
                self.pending.restore(user_id, events)
        return delivered

    def _fallback(self, op: str) -> None:
        if self._metrics is not None:
            self._metrics.count_history_fallback(op)

    async def append(self, user_id: str, item_id: str, ts: float) -> None:
        self.local.append_now(user_id, item_id)
        async with self._pushes.hold(user_id):
            events = [*self.pending.take(user_id), self._event(item_id)]
            if not await self._push_or_restore(user_id, events):  # (the caller invalidates after)
                self._fallback("append")

    async def _push_pending(self, user_id: str) -> bool:
        """Push the user's pending events, if any; False when they could not be delivered."""
        if user_id not in self.pending and not self._pushes.busy(user_id):
            return True  # the common case, without taking the lock
        async with self._pushes.hold(user_id):
            events = self.pending.take(user_id)
            if not events:
                return True
            if not await self._push_or_restore(user_id, events):
                return False
        if self.on_synced is not None:
            await self.on_synced(user_id)
        return True

    async def sync(self, max_users: int = 1000) -> int:
        """Push the pending events of up to ``max_users`` users (oldest first) while Redis
        answers; the number of users whose events were delivered."""
        delivered = 0
        for user_id in self.pending.users()[:max_users]:
            if not await self._push_pending(user_id):  # (at once while the breaker is open)
                break
            delivered += 1
        if delivered:
            log.info("live history: pushed the pending events of %d users", delivered)
        return delivered

    async def run_sync(self, interval_s: float = 1.0) -> None:
        """``sync`` every ``interval_s`` while there is something pending, until cancelled; an
        unexpected error is logged and the next round runs (the events stay pending)."""
        while True:
            await asyncio.sleep(interval_s)
            if self.pending:
                try:
                    await self.sync()
                except Exception:
                    log.exception("live history: the background sync failed; retrying")

    async def flush(self, timeout_s: float, retry_s: float = 0.1) -> int:
        """At shutdown: push every pending event while Redis answers, for up to ``timeout_s``
        (retrying every ``retry_s`` while it does not); the number of users whose events were
        still not delivered, logged as lost because they live only in this process."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        try:
            async with asyncio.timeout_at(deadline):
                while self.pending:
                    if not await self.sync(max_users=len(self.pending)):
                        await asyncio.sleep(retry_s)  # Redis away: the breaker may half-open
        except TimeoutError:
            pass
        lost = len(self.pending)
        if lost:
            log.error(
                "live history: the events of %d user(s) never reached Redis and are lost "
                "with this process (Redis did not answer within %.1f s of shutdown)",
                lost,
                timeout_s,
            )
        return lost

    async def read(self, user_id: str, limit: int) -> LiveEvents:
        if limit <= 0:
            return LiveEvents([], None)  # nothing read, so nothing computed from it to guard
        if not await self._push_pending(user_id):
            return self._read_locally(user_id, limit)
        keys_ = self._keys(user_id)
        count = min(limit, self.cap)
        answer = await self._call(lambda: self._read_script(keys=keys_, args=[count]))
        if not isinstance(answer, list) or len(answer) != 2 or not isinstance(answer[1], list):
            return self._read_locally(user_id, limit)
        generation, raw = _text(answer[0]), answer[1]
        if not raw:
            known = self.local.recent_now(user_id, self.cap)
            if known:  # Redis lost the list (a restart): re-seed it unless another read or
                # replica did; that raises the generation, so a write guarded by this read is
                # refused
                async with self._pushes.hold(user_id):
                    await self._push(user_id, [self._event(i) for i in known], seed=True)
            return LiveEvents(known[-limit:], generation)
        return LiveEvents([_text(v) for v in raw], generation)

    def _read_locally(self, user_id: str, limit: int) -> LiveEvents:
        self._fallback("recent")
        return LiveEvents(self.local.recent_now(user_id, limit), UNKNOWN_GENERATION)

    async def recent(self, user_id: str, limit: int) -> list[str]:
        return (await self.read(user_id, limit)).items

    async def close(self) -> None:
        await self.local.close()


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
