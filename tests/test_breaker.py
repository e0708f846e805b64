"""Circuit breaker state machine, on a fake clock."""

from __future__ import annotations

import pytest

from service.breaker import CircuitBreaker
from service.metrics import ServiceMetrics


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(failures: int = 3, reset_s: float = 1.0) -> tuple[CircuitBreaker, Clock, list[bool]]:
    clock, changes = Clock(), []
    breaker = CircuitBreaker(failures, reset_s, on_change=changes.append, clock=clock)
    return breaker, clock, changes


def test_it_opens_after_n_consecutive_failures_only() -> None:
    breaker, _, changes = make(failures=3)
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()  # resets the streak
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state == "closed"
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state == "open"
    assert breaker.is_open
    assert changes == [False, True]


def test_an_open_breaker_refuses_until_the_reset_timeout() -> None:
    breaker, clock, _ = make(failures=1, reset_s=1.0)
    breaker.record_failure()
    assert not breaker.allow()
    clock.now += 0.99
    assert not breaker.allow()
    clock.now += 0.02
    assert breaker.allow()  # the probe
    assert breaker.state == "half_open"
    assert not breaker.allow()  # only one probe at a time


def test_a_successful_probe_closes_it() -> None:
    breaker, clock, changes = make(failures=1)
    breaker.record_failure()
    clock.now += 1.5
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state == "closed"
    assert breaker.allow()
    assert breaker.allow()
    assert changes == [False, True, False]


def test_a_failed_probe_opens_it_again_for_a_full_timeout() -> None:
    breaker, clock, _ = make(failures=3)
    for _ in range(3):
        breaker.record_failure()
    clock.now += 1.5
    assert breaker.allow()
    breaker.record_failure()  # one failure is enough in half-open
    assert breaker.state == "open"
    assert not breaker.allow()
    clock.now += 1.01
    assert breaker.allow()
    assert breaker.opened_count == 2


def test_a_probe_that_never_reports_is_replaced_after_the_timeout() -> None:
    breaker, clock, _ = make(failures=1)
    breaker.record_failure()
    clock.now += 1.5
    assert breaker.allow()  # probe, then cancelled: never reports
    clock.now += 0.5
    assert not breaker.allow()
    clock.now += 0.6
    assert breaker.allow()


def test_the_gauge_mirrors_the_state() -> None:
    metrics = ServiceMetrics()
    clock = Clock()
    breaker = CircuitBreaker(2, 1.0, on_change=metrics.set_breaker_open, clock=clock)

    def gauge() -> float | None:
        return metrics.registry.get_sample_value("cinesync_redis_breaker_open")

    assert gauge() == 0
    breaker.record_failure()
    breaker.record_failure()
    assert gauge() == 1
    clock.now += 2
    breaker.allow()
    assert gauge() == 1  # half-open still counts as open
    breaker.record_success()
    assert gauge() == 0


@pytest.mark.parametrize(("failures", "reset_s"), [(0, 1.0), (3, 0.0), (3, -1.0)])
def test_nonsense_settings_are_refused(failures: int, reset_s: float) -> None:
    with pytest.raises(ValueError, match="must be"):
        CircuitBreaker(failures, reset_s)
