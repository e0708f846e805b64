"""A bounded, ordered set of keys waiting for work (oldest first): past ``limit`` the oldest is
dropped and counted, so a long Redis outage costs bounded memory and shows in a metric."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator


class BoundedKeys:
    """Keys in the order they were last added; ``dropped`` counts the ones given up."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        self.limit = limit
        self.dropped = 0
        self._keys: OrderedDict[str, None] = OrderedDict()

    def add(self, key: str) -> None:
        """Add ``key`` (or move it to the newest end), dropping the oldest past ``limit``."""
        self._keys[key] = None
        self._keys.move_to_end(key)
        while len(self._keys) > self.limit:
            self._keys.popitem(last=False)
            self.dropped += 1

    def discard(self, key: str) -> None:
        self._keys.pop(key, None)

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)
