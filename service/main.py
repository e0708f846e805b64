"""`create_app(settings)` (nothing is built at import) and `serve(host, port)`.

Lifespan: open the store, Redis (optional), caches and live history; load the store's LATEST
bundle in the background, so the process is live at once and ready (/readyz) once the bundle is
loaded and warmed; with no bundle the app still starts and answers 503 with the reason.
Shutdown (SIGTERM): readiness turns false first, `shutdown_delay_s` later uvicorn stops
accepting, in-flight requests finish (up to `graceful_timeout_s`), then resources close.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from types import FrameType

import uvicorn
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from service.api import build_router, install_error_handlers
from service.breaker_probe import watch_breaker
from service.encoder import check_gpu_at_start
from service.errors import ReloadError, SettingsError, UnknownVersionError
from service.fastpath import RecommendFastPath
from service.history import RedisHistory
from service.limits import ConcurrencyLimit, RequestSizeLimit
from service.logs import configure_logging
from service.metrics import ServiceMetrics
from service.observe import RequestMetrics, endpoint_of
from service.settings import Settings, load_settings
from service.state import AppState, Lifecycle, close_state, open_state, probe_redis

log = logging.getLogger(__name__)


async def _initial_load(state: AppState) -> None:
    try:
        await state.registry.reload(None)
    except (ReloadError, UnknownVersionError) as exc:
        log.error(
            "no model bundle served yet; /readyz stays 503 until POST /admin/reload",
            extra={"reason": exc.detail},
        )


def create_app(settings: Settings | None = None) -> FastAPI:
    """The ASGI app for `settings` (default: from CINESYNC_* variables)."""
    settings = settings if settings is not None else load_settings()
    metrics = ServiceMetrics()
    lifecycle = Lifecycle()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = await open_state(settings, metrics, lifecycle)
        app.state.cinesync = state
        task = asyncio.create_task(_initial_load(state))
        state.background.add(task)
        task.add_done_callback(state.background.discard)
        if state.invalidations is not None:
            state.background.add(asyncio.create_task(state.invalidations.run()))
        if isinstance(state.history, RedisHistory):
            sync = state.history.run_sync(settings.events.sync_interval_s)
            state.background.add(asyncio.create_task(sync))
        if state.breaker is not None and state.redis is not None:
            client, rs = state.redis, settings.redis
            probe = watch_breaker(
                state.breaker, lambda: probe_redis(client, rs.socket_timeout_s), rs.breaker_reset_s
            )
            state.background.add(asyncio.create_task(probe))
        log.info(
            "service started",
            extra={
                "model": settings.model_name,
                "store": str(settings.store_dir),
                "env": settings.env,
            },
        )
        try:
            yield
        finally:
            lifecycle.draining = True
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
            await close_state(state)
            log.info("service stopped")

    app = FastAPI(
        title="CineSync",
        version="0.1.0",
        lifespan=lifespan,
        description="Movie recommendations: sequential model, cold-start blend, explanations.",
    )
    app.state.lifecycle = lifecycle
    app.state.metrics = metrics
    app.include_router(build_router(settings))
    install_error_handlers(app)
    if settings.fast_path:
        app.add_middleware(
            RecommendFastPath, max_k=settings.max_k, max_user_id_chars=settings.max_user_id_chars
        )
    app.add_middleware(
        RequestSizeLimit,
        max_body_bytes=settings.max_body_bytes,
        max_header_bytes=settings.max_header_bytes,
    )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(RequestMetrics, metrics=metrics)
    app.add_middleware(
        ConcurrencyLimit,
        limit=settings.max_concurrency,
        on_change=metrics.inflight.set,
        on_reject=lambda path: metrics.count_request(endpoint_of(path), "rejected"),
    )
    return app


class _DrainingServer(uvicorn.Server):
    """On SIGTERM/SIGINT: readiness off now, stop accepting after `delay` seconds."""

    def __init__(self, config: uvicorn.Config, on_drain: Callable[[], None], delay: float) -> None:
        super().__init__(config)
        self._on_drain, self._delay = on_drain, delay
        self._draining = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._on_drain()
        if self._delay > 0 and not self._draining:
            self._draining = True
            log.info("draining: readiness is off; exiting in %.1f s", self._delay)
            timer = threading.Timer(self._delay, super().handle_exit, (sig, frame))
            timer.daemon = True
            timer.start()
            return
        super().handle_exit(sig, frame)


def http_protocol() -> type[asyncio.Protocol] | str:
    """httptools with a bounded request head (service/headerlimit.py), else h11."""
    try:
        from service.headerlimit import HeadLimitedHttpTools
    except ImportError:  # uvicorn without httptools
        return "h11"
    return HeadLimitedHttpTools


def serve(host: str = "127.0.0.1", port: int = 8000, settings: Settings | None = None) -> None:
    """Run the service with uvicorn: one worker (scale with replicas), graceful shutdown.
    Invalid settings end the process with their message and exit code 2."""
    if settings is None:
        try:
            settings = load_settings()
        except SettingsError as exc:
            print(f"error: {exc.detail}", file=sys.stderr)
            raise SystemExit(2) from None
    configure_logging(settings.log_level)
    try:
        check_gpu_at_start(settings.encoder)
    except SettingsError as exc:
        log.error("refusing to start: %s", exc.detail)
        print(f"error: {exc.detail}", file=sys.stderr)
        raise SystemExit(2) from None
    app = create_app(settings)
    lifecycle: Lifecycle = app.state.lifecycle
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        workers=1,
        lifespan="on",
        log_config=None,
        access_log=settings.access_log,
        server_header=False,
        proxy_headers=False,  # X-Forwarded-For is read by service/ratelimit.py, trusted peers only
        timeout_graceful_shutdown=max(1, round(settings.graceful_timeout_s)),
        limit_concurrency=max(1000, 4 * settings.max_concurrency),
        http=http_protocol(),
        h11_max_incomplete_event_size=settings.max_header_bytes,  # both protocols honour it
        timeout_keep_alive=5,
    )
    server = _DrainingServer(
        config, lambda: setattr(lifecycle, "draining", True), settings.shutdown_delay_s
    )
    log.info("serving", extra={"host": host, "port": port})
    server.run()
