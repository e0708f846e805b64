"""Serving benchmark: CineSync against a hello-world FastAPI app, same uvicorn settings, loopback.

    python -m benchmarks.serving [--store DIR] [--rate 200] [--duration 10] [--concurrency 8]
                                 [--repeats 3]

Starts a private redis-server, then, one at a time, the hello app and CineSync (with L1, and
with L1 off so requests hit L2), each under `uvicorn --factory` with identical flags. For
hello-world, L1 hits, L2 hits and personalised misses (sequential strategy, keys never seen
before, so L1 and L2 both miss) it measures p50/p99 at a fixed open-loop rate and the maximum
closed-loop throughput (medians over --repeats fresh starts), and writes
benchmarks/results/serving.json and serving.md with the ratios to hello-world and the machine
they were measured on. Targets (issue 4): miss p99 <= 10 ms at
200 req/s and <= 2x hello p99; L1-hit throughput >= 0.8x hello.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.loadgen import LoadResult, closed_loop, open_loop, run
from benchmarks.serving_report import describe_machine, render_markdown
from loadtests.service_process import free_port, running, uvicorn_command
from model_store.store import ModelStore

RESULTS = Path(__file__).with_name("results")
HOST = "127.0.0.1"
N_FULL = 10  # the service's default: histories this long get the sequential model
FLOOR_SCENARIOS = {"miss_const_encoder": "constant_encoder", "miss_no_scoring": "no_scoring"}


def tier(name: str) -> re.Pattern[bytes]:
    return re.compile(rb'"cache":\s*"' + name.encode() + rb'"')


SEQUENTIAL_MISS = re.compile(rb'(?=.*"strategy":\s*"sequential")(?=.*"cache":\s*"miss")', re.S)


@contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no",
         "--dir", str(workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(100):
            if (
                subprocess.run(
                    [shutil.which("redis-cli") or "redis-cli", "-p", str(port), "ping"],
                    capture_output=True,
                    check=False,
                ).stdout.strip()
                == b"PONG"
            ):
                break
            time.sleep(0.05)
        yield f"redis://{HOST}:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def ensure_bundle(store: Path, name: str, scratch: Path) -> tuple[Path, int]:
    """The store's LATEST version of `name`, or a freshly made tiny bundle in a scratch store."""
    latest = ModelStore(store).latest(name) if store.exists() else None
    if latest is not None:
        return store, latest
    from training.tiny_bundle import make_tiny_bundle  # torch only when no bundle exists

    scratch_store = scratch / "store"
    version = ModelStore(scratch_store).publish(name, make_tiny_bundle(scratch / "bundle"))
    return scratch_store, version


def known_users(store: Path, name: str, version: int) -> list[tuple[str, int]]:
    """(user id, history length) of every user in the bundle."""
    bundle = ModelStore(store).verify(name, version)
    with np.load(bundle.path("histories.npz"), allow_pickle=False) as npz:
        lengths = np.diff(npz["offsets"])
        return [(str(u), int(n)) for u, n in zip(npz["user_ids"], lengths, strict=True)]


def measure(
    port: int,
    warm: list[str],
    paths: list[str],
    expect: re.Pattern[bytes] | None,
    args: argparse.Namespace,
    closed_paths: list[str] | None = None,
) -> dict[str, Any]:
    """Warm `warm` paths, then open-loop at args.rate over `paths` and closed-loop throughput."""
    if warm:
        run(closed_loop(HOST, port, warm, 4, 120.0, None, unique=True))
    opened = run(open_loop(HOST, port, paths, args.rate, args.duration, expect))
    unique = closed_paths is not None
    closed = run(
        closed_loop(
            HOST,
            port,
            closed_paths or paths,
            args.concurrency,
            args.duration,
            expect,
            unique=unique,
        )
    )
    return {"open": summarise(opened), "closed": summarise(closed), "server": server_means(port)}


def server_means(port: int) -> dict[str, float]:
    """Mean encoder and index-search time per call, from the server's own /metrics."""
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return {}
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith(("_sum", "_count")) and "duration" in sample.name:
                sums[sample.name] = sums.get(sample.name, 0.0) + sample.value
    out = {}
    for name in ("encoder", "index_search", "request"):
        total = sums.get(f"cinesync_{name}_duration_seconds_sum")
        count = sums.get(f"cinesync_{name}_duration_seconds_count")
        if total is not None and count:
            out[f"{name}_mean_ms"] = round(1000.0 * total / count, 3)
    return out


def summarise(result: LoadResult) -> dict[str, Any]:
    return {
        "requests": result.completed, "errors": result.errors, "mismatches": result.mismatches,
        "first_problem": result.first_problem, "elapsed_s": round(result.elapsed_s, 3),
        "throughput_rps": round(result.throughput, 1),
        "p50_ms": round(result.percentile_ms(50), 3), "p99_ms": round(result.percentile_ms(99), 3),
    }  # fmt: skip


def benchmark(args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    store, version = ensure_bundle(args.store, args.model_name, scratch)
    users = known_users(store, args.model_name, version)
    long_users = [u for u, n in users if n >= N_FULL]
    rng = np.random.default_rng(0)
    warm_users = [long_users[i] for i in rng.permutation(len(long_users))[:200]]
    hot = [f"/recommend/{u}?k=10" for u in warm_users]
    # misses: (user, k) pairs never requested before, k in 1..20 (mean 10.5)
    fresh = [f"/recommend/{u}?k={k}" for k in range(1, 21) if k != 10 for u in long_users]
    fresh = [fresh[i] for i in rng.permutation(len(fresh))]
    n_open = int(args.rate * args.duration)
    if len(fresh) < n_open + 1000:
        raise SystemExit(f"only {len(fresh)} fresh keys for {n_open} open-loop misses")
    runs: dict[str, list[dict[str, Any]]] = {}
    with redis_server(scratch) as redis_url:
        base_env = {
            **_os_env(),
            "CINESYNC_STORE_DIR": str(store), "CINESYNC_MODEL_NAME": args.model_name,
            "CINESYNC_REDIS__URL": redis_url, "CINESYNC_CACHE__L1_TTL_S": "3600",
            "CINESYNC_CACHE__L2_TTL_S": "3600", "CINESYNC_LOG_LEVEL": "WARNING",
            "CINESYNC_ENV": "development", **service_settings(args.set),
        }  # fmt: skip
        scenarios = [
            ("hello", "benchmarks.hello_app:create_app", {}, [], hot, None, None),
            ("l1_hit", "service.main:create_app", {}, hot, hot, tier("l1"), None),
            ("miss", "service.main:create_app", {}, [], fresh[:n_open], SEQUENTIAL_MISS,
             fresh[n_open:]),
            ("l2_hit", "service.main:create_app", {"CINESYNC_CACHE__L1_SIZE": "0"}, hot, hot,
             tier("l2"), None),
        ]  # fmt: skip
        if args.floor:  # the miss with part of its work replaced by a constant
            scenarios += [
                (name, f"benchmarks.serving_floor:{factory}", {}, [], fresh[:n_open],
                 SEQUENTIAL_MISS, fresh[n_open:])
                for name, factory in FLOOR_SCENARIOS.items()
            ]  # fmt: skip
        # every repeat restarts each server with empty caches, scenarios interleaved so that
        # a noisy neighbour spreads over all of them
        for repeat in range(args.repeats):
            for name, factory, extra_env, warm, paths, expect, closed_paths in scenarios:
                flush = [shutil.which("redis-cli") or "redis-cli", "-u", redis_url, "flushall"]
                subprocess.run(flush, capture_output=True, check=False)
                port = free_port()
                log_path = scratch / f"{name}-{repeat}.log"
                with running(uvicorn_command(factory, port), env={**base_env, **extra_env},
                             port=port, log_path=log_path):  # fmt: skip
                    figures = measure(port, warm, paths, expect, args, closed_paths)
                runs.setdefault(name, []).append(figures)
                print(f"{name:>7} #{repeat + 1}: {json.dumps(figures)}", flush=True)
    results = {name: median_of(figures) for name, figures in runs.items()}
    return {
        "machine": describe_machine(),
        "bundle": bundle_info(store, args.model_name, version, len(users), len(long_users)),
        "settings": {"rate_rps": args.rate, "duration_s": args.duration,
                     "concurrency": args.concurrency, "repeats": args.repeats,
                     "service_settings": service_settings(args.set),
                     "uvicorn": " ".join(uvicorn_command("APP", 0)[3:]).replace(
                         "--port 0", "--port PORT")},
        "scenarios": results,
        "runs": runs,
        "ratios": ratios(results),
    }  # fmt: skip


def bundle_info(store: Path, name: str, version: int, users: int, long_users: int
                ) -> dict[str, Any]:  # fmt: skip
    manifest = ModelStore(store).manifest(name, version)
    layers = manifest.model.config.get("model", {}).get("n_layers")
    return {
        "store": str(store), "name": name, "version": version, "kind": manifest.model.kind,
        "dim": manifest.model.dim, "max_len": manifest.model.max_len, "n_layers": layers,
        "dataset": manifest.dataset.name, "items": manifest.dataset.items, "users": users,
        "users_with_full_history": long_users,
    }  # fmt: skip


def service_settings(pairs: list[str]) -> dict[str, str]:
    """`--set CINESYNC_X=v` options as environment entries for the CineSync servers."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.startswith("CINESYNC_"):
            raise SystemExit(f"--set expects CINESYNC_NAME=VALUE, got {pair!r}")
        out[key] = value
    return out


def median_of(figures: list[dict[str, Any]]) -> dict[str, Any]:
    """Per mode, the median of each number over the repeats; problems are summed."""
    out: dict[str, Any] = {}
    for mode in ("open", "closed"):
        rows = [f[mode] for f in figures]
        out[mode] = {
            key: (round(float(np.median([r[key] for r in rows])), 3)
                  if key.endswith(("_ms", "_rps", "_s")) else sum(r[key] for r in rows))
            for key in ("requests", "errors", "mismatches", "elapsed_s", "throughput_rps",
                        "p50_ms", "p99_ms")
        }  # fmt: skip
        out[mode]["first_problem"] = next((r["first_problem"] for r in rows if r["first_problem"]),
                                          "")  # fmt: skip
    servers = [f["server"] for f in figures if f.get("server")]
    out["server"] = {key: round(float(np.median([s[key] for s in servers if key in s])), 3)
                     for key in sorted({k for s in servers for k in s})}  # fmt: skip
    return out


def ratios(results: dict[str, Any]) -> dict[str, Any]:
    hello = results["hello"]
    out: dict[str, Any] = {}
    for name in ("l1_hit", "l2_hit", "miss", *[n for n in FLOOR_SCENARIOS if n in results]):
        r = results[name]
        out[name] = {
            "p50_x_hello": round(r["open"]["p50_ms"] / hello["open"]["p50_ms"], 2),
            "p99_x_hello": round(r["open"]["p99_ms"] / hello["open"]["p99_ms"], 2),
            "throughput_x_hello": round(
                r["closed"]["throughput_rps"] / hello["closed"]["throughput_rps"], 2),
        }  # fmt: skip
    miss_p99 = results["miss"]["open"]["p99_ms"]
    out["targets"] = {
        "miss_p99_le_10ms": miss_p99 <= 10.0,
        "miss_p99_le_2x_hello": out["miss"]["p99_x_hello"] <= 2.0,
        "l1_throughput_ge_0.8x_hello": out["l1_hit"]["throughput_x_hello"] >= 0.8,
    }
    return out


def _os_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("CINESYNC_")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.serving",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--store", type=Path, default=Path("model_store/store"))
    p.add_argument("--model-name", default="cinesync")
    p.add_argument("--rate", type=float, default=200.0, help="open-loop requests/s")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    p.add_argument("--concurrency", type=int, default=8, help="closed-loop connections")
    p.add_argument("--repeats", type=int, default=3, help="runs per scenario (medians reported)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="CINESYNC_NAME=VALUE",
        help="a service setting for every CineSync server (repeatable)",
    )
    p.add_argument(
        "--floor",
        action="store_true",
        help="also measure the miss with a constant encoder answer and with no scoring at all "
        "(benchmarks/serving_floor.py)",
    )
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cinesync-bench-") as tmp:
        report = benchmark(args, Path(tmp))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "serving.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "serving.md").write_text(render_markdown(report))
    print(render_markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
