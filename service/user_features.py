"""Feature-only queries for users with no history (a bundle's optional `user_features.json` and
`feature_queries.npy`, written by training/feature_queries.py).

A request names features as `name:value` pairs (`?features=age:25,gender:F`). Each column maps a
value to a code as training did: buckets count the edges <= the number (code 1 + that count),
categories take 1 + their position in `values`; a code the model never saw, and every column the
request leaves out, is 0 (unknown). The codes pick one row of the table (mixed radix, the first
column most significant), so serving a feature query is a lookup, not a model run.
"""

from __future__ import annotations

import bisect
import json
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from service.errors import BundleLoadError, InvalidRequestError

USER_FEATURES = "user_features.json"
FEATURE_QUERIES = "feature_queries.npy"
MAX_FEATURES_CHARS = 512
# what `parse_features` accepts (the OpenAPI pattern of the `features` parameter): empty, or
# comma-separated name:value pairs, names without ',' or ':', values without ',' (taken verbatim)
FEATURES_PATTERN = r"^$|^[^,:]+:[^,]+(,[^,:]+:[^,]+)*$"


@dataclass(frozen=True)
class FeatureColumn:
    name: str
    kind: Literal["bucket", "category"]
    edges: tuple[float, ...]  # bucket
    values: tuple[str, ...]  # category
    codes: int  # codes the model knows, 0 (unknown) included

    def code(self, raw: str) -> int:
        """The code of one request value; InvalidRequestError for a value that cannot be one."""
        if self.kind == "bucket":
            try:
                number = float(raw)
            except ValueError:
                number = math.nan
            if not math.isfinite(number):
                raise InvalidRequestError(f"feature {self.name!r} takes a number, got {raw!r}")
            code = 1 + bisect.bisect_right(self.edges, number)
        else:
            try:
                code = 1 + self.values.index(raw)
            except ValueError:
                shown = ", ".join(self.values[:32])
                raise InvalidRequestError(
                    f"unknown value {raw[:64]!r} for feature {self.name!r} (one of: {shown})"
                ) from None
        return code if code < self.codes else 0


class FeatureQueries:
    """The table of feature-only queries and the columns that index it."""

    def __init__(self, spec: bytes, table: np.ndarray, dim: int) -> None:
        self.columns = _columns(spec)
        rows = math.prod(c.codes for c in self.columns)
        if table.shape != (rows, dim) or table.dtype != np.float32:
            raise BundleLoadError(
                f"{FEATURE_QUERIES}: expected float32 [{rows}, {dim}] for the columns of "
                f"{USER_FEATURES}, found {table.dtype} {list(table.shape)}"
            )
        if not np.isfinite(table).all():
            raise BundleLoadError(f"{FEATURE_QUERIES}: non-finite values")
        self.table = table

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def codes(self, features: dict[str, str]) -> tuple[int, ...]:
        """Codes of every column (0 where `features` leaves it out)."""
        unknown = sorted(set(features) - set(self.names))
        if unknown:
            raise InvalidRequestError(
                f"unknown feature {unknown[0][:64]!r}; this model reads: {', '.join(self.names)}"
            )
        return tuple(c.code(features[c.name]) if c.name in features else 0 for c in self.columns)

    def row(self, codes: tuple[int, ...]) -> int:
        index = 0
        for column, code in zip(self.columns, codes, strict=True):
            index = index * column.codes + code
        return index

    def query(self, codes: tuple[int, ...]) -> np.ndarray:
        """float32 [D]: the feature-only query for these codes."""
        return np.asarray(self.table[self.row(codes)], dtype=np.float32)


def parse_features(text: str | None) -> dict[str, str]:
    """`name:value,name:value` -> {name: value} (FEATURES_PATTERN; names and values verbatim);
    InvalidRequestError on anything else, or on a name given twice."""
    if not text:
        return {}
    if len(text) > MAX_FEATURES_CHARS:
        raise InvalidRequestError(f"features is longer than {MAX_FEATURES_CHARS} characters")
    out: dict[str, str] = {}
    for part in text.split(","):
        name, sep, value = part.partition(":")
        if not sep or not name or not value:
            raise InvalidRequestError(
                f"features must be name:value pairs separated by commas, got {part[:64]!r}"
            )
        if name in out:
            raise InvalidRequestError(f"feature {name[:64]!r} is given twice")
        out[name] = value
    return out


def _columns(spec: bytes) -> tuple[FeatureColumn, ...]:
    try:
        data: Any = json.loads(spec)
        columns = tuple(_column(c) for c in data["columns"])
    except (ValueError, KeyError, TypeError) as exc:
        raise BundleLoadError(f"{USER_FEATURES}: malformed ({exc})") from exc
    if not columns or len({c.name for c in columns}) != len(columns):
        raise BundleLoadError(f"{USER_FEATURES}: needs distinct, named columns")
    return columns


def _column(raw: dict[str, Any]) -> FeatureColumn:
    kind, codes = raw["kind"], int(raw["codes"])
    edges = tuple(float(e) for e in raw.get("edges", ()))
    values = tuple(str(v) for v in raw.get("values", ()))
    if kind not in ("bucket", "category") or codes < 1 or list(edges) != sorted(edges):
        raise ValueError(f"bad column {raw.get('name')!r}")
    return FeatureColumn(str(raw["name"]), "bucket" if kind == "bucket" else "category", edges,
                         values, codes)  # fmt: skip
