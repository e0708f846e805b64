"""L1: an in-process TTL + LRU cache (cachetools) with a per-user key index for invalidation."""

from __future__ import annotations

import threading
from typing import Any

from cachetools import TTLCache

from service import keys
from service.metrics import ServiceMetrics


class _IndexedTTLCache(TTLCache[str, tuple[str, bytes]]):
    """A TTLCache that tells its owner which keys it drops on its own (expiry, LRU eviction)."""

    def __init__(self, maxsize: int, ttl: float, owner: L1Cache) -> None:
        super().__init__(maxsize, ttl)
        self._owner = owner

    def expire(self, time: Any = None) -> list[tuple[str, tuple[str, bytes]]]:
        expired: list[tuple[str, tuple[str, bytes]]] = list(super().expire(time))
        for key, (index_key, _) in expired:
            self._owner._unindex(index_key, key)
        return expired

    def popitem(self) -> tuple[str, tuple[str, bytes]]:
        key, (index_key, value) = super().popitem()
        self._owner._unindex(index_key, key)
        return key, (index_key, value)


class L1Cache:
    """Bounded (``size`` entries, ``ttl_s`` seconds) and safe from threads and tasks alike.

    ``size == 0`` disables it: it then stores nothing and counts nothing, like ``NullCache``.
    """

    tier = "l1"

    def __init__(self, size: int, ttl_s: float, metrics: ServiceMetrics | None = None) -> None:
        if size < 0:
            raise ValueError(f"L1 size must be >= 0, got {size}")
        if ttl_s <= 0:
            raise ValueError(f"L1 ttl must be > 0, got {ttl_s}")
        self._lock = threading.Lock()
        self._index: dict[str, set[str]] = {}
        self._data = _IndexedTTLCache(size, ttl_s, self) if size > 0 else None
        self._metrics = metrics

    @property
    def enabled(self) -> bool:
        return self._data is not None

    def __len__(self) -> int:
        if self._data is None:
            return 0
        with self._lock:
            self._data.expire()
            return len(self._data)

    async def get(self, key: str) -> bytes | None:
        if self._data is None:
            return None
        with self._lock:
            entry = self._data.get(key)
        if self._metrics is not None:
            self._metrics.cache_result("l1", "miss" if entry is None else "hit")
        return None if entry is None else entry[1]

    def peek(self, key: str) -> bytes | None:
        """The value, without counting a lookup (a re-check inside a request, not a request)."""
        if self._data is None:
            return None
        with self._lock:
            entry = self._data.get(key)
        return None if entry is None else entry[1]

    async def set(
        self, key: str, value: bytes, user_id: str, model: str, generation: str | None = None
    ) -> None:
        # one process: the TieredCache's invalidation epochs guard L1, not the generation
        self.set_indexed(key, value, keys.user_index_key(model, user_id))

    def set_indexed(self, key: str, value: bytes, index_key: str) -> None:
        """Store ``value`` under ``key``, indexed under the user's ``index_key``."""
        if self._data is None:
            return
        with self._lock:
            old = self._data.get(key)
            if old is not None and old[0] != index_key:
                self._unindex(old[0], key)
            self._data[key] = (index_key, value)
            self._index.setdefault(index_key, set()).add(key)

    async def invalidate_user(self, model: str, user_id: str) -> None:
        self.invalidate_index(keys.user_index_key(model, user_id))

    def invalidate_index(self, index_key: str) -> None:
        if self._data is None:
            return
        with self._lock:
            for key in self._index.pop(index_key, set()):
                self._data.pop(key, None)

    def clear(self) -> None:
        """Drop every entry."""
        if self._data is None:
            return
        with self._lock:
            self._data.clear()
            self._index.clear()

    async def close(self) -> None:
        self.clear()

    def _unindex(self, index_key: str, key: str) -> None:
        """Called with the lock held (from set/invalidate or from the TTLCache hooks)."""
        members = self._index.get(index_key)
        if members is not None:
            members.discard(key)
            if not members:
                del self._index[index_key]
