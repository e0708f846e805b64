"""Publish a training run's exported bundle (RUN_DIR/bundle) into the model store."""

from __future__ import annotations

from pathlib import Path

from model_store import ModelStore, StoreError
from model_store.cli_ops import default_model_name
from training.bundle_files import BUNDLE_FILES
from training.errors import CineSyncError


class PublishError(CineSyncError):
    """The run folder holds no complete bundle, or the store refused it."""


def check_bundle_dir(bundle_dir: Path) -> None:
    """Raise PublishError naming what is missing from an exported bundle folder."""
    if not bundle_dir.is_dir():
        raise PublishError(f"{bundle_dir} does not exist: export the run first (cinesync train)")
    missing = [name for name in BUNDLE_FILES if not (bundle_dir / name).is_file()]
    if missing:
        raise PublishError(
            f"bundle {bundle_dir} is incomplete (missing {', '.join(missing)}); "
            "the export failed or was interrupted, re-run it"
        )


def publish_run(run_dir: Path, store_root: Path, name: str | None = None) -> int:
    """Publish `run_dir/bundle` as the next version of `name` (default $CINESYNC_MODEL_NAME or
    'cinesync') and point LATEST at it; return the new version number."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise PublishError(f"run folder {run_dir} does not exist")
    bundle_dir = run_dir / "bundle"
    check_bundle_dir(bundle_dir)
    try:
        model_name = name or default_model_name()
    except StoreError as exc:  # $CINESYNC_MODEL_NAME is not a valid model name
        raise PublishError(str(exc)) from exc
    try:
        return ModelStore(Path(store_root)).publish(model_name, bundle_dir)
    except StoreError as exc:  # "publishing BUNDLE as 'NAME' failed: why"
        raise PublishError(str(exc)) from exc
