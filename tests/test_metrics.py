"""Metrics: the exact names, labels and buckets of the contract, and online exposure figures."""

from __future__ import annotations

import itertools
import random

import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.metrics import LATENCY_BUCKETS, STAGE_BUCKETS, OnlineExposure, ServiceMetrics

CONTRACT: dict[str, tuple[str, set[str]]] = {
    # family name (as the parser reports it) -> (type, label names)
    "cinesync_request_duration_seconds": ("histogram", {"endpoint", "strategy", "tier"}),
    "cinesync_requests": ("counter", {"endpoint", "result"}),
    "cinesync_cache_requests": ("counter", {"tier", "result"}),
    "cinesync_encoder_duration_seconds": ("histogram", set()),
    "cinesync_index_search_duration_seconds": ("histogram", set()),
    "cinesync_reloads": ("counter", {"result"}),
    "cinesync_events": ("counter", {"result"}),
    "cinesync_redis_breaker_open": ("gauge", set()),
    "cinesync_bundle_ready": ("gauge", set()),
    "cinesync_model_info": ("gauge", {"name", "version"}),  # an Info, as the text format shows it
    "cinesync_index_recall_at_10": ("gauge", set()),
    "cinesync_online_coverage": ("gauge", set()),
    "cinesync_online_gini": ("gauge", set()),
    "cinesync_inflight_requests": ("gauge", set()),
    "cinesync_history_fallbacks": ("counter", {"op"}),  # addition beyond the COMMON.md list
    "cinesync_cache_stale_writes": ("counter", set()),  # addition: refused L2 writes
    "cinesync_history_pending_users": ("gauge", set()),  # addition: events not in Redis yet
    "cinesync_dropped": ("counter", {"what"}),  # addition: work given up at a bound
}


def exercised() -> ServiceMetrics:
    m = ServiceMetrics()
    m.observe_request("recommend", "sequential", "miss", 0.0042)
    m.count_request("recommend", "ok")
    m.cache_result("l1", "hit")
    m.encoder_duration.observe(0.001)
    m.index_search_duration.observe(0.0005)
    m.count_reload(success=True)
    m.count_event(accepted=False)
    m.set_breaker_open(False)
    m.set_bundle_ready(True)
    m.set_model("cinesync", 3)
    m.set_index_recall(0.97)
    m.online_exposure(window=10, catalogue_size=4).record(["a", "b"])
    m.inflight.inc()
    m.count_history_fallback("append")
    return m


def families(
    m: ServiceMetrics,
) -> dict[str, tuple[str, set[str], list[tuple[str, dict[str, str], float]]]]:
    payload, content_type = m.render()
    assert content_type.startswith("text/plain")
    out = {}
    for fam in text_string_to_metric_families(payload.decode()):
        labels = {k for s in fam.samples for k in s.labels if k != "le"}
        out[fam.name] = (fam.type, labels, [(s.name, s.labels, s.value) for s in fam.samples])
    return out


def test_render_parses_and_holds_exactly_the_contract_names_and_labels() -> None:
    fams = families(exercised())
    found = {name: (t, labels) for name, (t, labels, _) in fams.items()}
    created = {n for n in found if n.endswith("_created")}  # prometheus_client's own series
    assert {n.removesuffix("_created") for n in created} <= set(CONTRACT)
    assert {n: v for n, v in found.items() if n not in created} == CONTRACT


def test_request_latency_uses_the_contract_buckets() -> None:
    _, _, samples = families(exercised())["cinesync_request_duration_seconds"]
    bounds = sorted({float(s[1]["le"]) for s in samples if s[0].endswith("_bucket")})
    assert bounds == [*LATENCY_BUCKETS, float("inf")]
    assert LATENCY_BUCKETS[:3] == (0.0005, 0.001, 0.0015)
    assert LATENCY_BUCKETS[-1] == 2.5
    assert len(LATENCY_BUCKETS) == 20


@pytest.mark.parametrize(
    "name", ["cinesync_encoder_duration_seconds", "cinesync_index_search_duration_seconds"]
)
def test_a_p99_of_a_quarter_millisecond_step_reads_within_its_bucket(name: str) -> None:
    m = ServiceMetrics()
    histogram = (
        m.encoder_duration if name.startswith("cinesync_encoder") else m.index_search_duration
    )
    for _ in range(1000):
        histogram.observe(0.00024)
    _, _, samples = families(m)[name]
    buckets = sorted((float(s[1]["le"]), s[2]) for s in samples if s[0].endswith("_bucket"))
    assert [b for b, _ in buckets] == [*STAGE_BUCKETS, float("inf")]
    # Prometheus's histogram_quantile interpolates inside the first bucket that holds the rank
    upper = next(b for b, count in buckets if count >= 990)
    lower = max(b for b, _ in buckets if b < upper)
    assert (lower, upper) == (0.0002, 0.0003)


def test_the_model_is_an_info_metric_not_a_label() -> None:
    m = exercised()
    assert (
        m.registry.get_sample_value("cinesync_model_info", {"name": "cinesync", "version": "3"})
        == 1.0
    )
    m.set_model("cinesync", 4)
    assert m.registry.get_sample_value("cinesync_model_info", {"name": "cinesync", "version": "4"})
    assert (
        m.registry.get_sample_value("cinesync_model_info", {"name": "cinesync", "version": "3"})
        is None
    )


def test_label_values_from_outside_cannot_grow_cardinality() -> None:
    m = ServiceMetrics()
    m.observe_request("/recommend/../../etc", "weird", "l9", 0.001)
    m.count_request("some-path", "ok")
    labels = {"endpoint": "other", "strategy": "none", "tier": "none"}
    assert m.registry.get_sample_value("cinesync_request_duration_seconds_count", labels) == 1
    with pytest.raises(ValueError, match="unknown"):
        m.count_request("recommend", "teapot")
    with pytest.raises(ValueError, match="unknown"):
        m.cache_result("l3", "hit")


def test_two_apps_in_one_process_have_separate_registries() -> None:
    a, b = ServiceMetrics(), ServiceMetrics()
    a.count_event(accepted=True)
    value = b.registry.get_sample_value("cinesync_events_total", {"result": "accepted"})
    assert value is None
    assert a.registry.get_sample_value("cinesync_events_total", {"result": "accepted"}) == 1


def gini_oracle(counts: list[int]) -> float:
    """Mean absolute difference over twice the mean (O(n^2), independent of the ranked form)."""
    n, total = len(counts), sum(counts)
    if total == 0:
        return 0.0
    diff = sum(abs(x - y) for x, y in itertools.product(counts, counts))
    return diff / (2 * n * total)


def test_exposure_on_a_hand_case() -> None:
    exposure = OnlineExposure(window=10, catalogue_size=4)
    exposure.record(["a", "b"])
    exposure.record(["a", "c"])
    assert exposure.coverage() == pytest.approx(3 / 4)
    assert exposure.gini() == pytest.approx(0.375)  # counts 2, 1, 1, 0 over four items
    assert exposure.gini() == pytest.approx(gini_oracle([2, 1, 1, 0]))


def test_exposure_extremes() -> None:
    even = OnlineExposure(window=10, catalogue_size=3)
    even.record(["a", "b", "c"])
    assert even.coverage() == 1.0
    assert even.gini() == 0.0
    one = OnlineExposure(window=100, catalogue_size=100)
    for _ in range(50):
        one.record(["a"])
    assert one.coverage() == pytest.approx(0.01)
    assert one.gini() == pytest.approx(0.99)  # all exposure on one item of 100
    empty = OnlineExposure(window=5, catalogue_size=0)
    assert empty.coverage() == 0.0
    assert empty.gini() == 0.0


def test_the_window_forgets_the_oldest_lists() -> None:
    exposure = OnlineExposure(window=2, catalogue_size=10)
    exposure.record(["a", "b"])
    exposure.record(["c"])
    exposure.record(["d"])  # ["a", "b"] leaves
    assert exposure.coverage() == pytest.approx(2 / 10)
    assert exposure.gini() == pytest.approx(gini_oracle([1, 1] + [0] * 8))


def test_exposure_matches_the_oracle_on_random_lists() -> None:
    rng = random.Random(0)
    exposure = OnlineExposure(window=30, catalogue_size=40)
    served = [[f"i{rng.randrange(40) ** 2 % 40}" for _ in range(5)] for _ in range(80)]
    for items in served:
        exposure.record(items)
    counts = {f"i{n}": 0 for n in range(40)}
    for items in served[-30:]:
        for item in items:
            counts[item] += 1
    assert exposure.gini() == pytest.approx(gini_oracle(list(counts.values())))
    assert exposure.coverage() == pytest.approx(sum(c > 0 for c in counts.values()) / 40)


def test_the_gauges_read_the_window_at_scrape_time() -> None:
    m = ServiceMetrics()
    exposure = m.online_exposure(window=10, catalogue_size=4)
    exposure.record(["a", "b"])
    exposure.record(["a", "c"])
    assert m.registry.get_sample_value("cinesync_online_coverage") == pytest.approx(0.75)
    assert m.registry.get_sample_value("cinesync_online_gini") == pytest.approx(0.375)
    exposure.set_catalogue_size(6)
    assert m.registry.get_sample_value("cinesync_online_coverage") == pytest.approx(0.5)
