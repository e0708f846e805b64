"""The cache interface, its null implementation, and the L1-over-L2 composition.

Contract (one test suite over every implementation, tests/test_cache_contract.py):
- ``get`` answers None for a miss, an error, a timeout or an undecodable value; never raises.
- ``set`` never raises.
- after ``invalidate_user(model, user_id)`` returns, no key of that user, of any model version,
  is served by that cache.
"""

from __future__ import annotations

import asyncio
from typing import Literal, Protocol, runtime_checkable

from cachetools import LRUCache

from service import keys
from service.cache_l1 import L1Cache

Tier = Literal["l1", "l2", "miss"]


@runtime_checkable
class Cache(Protocol):
    """A byte cache of recommendation responses, keyed by :func:`service.keys.recs_key`."""

    tier: str

    async def get(self, key: str) -> bytes | None: ...

    async def set(
        self, key: str, value: bytes, user_id: str, model: str, generation: str | None = None
    ) -> None:
        """Store ``value``; with a ``generation`` (of the user's live events, as read before
        computing it), a shared tier refuses it once the user has posted an event since."""

    async def invalidate_user(self, model: str, user_id: str) -> None: ...

    async def close(self) -> None: ...


class NullCache:
    """Caches nothing (no Redis configured, or a tier switched off)."""

    tier = "null"

    async def get(self, key: str) -> bytes | None:
        return None

    async def set(
        self, key: str, value: bytes, user_id: str, model: str, generation: str | None = None
    ) -> None:
        return None

    async def invalidate_user(self, model: str, user_id: str) -> None:
        return None

    async def close(self) -> None:
        return None


class _Epochs(LRUCache[str, int]):
    """Invalidation epochs of the users invalidated most recently; a user whose entry was
    evicted reads as invalidated at the highest epoch evicted (``floor``): a write computed
    before that is skipped (a later miss) rather than possibly stale."""

    def __init__(self, maxsize: int) -> None:
        super().__init__(maxsize=maxsize)
        self.floor = 0

    def popitem(self) -> tuple[str, int]:
        key, epoch = super().popitem()
        self.floor = max(self.floor, epoch)
        return key, epoch

    def of(self, index_key: str) -> int:
        return self.get(index_key, self.floor)


class TieredCache:
    """L1 (in-process) over L2 (Redis or null): an L2 hit fills L1.

    Invalidation epochs close the race where a value read from L2 (or computed) before a user's
    invalidation is written back after it: take ``snapshot()`` before reading or computing, and
    pass it to ``set``; a value whose user was invalidated since is served but not stored.

    ``set(..., write_behind=True)`` stores in L1 at once and in L2 from a background task, so a
    response does not wait for a Redis round trip it does not need (the staleness check runs
    again just before the L2 write). At most ``max_write_behind`` such writes are in flight;
    beyond that an L2 write is skipped (L2 is a cache: a skipped write is a later miss).
    ``drain()`` waits for the writes in flight; ``close()`` drains first.
    """

    def __init__(
        self, l1: L1Cache, l2: Cache, *, epochs: int = 65536, max_write_behind: int = 1024
    ) -> None:
        self.l1 = l1
        self.l2 = l2
        self._seq = 0
        self._invalidated = _Epochs(epochs)
        self._forgotten_at = 0  # the epoch of the last forget_local(): every user invalidated
        self._writes: set[asyncio.Task[None]] = set()
        # L2 write tasks per user index key, so an invalidation can wait for that user's writes
        # already past their stale check (see invalidate_user)
        self._user_writes: dict[str, set[asyncio.Task[None]]] = {}
        self.max_write_behind = max_write_behind
        self.skipped_writes = 0

    def snapshot(self) -> int:
        """A marker to pass to :meth:`set`: invalidations after it make that set a no-op."""
        return self._seq

    def user_epoch(self, index_key: str) -> int:
        """The epoch of the user's last invalidation (or of a ``forget_local`` after it): it
        moves only when something happens to this user's entries, unlike ``snapshot()``."""
        return max(self._forgotten_at, self._invalidated.of(index_key))

    def _stale(self, index_key: str | None, snapshot: int | None) -> bool:
        if snapshot is None or index_key is None:
            return False
        return self.user_epoch(index_key) > snapshot

    async def get(self, key: str) -> tuple[bytes | None, Tier]:
        """The value and the tier that answered (``miss`` when neither had it)."""
        value = await self.l1.get(key)
        if value is not None:
            return value, "l1"
        return await self.get_l2(key, self._seq)

    async def get_l2(self, key: str, snapshot: int) -> tuple[bytes | None, Tier]:
        """The L2 half of ``get`` (after an L1 miss), filling L1 unless the key's user was
        invalidated after ``snapshot``."""
        value = await self.l2.get(key)
        if value is None:
            return None, "miss"
        index_key = keys.index_key_for(key)
        if index_key is not None and not self._stale(index_key, snapshot):
            self.l1.set_indexed(key, value, index_key)
        return value, "l2"

    async def set(
        self,
        key: str,
        value: bytes,
        user_id: str,
        model: str,
        *,
        snapshot: int | None = None,
        write_behind: bool = False,
        generation: str | None = None,
    ) -> None:
        """Store in both tiers, unless the user was invalidated after ``snapshot`` (L2 also
        refuses it when the user's event ``generation`` has moved on: see ``Cache.set``)."""
        index_key = keys.user_index_key(model, user_id)
        if self._stale(index_key, snapshot):
            return
        await self.l1.set(key, value, user_id, model)
        if write_behind and len(self._writes) >= self.max_write_behind:
            self.skipped_writes += 1
            return
        # every L2 write is a tracked task, so the user's invalidation can wait for it
        task = asyncio.create_task(
            self._write_l2(key, value, user_id, model, index_key, snapshot, generation)
        )
        self._writes.add(task)
        self._user_writes.setdefault(index_key, set()).add(task)
        task.add_done_callback(lambda done: self._write_done(done, index_key))
        if not write_behind:
            await task

    def _write_done(self, task: asyncio.Task[None], index_key: str) -> None:
        self._writes.discard(task)
        pending = self._user_writes.get(index_key)
        if pending is not None:
            pending.discard(task)
            if not pending:
                del self._user_writes[index_key]

    async def _write_l2(
        self,
        key: str,
        value: bytes,
        user_id: str,
        model: str,
        index_key: str,
        snapshot: int | None,
        generation: str | None,
    ) -> None:
        if not self._stale(index_key, snapshot):  # re-checked: an invalidation may have come
            await self.l2.set(key, value, user_id, model, generation)  # never raises

    async def drain(self) -> None:
        """Wait for every L2 write in flight."""
        while self._writes:
            await asyncio.gather(*list(self._writes))

    async def invalidate_user(self, model: str, user_id: str) -> None:
        """Drop every cached key of the user (L2 first, so L2 cannot refill L1 after it)."""
        await self.invalidate_local(model, user_id)
        index_key = keys.user_index_key(model, user_id)
        # An L2 write past its stale check may still be sending its SET on another
        # pooled connection; if that SET reached Redis after the DEL below, a stale list would
        # outlive the invalidation. Later tasks see the new epoch and skip; wait for these.
        pending = list(self._user_writes.get(index_key, ()))
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        await self.l2.invalidate_user(model, user_id)
        await self.l1.invalidate_user(model, user_id)

    async def invalidate_local(self, model: str, user_id: str) -> None:
        """Drop the user from this replica's L1 only, and make its writes taken before now
        no-ops: for another replica's announcement, whose event already dropped the user's L2
        lists in the same Redis step (``service.history``) and moved the generation that
        refuses this replica's late L2 writes."""
        self._seq += 1
        self._invalidated[keys.user_index_key(model, user_id)] = self._seq
        await self.l1.invalidate_user(model, user_id)

    def forget_local(self) -> None:
        """Drop every L1 entry, and make every write taken before now a no-op in both tiers (as
        if every user had been invalidated): this replica may have missed invalidations."""
        self._seq += 1
        self._forgotten_at = self._seq
        self.l1.clear()

    async def close(self) -> None:
        await self.drain()
        await asyncio.gather(self.l1.close(), self.l2.close())
