"""Encoder latency per request: torch eager vs ONNX Runtime FP32 vs INT8, batch 1 and 64, plus
bundle file sizes. All engines are timed in one run, interleaved round by round (so a noisy
neighbour slows all of them alike), with the same thread count; medians are reported, and
ratios to torch eager.

    python -m benchmarks.encoder [--dataset ml-latest-small] [--epochs 3] [--threads 1]

The model is SASRec with the [model] table of training/configs/sasrec.toml (the default serving
shape: max_len 200, dim 64, 2 layers), trained briefly on the dataset with training.tiny_bundle's
loop and exported with training.export (so the INT8 parity figures are those of a real model).
Inputs are real validation histories left-padded to max_len (the worst case the service sends).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from benchmarks.machine import cpu_name
from training.config import CONFIG_DIR
from training.data import leave_one_out, load_dataset
from training.export import export_bundle
from training.models.sasrec import SASRec, SASRecConfig
from training.parity import left_pad, pick_histories
from training.tiny_bundle import score_fn, train_tiny

RESULTS = Path(__file__).resolve().parent / "results"
ROUNDS = {"batch_1": 300, "batch_1_unpadded": 300, "batch_64": 40}  # case -> timed rounds


def machine() -> dict[str, Any]:
    return {
        "cpu": cpu_name(),
        "logical_cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
        "load_average_at_start": list(os.getloadavg()),
    }


def _session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def latency(
    model: SASRec, bundle: Path, cases: dict[str, np.ndarray], threads: int
) -> dict[str, Any]:
    """Median call latency per engine for each case (a named [B, L] int64 batch)."""
    torch.set_num_threads(threads)
    encoder = model.query_encoder().eval()
    fp32 = _session(bundle / "encoder.onnx", threads)
    int8 = _session(bundle / "encoder.int8.onnx", threads)

    def torch_call(x: np.ndarray) -> Callable[[], object]:
        tensor = torch.from_numpy(x)

        def run() -> object:
            with torch.inference_mode():
                return encoder(tensor)

        return run

    engines: dict[str, Callable[[np.ndarray], Callable[[], object]]] = {
        "torch_eager": torch_call,
        "onnx_fp32": lambda x: lambda: fp32.run(None, {"history": x}),
        "onnx_int8": lambda x: lambda: int8.run(None, {"history": x}),
    }
    out: dict[str, Any] = {}
    for case, batch in cases.items():
        batch_size = batch.shape[0]
        calls = {name: make(batch) for name, make in engines.items()}
        for call in calls.values():  # warm-up
            for _ in range(5):
                call()
        samples: dict[str, list[float]] = {name: [] for name in calls}
        for _ in range(ROUNDS[case]):
            for name, call in calls.items():
                samples[name].append(_timed(call))
        medians = {name: statistics.median(s) for name, s in samples.items()}
        out[case] = {
            name: {
                "median_ms": 1e3 * m,
                "p90_ms": 1e3 * float(np.quantile(samples[name], 0.9)),
                "per_history_us": 1e6 * m / batch_size,
                "ratio_to_torch_eager": m / medians["torch_eager"],
            }
            for name, m in medians.items()
        } | {"rounds": ROUNDS[case], "batch": batch_size, "length": int(batch.shape[1])}
    return out


def render(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        "# Encoder latency (per request) and bundle sizes",
        "",
        f"Machine: {m['cpu']}, {m['logical_cpus']} logical CPUs ({m['platform']}); "
        f"torch {m['torch']}, onnxruntime {m['onnxruntime']}; load average at start "
        f"{', '.join(f'{x:.1f}' for x in m['load_average_at_start'])}.",
        f"Model: {result['model']['description']}.",
        f"Threads: {result['threads']} for every engine (the service's default); inputs: real "
        f"validation histories left-padded to L = {result['model']['max_len']}, and one "
        "unpadded history of the median length (what the service sends for one user); medians "
        "over interleaved rounds.",
        "",
        "| batch | L | engine | median ms | p90 ms | per history µs | ratio to torch eager |",
        "|---|---|---|---|---|---|---|",
    ]
    for engines in result["latency"].values():
        for name, row in engines.items():
            if isinstance(row, dict):
                lines.append(
                    f"| {engines['batch']} | {engines['length']} | {name} | "
                    f"{row['median_ms']:.3f} | "
                    f"{row['p90_ms']:.3f} | {row['per_history_us']:.1f} | "
                    f"{row['ratio_to_torch_eager']:.2f} |"
                )
    lines += ["", "| bundle file | bytes |", "|---|---|"]
    lines += [f"| {name} | {size:,} |" for name, size in result["bundle_bytes"].items()]
    p = result["parity"]
    lines += [
        "",
        f"Parity (export checks): FP32 vs torch max |Δquery| "
        f"{p['fp32_query_max_abs_diff']:.2e}; INT8 vs FP32 top-10 overlap "
        f"{p['int8_top10_overlap']:.3f} (min {p['int8_top10_overlap_min']:.2f}); "
        f"exporter {p['exporter']}.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="ml-latest-small")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    started = machine()
    ds = load_dataset(args.dataset)
    split = leave_one_out(ds)
    model_table = tomllib.loads((CONFIG_DIR / "sasrec.toml").read_text())["model"]
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(n_items=ds.n_items, **model_table))
    t0 = time.perf_counter()
    train_tiny(model, split, args.epochs, seed=0, lr=1e-3)
    train_s = time.perf_counter() - t0
    from training.evaluate import evaluate
    from training.tasks import train_counts

    popularity = train_counts(split)
    metrics = {"valid": evaluate(score_fn(model), split.valid, ds, train_popularity=popularity)}
    histories = pick_histories(split.valid.histories, 64)
    max_len = model.config.max_len
    lengths = [min(len(h), max_len) for h in histories]
    median_row = int(np.argsort(lengths)[len(lengths) // 2])
    cases = {
        "batch_1": left_pad(histories[:1], max_len),
        "batch_1_unpadded": left_pad(histories[median_row : median_row + 1], lengths[median_row]),
        "batch_64": left_pad(histories, max_len),
    }
    with tempfile.TemporaryDirectory() as tmp:
        bundle = export_bundle(model, ds, split, Path(tmp) / "bundle", metrics, kind="sasrec")
        sizes = {p.name: p.stat().st_size for p in sorted(bundle.iterdir())}
        parity = json.loads((bundle / "bundle.json").read_text())["parity"]
        timings = latency(model, bundle, cases, args.threads)
    result = {
        "machine": started,
        "threads": args.threads,
        "model": {
            "description": f"SASRec ({', '.join(f'{k}={v}' for k, v in model_table.items())})"
            f" on {ds.name}, {args.epochs} epochs of full-softmax CE "
            f"({train_s:.0f} s), valid ndcg@10 "
            f"{metrics['valid']['ndcg@10']:.4f} (loo-time, full ranking)",
            "max_len": model.config.max_len,
            "dim": model.config.dim,
            "valid": metrics["valid"],
        },
        "latency": timings,
        "bundle_bytes": sizes,
        "parity": parity,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "encoder.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "encoder.md").write_text(render(result))
    print(render(result))


if __name__ == "__main__":
    main()
