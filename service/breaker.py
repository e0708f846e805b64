"""A circuit breaker for Redis: closed -> open after N consecutive failures -> half-open.

While open, :meth:`CircuitBreaker.allow` answers False at once, so a dead or paused Redis costs a
request nothing. After ``reset_timeout_s`` one probe is let through (half-open); its success
closes the breaker, its failure opens it again. A probe that never reports (e.g. cancelled) is
replaced by another after ``reset_timeout_s``, so the breaker cannot stick half-open.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Literal

State = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    """Consecutive-failure circuit breaker; ``on_change(is_open)`` mirrors it in a gauge."""

    def __init__(
        self,
        failure_threshold: int = 5,
        reset_timeout_s: float = 1.0,
        *,
        on_change: Callable[[bool], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be >= 1, got {failure_threshold}")
        if reset_timeout_s <= 0:
            raise ValueError(f"reset_timeout_s must be > 0, got {reset_timeout_s}")
        self.failure_threshold = failure_threshold
        self.reset_timeout_s = reset_timeout_s
        self._on_change = on_change
        self._clock = clock
        self._lock = threading.Lock()
        self._state: State = "closed"
        self._failures = 0
        self._opened_at = 0.0
        self._probe_at = 0.0
        self.opened_count = 0  # times the breaker has opened (for tests and logs)
        if on_change is not None:
            on_change(False)

    @property
    def state(self) -> State:
        with self._lock:
            return self._state

    @property
    def is_open(self) -> bool:
        """True unless closed (half-open counts as open: only a probe goes through)."""
        return self.state != "closed"

    def allow(self) -> bool:
        """May a call go to Redis now? (In half-open, only the one probe may.)"""
        with self._lock:
            if self._state == "closed":
                return True
            now = self._clock()
            if self._state == "open":
                if now - self._opened_at < self.reset_timeout_s:
                    return False
                self._state = "half_open"
                self._probe_at = now
                return True
            if now - self._probe_at < self.reset_timeout_s:
                return False
            self._probe_at = now  # the previous probe never reported: let another one through
            return True

    def record_success(self) -> None:
        with self._lock:
            self._failures = 0
            changed = self._state != "closed"
            self._state = "closed"
        if changed and self._on_change is not None:
            self._on_change(False)

    def record_failure(self) -> None:
        with self._lock:
            self._failures += 1
            opening = self._state == "half_open" or (
                self._state == "closed" and self._failures >= self.failure_threshold
            )
            if opening:
                self._state = "open"
                self._opened_at = self._clock()
                self.opened_count += 1
        if opening and self._on_change is not None:
            self._on_change(True)
