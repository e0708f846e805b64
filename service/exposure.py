"""Online beyond-accuracy figures over a sliding window of served recommendation lists."""

from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Sequence


class OnlineExposure:
    """The last ``window`` served lists: catalogue coverage and Gini of item exposure.

    Coverage = distinct items served / catalogue size. Gini is computed over the whole catalogue
    (items never served count as zero exposure), as ``training.metrics.gini`` does offline.
    """

    def __init__(self, window: int, catalogue_size: int) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self._lists: deque[tuple[str, ...]] = deque()
        self._counts: Counter[str] = Counter()
        self._window = window
        self._catalogue = max(0, catalogue_size)
        self._lock = threading.Lock()

    def set_catalogue_size(self, catalogue_size: int) -> None:
        with self._lock:
            self._catalogue = max(0, catalogue_size)

    def record(self, items: Sequence[str]) -> None:
        """Add one served list (external item ids); the oldest list leaves a full window."""
        served = tuple(items)
        with self._lock:
            self._lists.append(served)
            self._counts.update(served)
            if len(self._lists) > self._window:
                old = self._lists.popleft()
                self._counts.subtract(old)
                for item in old:
                    if self._counts[item] <= 0:
                        del self._counts[item]

    def reset(self) -> None:
        with self._lock:
            self._lists.clear()
            self._counts.clear()

    def coverage(self) -> float:
        with self._lock:
            if self._catalogue == 0:
                return 0.0
            return min(1.0, len(self._counts) / self._catalogue)

    def gini(self) -> float:
        with self._lock:
            counts = sorted(self._counts.values())
            n = max(self._catalogue, len(counts))
        total = sum(counts)
        if n == 0 or total == 0:
            return 0.0
        first_rank = n - len(counts) + 1  # unserved items take ranks 1 .. n - len(counts)
        acc = sum((2 * (first_rank + i) - n - 1) * x for i, x in enumerate(counts))
        return acc / (n * total)
