"""Locust's final statistics per request type, as CSV and JSON, judged against SLOs."""

from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

AGGREGATED = "Aggregated"


@dataclass(frozen=True)
class RequestStats:
    """One row of locust's stats CSV (times in milliseconds)."""

    name: str
    requests: int
    failures: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    rps: float

    @property
    def failure_ratio(self) -> float:
        return self.failures / self.requests if self.requests else 0.0


def percentile(response_times: dict[int, int], count: int, q: float) -> float:
    """Locust's own percentile rule over its {rounded ms: count} histogram."""
    wanted = int(count * q)
    processed = 0
    for ms in sorted(response_times, reverse=True):
        processed += response_times[ms]
        if count - processed <= wanted:
            return float(ms)
    return 0.0


def _entry(name: str, rows: list[dict[str, Any]]) -> RequestStats:
    times: Counter[int] = Counter()
    for row in rows:
        times.update({int(ms): n for ms, n in row["response_times"].items()})
    requests = sum(int(r["num_requests"]) for r in rows)
    start = min(float(r["start_time"]) for r in rows)
    end = max(float(r["last_request_timestamp"] or start) for r in rows)
    timed = sum(times.values())
    return RequestStats(
        name=name,
        requests=requests,
        failures=sum(int(r["num_failures"]) for r in rows),
        p50_ms=percentile(times, timed, 0.50),
        p95_ms=percentile(times, timed, 0.95),
        p99_ms=percentile(times, timed, 0.99),
        rps=requests / (end - start) if end > start else 0.0,
    )


def read_stats(json_path: Path) -> dict[str, RequestStats]:
    """Final figures from the locustfile's result file (locust's CSV lags by up to a second),
    by request name; the total is under "Aggregated"."""
    rows: list[dict[str, Any]] = json.loads(json_path.read_text(encoding="utf-8"))["entries"]
    stats = {row["name"]: _entry(row["name"], [row]) for row in rows}
    if rows:
        stats[AGGREGATED] = _entry(AGGREGATED, rows)
    return stats


def read_errors(json_path: Path) -> list[str]:
    """One line per distinct failure: count, request and message."""
    errors = json.loads(json_path.read_text(encoding="utf-8"))["errors"]
    return [f"{e['occurrences']} x {e['method']} {e['name']}: {e['error']}" for e in errors]


def write_csv(stats: dict[str, RequestStats], csv_path: Path) -> None:
    """The final figures as CSV, one row per request type and the total."""
    with csv_path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["name", "requests", "failures", "p50_ms", "p95_ms", "p99_ms", "rps"])
        for s in stats.values():
            writer.writerow(
                [s.name, s.requests, s.failures, s.p50_ms, s.p95_ms, s.p99_ms, round(s.rps, 2)]
            )


def verdict(
    stats: dict[str, RequestStats], slo_p99_ms: float | None, max_failure_ratio: float | None
) -> list[str]:
    """Every SLO the run missed (empty = passed). The p99 SLO applies to every request type."""
    total = stats.get(AGGREGATED)
    if total is None or total.requests == 0:
        return ["no requests were made"]
    problems = []
    if max_failure_ratio is not None and total.failure_ratio > max_failure_ratio:
        problems.append(f"failure ratio {total.failure_ratio:.4f} > {max_failure_ratio}")
    if slo_p99_ms is not None:
        problems += [
            f"{s.name}: p99 {s.p99_ms:g} ms > {slo_p99_ms:g} ms"
            for s in stats.values()
            if s.requests and s.p99_ms > slo_p99_ms
        ]
    return problems


def render(stats: dict[str, RequestStats]) -> str:
    """A fixed-width table: one line per request type, the total last."""
    header = (
        f"{'request':<32} {'reqs':>8} {'fails':>6} "
        f"{'p50ms':>7} {'p95ms':>7} {'p99ms':>7} {'rps':>8}"
    )
    names = sorted(n for n in stats if n != AGGREGATED) + [n for n in stats if n == AGGREGATED]
    lines = [header] + [
        f"{s.name:<32} {s.requests:>8} {s.failures:>6} {s.p50_ms:>7g} {s.p95_ms:>7g} "
        f"{s.p99_ms:>7g} {s.rps:>8.1f}"
        for s in (stats[n] for n in names)
    ]
    return "\n".join(lines)


def as_json(stats: dict[str, RequestStats], problems: list[str]) -> dict[str, Any]:
    return {
        "passed": not problems,
        "problems": problems,
        "requests": {name: asdict(s) for name, s in stats.items()},
    }
