"""Headless locust run with an SLO verdict.

    python -m loadtests.run --host http://127.0.0.1:8000 --users 20 --spawn-rate 10 \
        --run-time 30s --rate 200 --slo-p99-ms 50 --max-failure-ratio 0 --out loadtests/out

Writes locust's CSV stats (OUT/locust_stats.csv, _stats_history.csv, _failures.csv), the
final statistics and errors (OUT/locust_result.json), the final figures as OUT/summary.csv and
OUT/summary.json, and OUT/locust.log; prints p50/p95/p99, RPS and failures per request type;
exits 1 when an SLO is missed (or nothing was measured), 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from loadtests.summary import AGGREGATED, read_errors, read_stats, render, verdict, write_csv
from loadtests.summary import as_json as summary_json
from loadtests.workload import DEFAULT_MIX, parse_mix

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
RESULT_FILE = "locust_result.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m loadtests.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", required=True, help="service base URL, e.g. http://127.0.0.1:8000")
    p.add_argument("--users", type=int, default=20, help="simulated users (default 20)")
    p.add_argument("--spawn-rate", type=float, default=10.0, help="users started per second")
    p.add_argument("--run-time", default="30s", help="duration, e.g. 30s, 2m (default 30s)")
    p.add_argument(
        "--rate",
        type=float,
        default=None,
        help="target total requests/s (default: each user as fast as it can)",
    )
    p.add_argument("--slo-p99-ms", type=float, default=None, help="fail when a p99 exceeds this")
    p.add_argument(
        "--max-failure-ratio",
        type=float,
        default=None,
        help="fail when failures/requests exceeds this (0 = no failure allowed)",
    )
    p.add_argument("--k", type=int, default=10, help="k of each /recommend call")
    p.add_argument("--mix", default=DEFAULT_MIX, help=f"action weights (default {DEFAULT_MIX})")
    p.add_argument(
        "--store",
        type=Path,
        default=None,
        help="model store root (default $CINESYNC_STORE_DIR or model_store/store)",
    )
    p.add_argument("--model-name", default=None, help="default $CINESYNC_MODEL_NAME or cinesync")
    p.add_argument(
        "--out",
        type=Path,
        default=Path("loadtests/out"),
        help="folder for CSV stats and summary (default loadtests/out)",
    )
    args = p.parse_args(argv)
    if args.users < 1 or args.spawn_rate <= 0 or (args.rate is not None and args.rate <= 0):
        p.error("--users, --spawn-rate and --rate must be positive")
    try:
        parse_mix(args.mix)
    except ValueError as exc:
        p.error(str(exc))
    return args


def locust_command(args: argparse.Namespace) -> list[str]:
    return [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--host",
        args.host,
        "--users",
        str(args.users),
        "--spawn-rate",
        str(args.spawn_rate),
        "--run-time",
        args.run_time,
        "--stop-timeout",
        "5",
        "--only-summary",
        "--csv",
        str(args.out / "locust"),
        "--loglevel",
        "WARNING",
    ]


def locust_env(args: argparse.Namespace) -> dict[str, str]:
    env = dict(os.environ)
    env["LOADTEST_K"] = str(args.k)
    env["LOADTEST_MIX"] = args.mix
    env["LOADTEST_RESULT_FILE"] = str(args.out / RESULT_FILE)
    env["LOADTEST_RATE_PER_USER"] = str(args.rate / args.users) if args.rate else "0"
    if args.store is not None:
        env["CINESYNC_STORE_DIR"] = str(args.store)
    if args.model_name is not None:
        env["CINESYNC_MODEL_NAME"] = args.model_name
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    return env


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    log_path = args.out / "locust.log"
    stats_path = args.out / RESULT_FILE
    stats_path.unlink(missing_ok=True)
    with log_path.open("w", encoding="utf-8") as log:
        proc = subprocess.run(
            locust_command(args),
            env=locust_env(args),
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if not stats_path.exists():
        sys.stderr.write(log_path.read_text(encoding="utf-8")[-4000:])
        print(f"locust exited with {proc.returncode} and wrote no stats", file=sys.stderr)
        return 1
    stats = read_stats(stats_path)
    write_csv(stats, args.out / "summary.csv")
    problems = verdict(stats, args.slo_p99_ms, args.max_failure_ratio)
    (args.out / "summary.json").write_text(json.dumps(summary_json(stats, problems), indent=2))
    print(render(stats))
    total = stats.get(AGGREGATED)
    if total is not None:
        print(
            f"total: {total.rps:.1f} req/s, {total.failures} failures of {total.requests} "
            f"requests, p50 {total.p50_ms:g} ms, p95 {total.p95_ms:g} ms, p99 {total.p99_ms:g} ms"
        )
    for line in read_errors(stats_path)[:20]:
        print(f"failure: {line}")
    for problem in problems:
        print(f"SLO missed: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
