"""Read-your-writes across replicas: a replica that takes an event invalidates the user in its
own L1 and in Redis at once (the event's append drops the user's L2 lists in the same Redis
step), then announces it on a Redis pub/sub channel; every other replica drops the user from its
L1 on receipt (milliseconds later), with no Redis call of its own. Without Redis there is one
replica.

Pub/sub delivers nothing to a subscriber that is not connected, so whenever this replica's
subscription is confirmed (at start, and after every reconnection) it drops its whole L1
(``on_subscribed``): an announcement it may have missed while it was away cannot leave a stale
list in L1 for the rest of its TTL. An announcement this replica could not send is sent again
once Redis takes it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis

from service import keys
from service.bounded import BoundedKeys
from service.breaker import CircuitBreaker
from service.redis_client import REDIS_ERRORS

log = logging.getLogger(__name__)

Invalidate = Callable[[str, str], Awaitable[None]]  # (model, user_id)
Forget = Callable[[], None]  # drop everything this replica holds in L1
MAX_BACKOFF_S = 5.0
MAX_UNANNOUNCED = 10_000  # users whose announcement waits for Redis (the oldest dropped first)
POLL_S = 1.0


class Invalidations:
    """Publish this replica's user invalidations; apply the other replicas' ones."""

    def __init__(
        self,
        client: aioredis.Redis,
        model: str,
        apply: Invalidate,
        *,
        on_subscribed: Forget,
        breaker: CircuitBreaker,
        timeout_s: float,
    ) -> None:
        self._client, self._model, self._apply = client, model, apply
        self._on_subscribed = on_subscribed
        self._breaker, self._timeout_s = breaker, timeout_s
        self.channel = keys.invalidation_channel(model)
        self.origin = uuid.uuid4().hex
        self.received = 0
        self.subscriptions = 0  # confirmed subscriptions: 1 + reconnections
        self._unannounced = BoundedKeys(MAX_UNANNOUNCED)  # (its ``dropped``: given up)

    @property
    def dropped(self) -> int:
        """Announcements given up: more users waited for Redis than MAX_UNANNOUNCED."""
        return self._unannounced.dropped

    async def publish(self, user_id: str) -> None:
        """Announce `user_id`'s invalidation. When Redis does not take it (an error, a timeout,
        the breaker open), the user is kept (bounded) and announced again by `run` as soon as
        Redis does, as it is when the caller is cancelled mid-send. Never raises."""
        sent = False
        try:
            sent = await self._send(user_id)
        finally:
            if not sent:
                self._unannounced.add(user_id)

    async def _send(self, user_id: str) -> bool:
        if not self._breaker.allow():
            return False
        message = json.dumps({"o": self.origin, "u": user_id})
        try:
            await asyncio.wait_for(self._client.publish(self.channel, message), self._timeout_s)
        except REDIS_ERRORS as exc:
            self._breaker.record_failure()
            log.warning("invalidation not announced yet: %s: %s", type(exc).__name__, exc)
            return False
        self._breaker.record_success()
        return True

    async def announce_missed(self) -> int:
        """Announce again, oldest first, the users Redis did not take an announcement for,
        until one fails; how many were sent."""
        sent = 0
        for user_id in list(self._unannounced):
            if not await self._send(user_id):
                break
            self._unannounced.discard(user_id)
            sent += 1
        return sent

    async def run(self) -> None:
        """Subscribe and apply messages until cancelled; reconnect with backoff (after a Redis
        error, or after an unexpected one, which is logged)."""
        backoff = 0.1
        while True:
            pubsub = self._client.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                backoff = 0.1
                while True:
                    message = await pubsub.get_message(timeout=POLL_S)
                    if self._unannounced:  # Redis answers this loop: try them again
                        await self.announce_missed()
                    if message is None:
                        continue
                    if message.get("type") == "subscribe":
                        # from here on every announcement reaches us; the ones sent while we
                        # were away did not: forget what they may have invalidated
                        self.subscriptions += 1
                        self._on_subscribed()
                    elif message.get("type") == "message":
                        await self._handle(message.get("data"))
            except REDIS_ERRORS as exc:
                log.debug("invalidation subscriber: %s: %s", type(exc).__name__, exc)
            except Exception:  # a bug must not end the subscription for the process's life
                log.exception("invalidation subscriber failed; subscribing again")
            finally:
                with contextlib.suppress(*REDIS_ERRORS):
                    await asyncio.shield(pubsub.aclose())  # type: ignore[no-untyped-call, unused-ignore]
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)

    async def _handle(self, data: object) -> None:
        try:
            payload = json.loads(data) if isinstance(data, bytes | str) else None
        except ValueError:
            return
        if not isinstance(payload, dict) or payload.get("o") == self.origin:
            return
        user_id = payload.get("u")
        if isinstance(user_id, str):
            self.received += 1
            await self._apply(self._model, user_id)
