"""Model quality report: every model × MovieLens set, ablations, RecBole comparison, plots.

    CINESYNC_DATA_DIR=../shared/data python -m benchmarks.quality --seeds 0,1,2 --ablation

trains each missing run into --runs-dir (folders that already hold metrics.json are reused;
--reuse DIR only reads DIR and trains nothing), then writes benchmarks/results/quality.md,
quality.json, quality_curves.png and quality_accuracy_coverage.png. Test metrics come from
each run's metrics.json (evaluated once, on the best-validation weights).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.machine import cpu_name
from benchmarks.quality_plan import DATASETS, NEURAL, ablation_arms, main_overrides, train_run
from benchmarks.quality_plots import plot_accuracy_coverage, plot_curves
from benchmarks.quality_report import build, render
from benchmarks.quality_runs import Run, find_runs

RESULTS = Path(__file__).resolve().parent / "results"
PROTOCOL = (
    "leave-one-out by time (each user's interactions ordered by timestamp, ties by "
    "ascending item id; last = test, second-last = validation), full ranking over all "
    "items with every earlier item of the user excluded; model selection (best epoch, "
    "best model) on validation NDCG@10 only, test evaluated once per run"
)


def parse_budgets(text: str) -> dict[tuple[str, str], float]:
    """'150' (every model) or 'two_tower=120,bert4rec@ml-latest-small=180' -> {(model, ds): s}."""
    out: dict[tuple[str, str], float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.rpartition("=")
        if not sep:
            out[("*", "*")] = float(value)
            continue
        model, _, dataset = key.partition("@")
        out[(model, dataset or "*")] = float(value)
    return out


def budget_for(budgets: dict[tuple[str, str], float], model: str, dataset: str) -> float:
    for key in ((model, dataset), (model, "*"), ("*", "*")):
        if key in budgets:
            return budgets[key]
    return 0.0


def machine() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    return (
        f"{cpu_name()} ({platform.machine()}), {os.cpu_count()} cores "
        f"(shared; 1-min load {load:.1f} at report time), no GPU, "
        f"Python {sys.version.split()[0]}, torch threads from $CINESYNC_THREADS="
        f"{os.environ.get('CINESYNC_THREADS', 'unset')}"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.quality", description=__doc__.split("\n")[0]
    )
    p.add_argument("--datasets", default=",".join(DATASETS))
    p.add_argument("--models", default=",".join(NEURAL))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--ablation", action="store_true", help="also run the ablation arms")
    p.add_argument("--ablation-seeds", default=None, help="default: --seeds")
    p.add_argument("--ablation-dataset", default="ml-100k")
    p.add_argument(
        "--ablation-only",
        action="store_true",
        help="train and report only the ablation arms (no models table, RecBole or plots)",
    )
    p.add_argument("--reuse", type=Path, default=None, help="read runs from DIR; train nothing")
    p.add_argument("--runs-dir", type=Path, default=Path("runs/quality"))
    p.add_argument(
        "--budget-seconds",
        default="0",
        help="training-time cap for main-table runs: N or model[@dataset]=N,...",
    )
    p.add_argument("--baselines", type=Path, default=RESULTS / "baselines.json")
    p.add_argument("--out-dir", type=Path, default=RESULTS)
    p.add_argument(
        "--name", default="quality", help="output files NAME.md and NAME.json (and plots)"
    )
    p.add_argument(
        "--notes",
        type=Path,
        default=RESULTS / "quality.notes.md",
        help="Markdown included under the header (what was run; skipped if missing)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.ablation_only:
        args.ablation, args.datasets, args.models = True, "", ""
    datasets = [d for d in args.datasets.split(",") if d]
    models = [m for m in args.models.split(",") if m]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    abl_seeds = [int(s) for s in (args.ablation_seeds or args.seeds).split(",") if s]
    budgets = parse_budgets(args.budget_seconds)
    root = args.reuse or args.runs_dir
    arms = ablation_arms() if args.ablation else []
    if args.reuse is None:
        for dataset in datasets:
            for model in models:
                for seed in seeds:
                    over = main_overrides(model, budget_for(budgets, model, dataset))
                    train_run(
                        model, dataset, seed, over, root / "main" / dataset / model / f"seed{seed}"
                    )
        for seed in abl_seeds:
            for arm in arms:
                out = root / "ablation" / args.ablation_dataset / arm.name / f"seed{seed}"
                train_run(arm.model, args.ablation_dataset, seed, arm.over, out)
    main_runs: dict[str, dict[str, list[Run]]] = {
        d: {m: find_runs(root / "main" / d / m) for m in models} for d in datasets
    }
    abl_runs = (
        {
            args.ablation_dataset: {
                a.name: find_runs(root / "ablation" / args.ablation_dataset / a.name) for a in arms
            }
        }
        if arms
        else {}
    )
    found = sum(len(r) for by in [*main_runs.values(), *abl_runs.values()] for r in by.values())
    if found == 0 and (models or arms):
        how = (
            "train them first: the same command without --reuse"
            if args.reuse is not None
            else "every training run failed: see train.log in the run folders"
        )
        print(f"error: no finished runs under {root} ({how})", file=sys.stderr)
        return 2
    baselines: dict[str, Any] = (
        json.loads(args.baselines.read_text())
        if args.baselines.is_file() and not args.ablation_only
        else {}
    )
    command = "CINESYNC_DATA_DIR=../shared/data python -m benchmarks.quality " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    meta = {
        "protocol": PROTOCOL,
        "machine": machine(),
        "command": command.strip(),
        "generated_at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "notes": [args.notes.read_text().rstrip()] if args.notes.is_file() else [],
    }
    report = build(main_runs, abl_runs, arms, baselines, meta)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / f"{args.name}.json").write_text(
        json.dumps(report, indent=2, default=str) + "\n"
    )
    markdown = render(report, args.name, not args.ablation_only)
    (args.out_dir / f"{args.name}.md").write_text(markdown + "\n")
    print(f"wrote {args.out_dir / f'{args.name}.md'}")
    if args.ablation_only:
        return 0
    plot_curves(main_runs, args.out_dir / f"{args.name}_curves.png")
    points = [
        {
            "dataset": d,
            "model": r["model"],
            "ndcg": r["test"]["ndcg@10"][0],
            "ndcg_std": r["test"]["ndcg@10"][1],
            "coverage": r["test"]["coverage@10"][0],
        }
        for d, rows in report["table"].items()
        for r in rows
    ]
    plot_accuracy_coverage(points, args.out_dir / f"{args.name}_accuracy_coverage.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
