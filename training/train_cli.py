"""`cinesync train`: config -> dataset -> leave-one-out split -> train -> export -> publish."""

from __future__ import annotations

import re
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

from training.config import (
    DATASET_FIELDS,
    RunConfig,
    apply_overrides,
    build_model_config,
    load_config,
)
from training.errors import ConfigError
from training.models import get_model_spec
from training.train import TrainResult, configure_threads, resolve_device, seed_everything, train

DEFAULT_STORE = Path("model_store/store")
SUMMARY_METRICS = ("ndcg@10", "hr@10", "hr@20", "mrr@10", "coverage@10")


def default_run_dir(model: str, dataset_name: str) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(dataset_name).name) or "data"
    return Path("runs") / f"{model}-{safe}-{stamp}"


def resolve_config(
    model: str, config: Path | None, out: Path | None, resume: bool, overrides: dict[str, Any]
) -> RunConfig:
    """The file given, else the run's own config.toml when resuming, else the model default."""
    spec = get_model_spec(model)
    if config is None and resume and out is not None and (out / "config.toml").is_file():
        config = out / "config.toml"
    run_config = load_config(config or spec.default_config, spec.config_cls)
    return apply_overrides(run_config, overrides, spec.config_cls)


def summary_table(result: TrainResult, run_dir: Path, extra: dict[str, str]) -> str:
    lines = [f"{'metric':<14}{'valid':>10}{'test':>10}"]
    for name in SUMMARY_METRICS:
        valid = result.metrics.get("valid", {}).get(name, float("nan"))
        test = result.metrics.get("test", {}).get(name, float("nan"))
        lines.append(f"{name:<14}{valid:>10.4f}{test:>10.4f}")
    per_epoch = result.seconds / max(1, result.epochs_run)
    lines.append(
        f"epochs {result.epochs_run} (best {result.best_epoch}, stopped: {result.stopped}),"
        f" {result.seconds:.0f}s ({per_epoch:.1f}s/epoch)"
    )
    lines.append(f"run: {run_dir}")
    lines.extend(f"{key}: {value}" for key, value in extra.items())
    return "\n".join(lines)


def run_train(
    model: str,
    dataset: str,
    config: Path | None,
    out: Path | None,
    epochs: int | None,
    resume: bool,
    device: str,
    seed: int | None,
    publish: bool,
    store: Path | None,
    name: str | None,
    data_dir: Path | None,
) -> None:
    """Train MODEL on DATASET, write RUN_DIR (metrics.json, bundle/), optionally publish it."""
    from training.data import leave_one_out, load_dataset

    spec = get_model_spec(model)
    if resume and out is None:
        raise ConfigError("--resume needs --out RUN_DIR (the run folder to continue)")
    run_config = resolve_config(
        model, config, out, resume, {"train.epochs": epochs, "train.seed": seed}
    )
    torch_device = resolve_device(device)
    threads = configure_threads(run_config.train.threads)
    ds = load_dataset(dataset, data_dir)
    split = leave_one_out(ds)
    run_dir = out or default_run_dir(model, ds.name)
    seed_everything(run_config.train.seed)
    model_config = build_model_config(spec.config_cls, run_config, n_items=ds.n_items)
    net = spec.build(model_config, ds)
    run_config.model = {k: v for k, v in asdict(model_config).items() if k not in DATASET_FIELDS}
    print(
        f"training {model} on {ds.name} ({ds.n_users} users, {ds.n_items} items, "
        f"{ds.n_interactions} interactions) on {torch_device} with {threads} threads -> {run_dir}"
    )
    meta = {"model": model, "model_config": asdict(model_config), "dataset": ds.name}
    result = train(net, split, run_config, run_dir, device=torch_device, meta=meta, resume=resume)

    from training.export import export_bundle

    net.to("cpu").eval()
    bundle = export_bundle(
        cast(Any, net),
        ds,
        split,
        run_dir / "bundle",
        result.metrics,
        {"model": meta["model_config"], "train": asdict(run_config.train)},
        kind=model,
    )
    extra = {"bundle": str(bundle)}
    if publish:
        from training.publish import publish_run

        version = publish_run(run_dir=run_dir, store_root=store or DEFAULT_STORE, name=name)
        extra["published"] = f"version {version} in {store or DEFAULT_STORE}"
    print(summary_table(result, run_dir, extra))
