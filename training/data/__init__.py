"""Data layer: `load_dataset(spec)` returns the one `Dataset` every model and split reads.

spec: "ml-latest-small" (bundled) | "ml-100k" (from the data dir, downloaded if missing) |
"synthetic[:users=..,items=..,interactions=..,genres=..,seed=..]" | a PATH (generic format).
"""

from __future__ import annotations

import os
from pathlib import Path

from training.data.dataset import PAD, Dataset
from training.data.splits import EvalSet, Split, leave_one_out, temporal_split

DATA_DIR_ENV = "CINESYNC_DATA_DIR"

__all__ = [
    "PAD",
    "Dataset",
    "EvalSet",
    "Split",
    "leave_one_out",
    "load_dataset",
    "resolve_data_dir",
    "temporal_split",
]


def resolve_data_dir(data_dir: Path | None = None) -> Path:
    """The argument, else $CINESYNC_DATA_DIR, else ~/.cache/cinesync/data."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get(DATA_DIR_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "cinesync" / "data"


def load_dataset(spec: str, data_dir: Path | None = None) -> Dataset:
    """Load a dataset by name or path; bad input raises training.errors.DataError."""
    spec = str(spec).strip()
    if spec == "ml-latest-small":
        from training.data.movielens import load_ml_latest_small

        return load_ml_latest_small()
    if spec == "ml-100k":
        from training.data.download import ensure_ml100k
        from training.data.movielens import load_ml100k

        return load_ml100k(ensure_ml100k(resolve_data_dir(data_dir)))
    if spec == "synthetic" or spec.startswith("synthetic:"):
        from training.data.synthetic import SyntheticConfig, generate

        return generate(SyntheticConfig.parse(spec))
    from training.data.generic import load_generic

    return load_generic(Path(spec).expanduser())
