"""The serving benchmark's report: the machine it ran on and a Markdown table of the figures."""

from __future__ import annotations

import os
import platform
from importlib.metadata import version
from pathlib import Path
from typing import Any

from benchmarks.machine import cpu_name


def describe_machine() -> dict[str, Any]:
    """CPU model, core count, memory, load and software versions of this machine."""
    mem_gib = None
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        total_kib = int(meminfo.read_text().split("MemTotal:")[1].split()[0])
        mem_gib = round(total_kib / 2**20, 1)
    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "memory_gib": mem_gib,
        "load_average_1m_at_start": round(os.getloadavg()[0], 2),
        "os": platform.platform(),
        "python": platform.python_version(),
        "uvicorn": version("uvicorn"),
        "fastapi": version("fastapi"),
        "onnxruntime": version("onnxruntime"),
        "faiss": version("faiss-cpu"),
    }


LABELS = {"hello": "hello-world", "l1_hit": "L1 hit", "l2_hit": "L2 hit",
          "miss": "personalised miss", "miss_const_encoder": "miss, constant encoder answer",
          "miss_no_scoring": "miss, no scoring (floor)"}  # fmt: skip


def render_markdown(report: dict[str, Any]) -> str:
    """The figures side by side, as ratios to hello-world, with the machine named."""
    m, s, b = report["machine"], report["settings"], report["bundle"]
    ratios = report["ratios"]
    lines = [
        "# Serving benchmark",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, load average "
        f"{m['load_average_1m_at_start']} at start ({m['os']}, Python {m['python']}, uvicorn "
        f"{m['uvicorn']}, FastAPI {m['fastapi']}, ONNX Runtime {m['onnxruntime']}, "
        f"FAISS {m['faiss']}).",
        f"Bundle: {b['name']} v{b['version']}, {b.get('kind', '?')} (dim {b.get('dim', '?')}, "
        f"max_len {b.get('max_len', '?')}, {b.get('n_layers', '?')} layers) on "
        f"{b.get('dataset', '?')}: {b.get('items', '?')} items, {b['users']} users, "
        f"{b['users_with_full_history']} with a full history.",
        f"Both apps: `uvicorn {s['uvicorn']}`; client and servers on loopback. Latency: open loop "
        f"at {s['rate_rps']:g} req/s for {s['duration_s']:g} s; throughput: closed loop with "
        f"{s['concurrency']} connections. Each figure is the median of {s['repeats']} runs, "
        "each on a freshly started server with empty caches. Service settings: defaults"
        + "".join(f", {k}={v}" for k, v in s.get("service_settings", {}).items())
        + ".",
        "",
        "| scenario | p50 ms | p99 ms | max req/s | p50 x hello | p99 x hello | req/s x hello |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, label in LABELS.items():
        if name not in report["scenarios"]:
            continue
        r = report["scenarios"][name]
        ratio = ratios.get(name, {"p50_x_hello": 1.0, "p99_x_hello": 1.0,
                                  "throughput_x_hello": 1.0})  # fmt: skip
        lines.append(
            f"| {label} | {r['open']['p50_ms']:.2f} | {r['open']['p99_ms']:.2f} | "
            f"{r['closed']['throughput_rps']:.0f} | {ratio['p50_x_hello']:.2f} | "
            f"{ratio['p99_x_hello']:.2f} | {ratio['throughput_x_hello']:.2f} |"
        )
    runs = report.get("runs", {})
    if runs:
        lines += ["", "Every run (p99 ms at the open-loop rate / max req/s), for the spread:", ""]
        lines += [
            f"- {LABELS[name]}: "
            + ", ".join(f"{r['open']['p99_ms']:.1f} / {r['closed']['throughput_rps']:.0f}"
                        for r in runs[name])
            for name in LABELS if name in runs
        ]  # fmt: skip
    server = report["scenarios"]["miss"].get("server", {})
    if server:
        lines += ["", "Inside the server on the miss runs (mean per call, from its /metrics): "
                  + ", ".join(f"{k.removesuffix('_mean_ms')} {v:.2f} ms" for k, v in server.items())
                  + " (request = every /recommend of the run, all tiers)."]  # fmt: skip
    lines += ["", "Targets (issue 4):", ""]
    lines += [f"- {name}: {'met' if ok else 'MISSED'}" for name, ok in ratios["targets"].items()]
    problems = [
        f"- {name} {mode}: {r[mode]['errors']} errors, {r[mode]['mismatches']} mismatches "
        f"({r[mode]['first_problem']})"
        for name, r in report["scenarios"].items() for mode in ("open", "closed")
        if r[mode]["errors"] or r[mode]["mismatches"]
    ]  # fmt: skip
    if problems:
        lines += ["", "Problems:", "", *problems]
    return "\n".join(lines) + "\n"
