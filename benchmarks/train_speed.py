"""Training speed and mixed precision, measured side by side in one run on one machine.

For each model and AMP mode, trains a fresh model (same seed, same config) for a fixed number of
epochs and reports seconds per epoch (training only), sequences per second and the validation and
test NDCG@10 reached (leave-one-out by time, full ranking, seen items excluded). Ratios are to
`amp=off` on the same device in the same run.

    python -m benchmarks.train_speed --dataset ml-latest-small --device cuda --epochs 5
    python -m benchmarks.train_speed --dataset ml-100k --device cpu --epochs 2 --amp off,bf16
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks.machine import cpu_name


def machine() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": cpu_name(),
        "cores": __import__("os").cpu_count(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def run_one(
    model: str, dataset: str, device: str, amp: str, epochs: int, seed: int, config: Path | None
) -> dict[str, Any]:
    import torch

    from training.config import DATASET_FIELDS, build_model_config
    from training.data import leave_one_out, load_dataset
    from training.models import get_model_spec
    from training.train import configure_threads, resolve_device, seed_everything, train
    from training.train_cli import resolve_config

    spec = get_model_spec(model)
    overrides = {
        "train.epochs": epochs,
        "train.seed": seed,
        "train.amp": amp,
        "train.patience": 0,
        "train.max_seconds": 0.0,
        "train.progress": False,
    }
    run_config = resolve_config(model, config, None, False, overrides)
    torch_device = resolve_device(device)
    configure_threads(run_config.train.threads)
    ds = load_dataset(dataset)
    split = leave_one_out(ds)
    seed_everything(seed)
    model_config = build_model_config(spec.config_cls, run_config, n_items=ds.n_items)
    net = spec.build(model_config, ds)
    run_config.model = {k: v for k, v in asdict(model_config).items() if k not in DATASET_FIELDS}
    if torch_device.type == "cuda":
        torch.cuda.synchronize()
    epoch_seconds: list[float] = []

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = train(
            net,
            split,
            run_config,
            Path(tmp),
            device=torch_device,
            meta={"model": model},
            log=lambda _m: None,
        )
        wall = time.perf_counter() - start
        for line in (Path(tmp) / "epochs.jsonl").read_text().splitlines():
            row = json.loads(line)
            epoch_seconds.append(float(row.get("train_seconds", row.get("seconds", 0.0))))
    n_seqs = sum(max(0, len(s) - 1) for s in split.train)
    steady = sorted(epoch_seconds[1:] or epoch_seconds)
    median = steady[len(steady) // 2]
    return {
        "model": model,
        "dataset": ds.name,
        "device": str(torch_device),
        "amp": amp,
        "epochs": result.epochs_run,
        "wall_seconds": round(wall, 2),
        "median_epoch_seconds": round(median, 3),
        "training_targets": n_seqs,
        "targets_per_second": round(n_seqs / median, 1) if median > 0 else None,
        "valid_ndcg@10": result.metrics.get("valid", {}).get("ndcg@10"),
        "test_ndcg@10": result.metrics.get("test", {}).get("ndcg@10"),
        "test_hr@10": result.metrics.get("test", {}).get("hr@10"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="sasrec")
    parser.add_argument("--dataset", default="ml-latest-small")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--amp", default="off,bf16,fp16")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    rows = []
    for model in args.models.split(","):
        for amp in args.amp.split(","):
            if amp == "fp16" and args.device == "cpu":
                continue
            row = run_one(
                model, args.dataset, args.device, amp, args.epochs, args.seed, args.config
            )
            rows.append(row)
            print(json.dumps(row), flush=True)
    base = {r["model"]: r["median_epoch_seconds"] for r in rows if r["amp"] == "off"}
    print(
        f"\n{'model':<10}{'amp':<6}{'s/epoch':>9}{'speed-up':>10}{'targets/s':>11}"
        f"{'valid ndcg@10':>15}{'test ndcg@10':>14}"
    )
    for r in rows:
        ratio = (
            base.get(r["model"], 0) / r["median_epoch_seconds"] if r["median_epoch_seconds"] else 0
        )
        print(
            f"{r['model']:<10}{r['amp']:<6}{r['median_epoch_seconds']:>9.2f}{ratio:>9.2f}x"
            f"{r['targets_per_second'] or 0:>11.0f}{r['valid_ndcg@10'] or 0:>15.4f}"
            f"{r['test_ndcg@10'] or 0:>14.4f}"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
