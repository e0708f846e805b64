"""The feature-only queries of a model with user features (two-tower), as two bundle files:

- `user_features.json`: {"columns": [spec, ...], "rows": R}; each spec is a column of
  training/features.py (`name`, `kind` bucket|category, `edges` or `values`) plus `codes`, the
  number of codes the model knows for it (0 = unknown included);
- `feature_queries.npy`: float32 [R, D], R = product of the `codes`; the row of a user with codes
  (c_0, ..., c_{F-1}) is the mixed-radix number sum_f c_f * prod_{g > f} codes_g (the first column
  most significant), so code 0 everywhere (row 0) is the query of a user nobody knows anything
  about.

The service (service/user_features.py) maps a request's feature values to codes the same way and
serves that row to users with no history.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from training.bundle_files import BundleError, write_bundle_json
from training.data.dataset import Dataset
from training.features import FeatureSpec, user_feature_specs

USER_FEATURES = "user_features.json"
FEATURE_QUERIES = "feature_queries.npy"
MAX_ROWS = 1_000_000  # beyond this the table is not worth shipping (a graph would be needed)


class ColdQueryModel(Protocol):
    def cold_query(self, features: torch.Tensor) -> torch.Tensor: ...
    def feature_cardinalities(self) -> list[int]: ...


def all_codes(cards: list[int]) -> np.ndarray:
    """int64 [prod(cards), F]: every code combination in mixed-radix order (first most
    significant)."""
    grids = np.meshgrid(*[np.arange(c, dtype=np.int64) for c in cards], indexing="ij")
    return np.stack([g.reshape(-1) for g in grids], axis=1)


def feature_rows(codes: np.ndarray, cards: list[int]) -> np.ndarray:
    """Table rows of user feature codes int64 [U, F] (a code the model never saw counts as 0,
    unknown, as the service maps it): the mixed-radix inverse of `all_codes`."""
    rows = np.zeros(len(codes), dtype=np.int64)
    for column, card in enumerate(cards):
        code = codes[:, column]
        rows = rows * card + np.where(code < card, code, 0)
    return rows


def write_feature_queries(model: Any, dataset: Dataset, out_dir: Path) -> dict[str, Any] | None:
    """Write both files when `model` has a feature-only query and user features; return what
    bundle.json records about them (None: nothing written, and why is logged by the caller)."""
    if not hasattr(model, "cold_query") or not getattr(model.config, "cold_weight", 0.0) > 0:
        return None  # no feature-only query, or one never trained: nothing worth serving
    cards: list[int] = model.feature_cardinalities()
    _, specs = user_feature_specs(dataset)
    if not cards:
        return None
    if len(specs) != len(cards):
        raise BundleError(f"the model has {len(cards)} user features, the dataset {len(specs)}")
    rows = int(np.prod(cards))
    if rows > MAX_ROWS:
        return {"skipped": f"{rows} feature combinations exceed {MAX_ROWS}"}
    codes = all_codes(cards)
    net: ColdQueryModel = copy.deepcopy(model).to("cpu", torch.float32).eval()
    with torch.no_grad():
        queries = [
            net.cold_query(torch.from_numpy(codes[start : start + 4096])).float().cpu().numpy()
            for start in range(0, rows, 4096)
        ]
    table = np.ascontiguousarray(np.concatenate(queries), dtype=np.float32)
    if not np.isfinite(table).all():
        raise BundleError(f"{FEATURE_QUERIES}: non-finite values")
    np.save(out_dir / FEATURE_QUERIES, table, allow_pickle=False)
    pairs = zip(specs, cards, strict=True)
    columns: list[FeatureSpec] = [{**spec, "codes": c} for spec, c in pairs]
    write_bundle_json(out_dir / USER_FEATURES, {"columns": columns, "rows": rows})
    return {"columns": [c["name"] for c in columns], "rows": rows}
