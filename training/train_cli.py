"""`cinesync train`: config -> dataset -> leave-one-out split -> train -> export -> publish.

Under torchrun (`torchrun --nproc_per_node=N -m training.train_cli --model ...`) every rank
trains data-parallel (training/distributed.py); rank 0 alone exports, publishes and tracks.
"""

from __future__ import annotations

import re
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

from model_store.fsops import describe
from training.config import (
    DATASET_FIELDS,
    RunConfig,
    apply_overrides,
    build_model_config,
    load_config,
)
from training.distributed import DistContext, init_distributed
from training.errors import ConfigError
from training.models import ModelSpec, get_model_spec
from training.tracking import flatten, numeric
from training.train import TrainResult, configure_threads, resolve_device, seed_everything, train

DEFAULT_STORE = Path("model_store/store")
SUMMARY_METRICS = ("ndcg@10", "hr@10", "hr@20", "mrr@10", "coverage@10")


def default_run_dir(model: str, dataset_name: str) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(dataset_name).name) or "data"
    return Path("runs") / f"{model}-{safe}-{stamp}"


# what a run leaves in its folder (training/train.py, training/export.py, training/tracking.py)
RUN_ARTIFACTS = ("metrics.json", "epochs.jsonl", "checkpoint.pt", "best.pt", "bundle")
RUN_LOGS = ("tracking.jsonl", "params.json", "summary.json", "config.toml")


def earlier_run(out: Path) -> list[str]:
    """The files of an earlier run in `out` that a new run would replace (empty: none)."""
    return [name for name in RUN_ARTIFACTS if (out / name).exists()]


def check_run_folder(out: Path | None, *, resume: bool, overwrite: bool) -> None:
    """Before anything is loaded: refuse --resume with --overwrite, and an --out holding an
    earlier run unless one of them is given. With --overwrite the earlier run's files are
    removed first, so a new run that fails cannot leave the old metrics and bundle looking
    like its own (and the tracking log, appended to, does not mix the two)."""
    if resume and overwrite:
        raise ConfigError(
            "--resume continues the run in --out and --overwrite replaces it: give one of them"
        )
    if out is None or resume:
        return
    found = earlier_run(out)
    if not found:
        return
    if not overwrite:
        raise ConfigError(
            f"{out} already holds a run ({', '.join(found)}): --resume continues it, "
            "--overwrite replaces it, or choose another --out"
        )
    try:
        for name in RUN_ARTIFACTS + RUN_LOGS:
            path = out / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
    except OSError as exc:
        raise ConfigError(f"--overwrite could not clear {out}: {describe(exc)}") from exc


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
    mlflow: bool | None = None,
) -> None:
    """Train MODEL on DATASET, write RUN_DIR (metrics.json, bundle/), optionally publish it.

    `mlflow` (None = $CINESYNC_MLFLOW) logs the run to MLflow, else to RUN_DIR/params.json and
    tracking.jsonl."""
    spec = get_model_spec(model)
    if resume and out is None:
        raise ConfigError("--resume needs --out RUN_DIR (the run folder to continue)")
    run_config = resolve_config(
        model, config, out, resume, {"train.epochs": epochs, "train.seed": seed}
    )
    ctx = init_distributed(resolve_device(device))  # torchrun's process group, else one process
    ok = False
    try:
        if ctx.enabled and out is None:
            raise ConfigError("distributed training needs --out RUN_DIR (the same on every rank)")
        _train_run(
            spec, dataset, data_dir, run_config, out, resume, ctx, publish, store, name, mlflow
        )
        ok = True
    finally:
        ctx.close(wait=ok)


def _train_run(
    spec: ModelSpec,
    dataset: str,
    data_dir: Path | None,
    run_config: RunConfig,
    out: Path | None,
    resume: bool,
    ctx: DistContext,
    publish: bool,
    store: Path | None,
    name: str | None,
    mlflow: bool | None,
) -> None:
    from training.data import leave_one_out, load_dataset
    from training.tracking import tracked_run

    model = spec.name
    torch_device = ctx.device
    threads = ctx.share_threads(configure_threads(run_config.train.threads))
    ds = load_dataset(dataset, data_dir)
    split = leave_one_out(ds)
    run_dir = out or default_run_dir(model, ds.name)
    seed_everything(run_config.train.seed)
    model_config = build_model_config(spec.config_cls, run_config, n_items=ds.n_items)
    net = spec.build(model_config, ds)
    run_config.model = {k: v for k, v in asdict(model_config).items() if k not in DATASET_FIELDS}
    log = print if ctx.is_main else (lambda *_: None)
    log(
        f"training {model} on {ds.name} ({ds.n_users} users, {ds.n_items} items, "
        f"{ds.n_interactions} interactions) on {torch_device} with {threads} threads"
        f"{f' x {ctx.world_size} ranks' if ctx.enabled else ''} -> {run_dir}"
    )
    meta = {"model": model, "model_config": asdict(model_config), "dataset": ds.name}
    params = {**meta, "train": asdict(run_config.train), "world_size": ctx.world_size}
    with tracked_run(run_dir, mlflow, params, enabled=ctx.is_main) as tracker:
        result = train(
            net,
            split,
            run_config,
            run_dir,
            device=torch_device,
            meta=meta,
            resume=resume,
            dist=ctx,
            tracker=tracker,
        )
        if not ctx.is_main:
            return

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
        artifacts = [bundle / "bundle.json"]
        if publish:
            from training.publish import default_model_name, publish_run

            root = store or DEFAULT_STORE
            version = publish_run(run_dir=run_dir, store_root=root, name=name)
            extra["published"] = f"version {version} in {root}"
            # the store's layout: <root>/<name>/<version>/manifest.json (DESIGN 3.1)
            artifacts.append(root / (name or default_model_name()) / str(version) / "manifest.json")
        if tracker is not None:
            final = {"best_valid": result.metrics["valid"], "test": result.metrics["test"]}
            tracker.log_metrics(numeric(flatten(final)), step=result.epochs_run)
            for path in artifacts:
                tracker.log_artifact(path)
    log(summary_table(result, run_dir, extra))


if __name__ == "__main__":  # torchrun --nproc_per_node=N -m training.train_cli --model ...
    from training.cli import app

    app(["train", *sys.argv[1:]], prog_name="cinesync")
