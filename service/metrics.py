"""Prometheus metrics of one app, on a registry of its own (several apps may share a process).

Names, labels and buckets are a contract with the dashboards and alerts (COMMON.md, Metrics).
Label values are clamped to known sets, so a client can never grow the label cardinality.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from service.exposure import OnlineExposure

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.015,
    0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip
# one scoring step (an encoder call, an index search) takes tens to hundreds of microseconds:
# the request buckets (from 0.5 ms) would put every one in the first bucket
STAGE_BUCKETS = (
    0.000025, 0.00005, 0.000075, 0.0001, 0.00015, 0.0002, 0.0003, 0.0004, 0.0005, 0.00075,
    0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
)  # fmt: skip
ENDPOINTS = frozenset({"recommend", "events", "explain", "admin_reload", "admin_models", "other"})
STRATEGIES = frozenset({"sequential", "blend", "content", "features", "popular", "none"})
TIERS = frozenset({"l1", "l2", "miss", "none"})
# rejected: shed at the concurrency limit (a 503); not_ready: /readyz answering 503
REQUEST_RESULTS = frozenset({"ok", "client_error", "server_error", "rejected", "not_ready"})
CACHE_TIERS = frozenset({"l1", "l2"})
CACHE_RESULTS = frozenset({"hit", "miss", "error"})
HISTORY_OPS = frozenset({"append", "recent"})
# work given up at a bound: events of a user (never reached Redis), an invalidation announcement,
# an L2 write behind, a deferred L2 invalidation
DROPPED = ("pending_events", "announcement", "l2_write", "l2_invalidation")


class _Dropped(Collector):
    """``cinesync_dropped_total{what}``, read from the counts the components keep."""

    def __init__(self) -> None:
        self.sources: dict[str, Callable[[], int]] = {}

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "cinesync_dropped",
            "Work given up because a bound was reached (pending_events: a user's events that "
            "never reached Redis, lost with this process's memory).",
            labels=["what"],
        )
        for what in DROPPED:
            source = self.sources.get(what)
            family.add_metric([what], float(source() if source is not None else 0))
        yield family


__all__ = ["LATENCY_BUCKETS", "STAGE_BUCKETS", "OnlineExposure", "ServiceMetrics"]


def _clamp(value: str, allowed: frozenset[str], default: str) -> str:
    return value if value in allowed else default


class ServiceMetrics:
    """Every metric of the service, on its own ``CollectorRegistry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.request_duration = Histogram(
            "cinesync_request_duration_seconds", "Request latency.",
            ["endpoint", "strategy", "tier"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.requests = Counter(
            "cinesync_requests_total", "Requests by endpoint and result.",
            ["endpoint", "result"], registry=r,
        )  # fmt: skip
        self.cache_requests = Counter(
            "cinesync_cache_requests_total", "Cache lookups by tier and result.",
            ["tier", "result"], registry=r,
        )  # fmt: skip
        self.encoder_duration = Histogram(
            "cinesync_encoder_duration_seconds", "ONNX encoder latency.",
            buckets=STAGE_BUCKETS, registry=r,
        )  # fmt: skip
        self.index_search_duration = Histogram(
            "cinesync_index_search_duration_seconds", "FAISS search latency.",
            buckets=STAGE_BUCKETS, registry=r,
        )  # fmt: skip
        self.reloads = Counter(
            "cinesync_reloads_total", "Bundle reloads by result.", ["result"], registry=r
        )
        self.events = Counter(
            "cinesync_events_total", "Online events by result.", ["result"], registry=r
        )
        self.breaker_open = Gauge(
            "cinesync_redis_breaker_open", "1 while the Redis circuit breaker is open.", registry=r
        )
        self.bundle_ready = Gauge(
            "cinesync_bundle_ready", "1 when a bundle is loaded and warmed.", registry=r
        )
        self.model = Info("cinesync_model", "The served model.", registry=r)
        self.index_recall = Gauge(
            "cinesync_index_recall_at_10", "Recall@10 of the index against exact search.",
            registry=r,
        )  # fmt: skip
        self.online_coverage = Gauge(
            "cinesync_online_coverage", "Catalogue coverage of recently served lists.", registry=r
        )
        self.online_gini = Gauge(
            "cinesync_online_gini", "Gini of item exposure in recently served lists.", registry=r
        )
        self.inflight = Gauge("cinesync_inflight_requests", "Requests being processed.", registry=r)
        self.history_fallbacks = Counter(
            "cinesync_history_fallbacks_total",
            "Live-history operations served by the in-process store after a Redis failure.",
            ["op"], registry=r,
        )  # fmt: skip

        self.history_pending_users = Gauge(
            "cinesync_history_pending_users",
            "Users with live events accepted here that Redis has not taken yet.",
            registry=r,
        )
        self.stale_writes = Counter(
            "cinesync_cache_stale_writes_total",
            "L2 writes Redis refused: the user posted an event after the value was computed.",
            registry=r,
        )
        self._dropped = _Dropped()
        r.register(self._dropped)

        self._cache_children = {
            (t, res): self.cache_requests.labels(t, res)
            for t in CACHE_TIERS
            for res in CACHE_RESULTS
        }

    def observe_request(self, endpoint: str, strategy: str, tier: str, seconds: float) -> None:
        """Record one request's latency."""
        self.request_duration.labels(
            _clamp(endpoint, ENDPOINTS, "other"),
            _clamp(strategy, STRATEGIES, "none"),
            _clamp(tier, TIERS, "none"),
        ).observe(seconds)

    def count_request(self, endpoint: str, result: str) -> None:
        """Count one request by result (ok | client_error | server_error | rejected)."""
        if result not in REQUEST_RESULTS:
            raise ValueError(f"unknown request result {result!r}")
        self.requests.labels(_clamp(endpoint, ENDPOINTS, "other"), result).inc()

    def cache_result(self, tier: str, result: str) -> None:
        """Count one cache lookup (tier l1 | l2, result hit | miss | error)."""
        child = self._cache_children.get((tier, result))
        if child is None:
            raise ValueError(f"unknown cache tier/result {tier!r}/{result!r}")
        child.inc()  # children bound once: this sits on the L1-hit path

    def count_reload(self, success: bool) -> None:
        self.reloads.labels("success" if success else "failure").inc()

    def count_event(self, accepted: bool) -> None:
        self.events.labels("accepted" if accepted else "rejected").inc()

    def count_history_fallback(self, op: str) -> None:
        self.history_fallbacks.labels(_clamp(op, HISTORY_OPS, "append")).inc()

    def watch_dropped(self, what: str, count: Callable[[], int]) -> None:
        """Export ``count()`` (a running total a component keeps) as the ``what`` series of
        ``cinesync_dropped_total``."""
        if what not in DROPPED:
            raise ValueError(f"unknown dropped-work series {what!r}")
        self._dropped.sources[what] = count

    def set_breaker_open(self, is_open: bool) -> None:
        self.breaker_open.set(1.0 if is_open else 0.0)

    def set_bundle_ready(self, ready: bool) -> None:
        self.bundle_ready.set(1.0 if ready else 0.0)

    def set_index_recall(self, recall: float) -> None:
        self.index_recall.set(recall)

    def set_model(self, name: str, version: int) -> None:
        """The served model as an info metric (``cinesync_model_info{name, version}``)."""
        self.model.info({"name": name, "version": str(version)})

    def online_exposure(self, window: int, catalogue_size: int) -> OnlineExposure:
        """An exposure window whose coverage and Gini are read by the gauges at scrape time."""
        exposure = OnlineExposure(window, catalogue_size)
        self.online_coverage.set_function(exposure.coverage)
        self.online_gini.set_function(exposure.gini)
        return exposure

    def render(self) -> tuple[bytes, str]:
        """The exposition payload and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
