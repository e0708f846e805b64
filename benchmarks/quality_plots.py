"""PNG plots for the quality report: validation NDCG@10 per epoch, accuracy vs coverage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from benchmarks.quality_runs import Run


def plot_curves(runs: dict[str, dict[str, list[Run]]], path: Path) -> None:
    """One panel per dataset; one line per model and seed (validation NDCG@10 vs epoch)."""
    datasets = sorted(runs)
    fig, axes = plt.subplots(
        1, max(1, len(datasets)), figsize=(6 * max(1, len(datasets)), 4), squeeze=False
    )
    for ax, dataset in zip(axes[0], datasets, strict=False):
        for i, (model, model_runs) in enumerate(sorted(runs[dataset].items())):
            for j, run in enumerate(model_runs):
                curve = run.valid_curve()
                if not curve:
                    continue
                xs, ys = zip(*curve, strict=True)
                ax.plot(
                    xs,
                    ys,
                    color=f"C{i}",
                    alpha=1.0 if j == 0 else 0.4,
                    label=model if j == 0 else None,
                    marker="." if len(xs) < 15 else None,
                )
        ax.set_title(f"{dataset}: validation NDCG@10 per epoch")
        ax.set_xlabel("epoch")
        ax.set_ylabel("valid NDCG@10 (full ranking)")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_accuracy_coverage(points: list[dict[str, Any]], path: Path) -> None:
    """Test NDCG@10 vs coverage@10, one panel per dataset, one point per model (seed mean)."""
    datasets = sorted({p["dataset"] for p in points})
    fig, axes = plt.subplots(
        1, max(1, len(datasets)), figsize=(6 * max(1, len(datasets)), 4), squeeze=False
    )
    for ax, dataset in zip(axes[0], datasets, strict=False):
        for i, p in enumerate(q for q in points if q["dataset"] == dataset):
            ax.errorbar(
                p["coverage"],
                p["ndcg"],
                yerr=p.get("ndcg_std", 0.0),
                fmt="o",
                color=f"C{i}",
                capsize=3,
            )
            ax.annotate(
                p["model"],
                (p["coverage"], p["ndcg"]),
                textcoords="offset points",
                xytext=(5, 4),
                fontsize=8,
            )
        ax.set_title(f"{dataset}: accuracy vs catalogue coverage (test)")
        ax.set_xlabel("coverage@10")
        ax.set_ylabel("NDCG@10")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
