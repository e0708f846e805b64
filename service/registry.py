"""The served bundle. `current` is replaced by one assignment after a complete load; a request
reads it once. Reloads are serialised: while one runs, another is refused at once with
ReloadInProgressError (HTTP 409) rather than queued, so a burst of reload calls cannot pile up
loads. A load runs in a worker thread and is shielded: a caller that goes away does not stop it,
and a failed load keeps the previous bundle serving."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
import logging
from collections.abc import Callable

import anyio.to_thread

from service.bundle import Bundle
from service.errors import BundleLoadError, ReloadError, ReloadInProgressError, UnknownVersionError

log = logging.getLogger(__name__)

Loader = Callable[[int | None], Bundle]
SwapHook = Callable[[Bundle], None]


class ModelRegistry:
    """Holds the current bundle and performs reloads (see module docstring)."""

    def __init__(
        self,
        loader: Loader,
        *,
        on_swap: SwapHook | None = None,
        on_result: Callable[[bool], None] | None = None,
    ) -> None:
        self.current: Bundle | None = None
        self._loader = loader
        self._on_swap = on_swap
        self._on_result = on_result
        self._task: asyncio.Future[tuple[Bundle | None, Bundle]] | None = None
        self.last_error: str | None = None

    @property
    def reloading(self) -> bool:
        return self._task is not None and not self._task.done()

    async def reload(self, version: int | None = None) -> tuple[Bundle | None, Bundle]:
        """Load `version` (None = LATEST) and swap it in; (previous, current) on success."""
        if self.reloading:
            raise ReloadInProgressError(
                "a reload is already in progress; try again when it finishes"
            )
        task = asyncio.ensure_future(self._reload(version))
        self._task = task
        task.add_done_callback(_retrieve)
        task.add_done_callback(self._forget)
        return await asyncio.shield(task)

    def _forget(self, task: asyncio.Future[tuple[Bundle | None, Bundle]]) -> None:
        """Drop the finished reload (its result holds the previous bundle, which must not stay
        in memory until the next reload) and give the heap pages freed so far back."""
        if self._task is task:
            self._task = None
        trim_heap()

    async def _reload(self, version: int | None) -> tuple[Bundle | None, Bundle]:
        try:
            bundle = await anyio.to_thread.run_sync(self._loader, version)
        except UnknownVersionError as exc:
            self._fail(version, exc.detail)
            raise
        except BundleLoadError as exc:
            self._fail(version, exc.detail)
            raise ReloadError(exc.detail) from exc
        except Exception as exc:  # any loader fault must keep the old bundle
            log.exception("unexpected error while loading a bundle")
            reason = f"unexpected error while loading: {type(exc).__name__}: {exc}"
            self._fail(version, reason)
            raise ReloadError(reason) from exc
        previous = self.current
        self.current = bundle  # the swap: one reference assignment
        self.last_error = None
        if self._on_swap is not None:
            self._on_swap(bundle)
        if self._on_result is not None:
            self._on_result(True)
        log.info(
            "bundle swapped in",
            extra={
                "model": bundle.name,
                "version": bundle.version,
                "previous": previous.version if previous is not None else None,
            },
        )
        return previous, bundle

    async def wait(self) -> None:
        """Wait for a running reload to finish (its outcome is not re-raised)."""
        task = self._task
        if task is not None and not task.done():
            await asyncio.wait([task])

    def _fail(self, version: int | None, reason: str) -> None:
        self.last_error = reason
        if self._on_result is not None:
            self._on_result(False)
        log.error(
            "reload failed; the previous bundle keeps serving",
            extra={
                "requested_version": version,
                "reason": reason,
                "serving": self.current.version if self.current is not None else None,
            },
        )


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") else None


def trim_heap() -> None:
    """Return free heap pages to the OS (glibc `malloc_trim`; a no-op elsewhere). A reload frees
    a whole bundle at once; without this, fragmented malloc arenas keep much of it resident
    and RSS creeps up reload after reload. About 1 ms."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def _retrieve(task: asyncio.Future[tuple[Bundle | None, Bundle]]) -> None:
    """Mark a finished reload's error as retrieved (its caller may have gone away)."""
    if not task.cancelled():
        task.exception()
