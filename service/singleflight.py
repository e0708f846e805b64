"""Single-flight: concurrent callers of the same key share one computation."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class SingleFlight(Generic[T]):
    """``await sf.do(key, fn)``: the first caller starts ``fn()`` as a task; others await it.

    The result or exception goes to every waiter. The task is shielded: a cancelled waiter (a
    client that went away) leaves it running for the others, and a finished computation still
    fills the cache. The entry is removed when the task finishes, so the next call recomputes.
    """

    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Future[T]] = {}

    def __len__(self) -> int:
        """Computations in flight."""
        return len(self._tasks)

    async def do(self, key: str, fn: Callable[[], Awaitable[T]]) -> T:
        task = self._tasks.get(key)
        if task is None:
            task = asyncio.ensure_future(fn())
            self._tasks[key] = task
            task.add_done_callback(functools.partial(self._forget, key))
        return await asyncio.shield(task)

    def _forget(self, key: str, task: asyncio.Future[T]) -> None:
        if self._tasks.get(key) is task:
            del self._tasks[key]
        if not task.cancelled():
            task.exception()  # retrieved: an error whose waiters all left is not logged as lost
