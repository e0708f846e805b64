"""The served bundle's item table (items.jsonl): external ids, titles, genres, popularity, genre
masks for filtering, and each item's JSON prefix pre-rendered for fast responses."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.errors import BundleLoadError, InvalidRequestError

MAX_GENRES_PER_REQUEST = 32


@dataclass(frozen=True)
class Catalog:
    """Row i describes internal item i (row 0 = padding: empty id, never served)."""

    item_ids: list[str]
    titles: list[str]
    genres: list[tuple[str, ...]]
    popularity: np.ndarray  # int64 [n + 1]
    index_of: dict[str, int]  # external item id -> internal index
    genre_masks: dict[str, np.ndarray]  # canonical genre -> bool [n + 1]
    genre_names: dict[str, str]  # lower-case genre -> canonical spelling
    popular_order: np.ndarray  # internal ids by popularity, most popular first
    json_prefix: list[bytes]  # b'{"item_id":..,"title":..,"genres":[..],"score":'

    @property
    def n_items(self) -> int:
        return len(self.item_ids) - 1

    def all_items_mask(self) -> np.ndarray:
        mask = np.ones(self.n_items + 1, dtype=bool)
        mask[0] = False
        return mask

    def parse_genres(self, raw: str | None) -> tuple[str, ...]:
        """ "Drama,comedy" -> ("Comedy", "Drama"); unknown genre -> InvalidRequestError."""
        if raw is None or not raw.strip():
            return ()
        wanted = [part.strip() for part in raw.split(",") if part.strip()]
        if len(wanted) > MAX_GENRES_PER_REQUEST:
            raise InvalidRequestError(f"at most {MAX_GENRES_PER_REQUEST} genres per request")
        out = set()
        for genre in wanted:
            canonical = self.genre_names.get(genre.lower())
            if canonical is None:
                known = ", ".join(sorted(self.genre_masks))
                raise InvalidRequestError(f"unknown genre {genre[:64]!r}; known genres: {known}")
            out.add(canonical)
        return tuple(sorted(out))

    def genre_mask(self, genres: tuple[str, ...]) -> np.ndarray:
        """Items having at least one of `genres` (every real item when none are given)."""
        if not genres:
            return self.all_items_mask()
        mask = np.zeros(self.n_items + 1, dtype=bool)
        for genre in genres:
            mask |= self.genre_masks[genre]
        return mask


def _bad(line: int, key: str, kind: str) -> BundleLoadError:
    return BundleLoadError(f"items.jsonl line {line}: field {key!r} missing or not {kind}")


def _int(row: dict[str, Any], key: str, line: int) -> int:
    value = row.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise _bad(line, key, "an integer")
    return value


def _str(row: dict[str, Any], key: str, line: int) -> str:
    value = row.get(key)
    if not isinstance(value, str):
        raise _bad(line, key, "a string")
    return value


def _strs(row: dict[str, Any], key: str, line: int) -> tuple[str, ...]:
    value = row.get(key)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _bad(line, key, "a list of strings")
    return tuple(value)


def read_catalog(data: bytes, n_items: int) -> Catalog:
    """Parse items.jsonl: exactly `n_items` rows with index 1..n in order."""
    item_ids: list[str] = [""]
    titles: list[str] = [""]
    genres: list[tuple[str, ...]] = [()]
    pops: list[int] = [0]
    for line, text in enumerate(data.decode("utf-8").splitlines(), start=1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BundleLoadError(f"items.jsonl line {line}: not JSON ({exc.msg})") from exc
        if not isinstance(row, dict):
            raise BundleLoadError(f"items.jsonl line {line}: expected a JSON object")
        index = _int(row, "index", line)
        if index != len(item_ids):
            raise BundleLoadError(
                f"items.jsonl line {line}: index {index}, expected {len(item_ids)}"
            )
        item_ids.append(_str(row, "item_id", line))
        titles.append(_str(row, "title", line))
        genres.append(_strs(row, "genres", line))
        pops.append(_int(row, "popularity", line))
    if len(item_ids) - 1 != n_items:
        raise BundleLoadError(f"items.jsonl has {len(item_ids) - 1} items, manifest says {n_items}")
    index_of = {item_id: i for i, item_id in enumerate(item_ids) if i > 0}
    if len(index_of) != n_items:
        raise BundleLoadError("items.jsonl has duplicate item ids")
    return _assemble(item_ids, titles, genres, np.asarray(pops, dtype=np.int64), index_of)


def _assemble(
    item_ids: list[str],
    titles: list[str],
    genres: list[tuple[str, ...]],
    popularity: np.ndarray,
    index_of: dict[str, int],
) -> Catalog:
    masks: dict[str, np.ndarray] = {}
    for i, item_genres in enumerate(genres):
        for genre in item_genres:
            mask = masks.setdefault(genre, np.zeros(len(item_ids), dtype=bool))
            mask[i] = True
    names = {genre.lower(): genre for genre in masks}
    ids = np.arange(1, len(item_ids), dtype=np.int64)
    order = ids[np.lexsort((ids, -popularity[1:]))]
    prefixes = [
        b'{"item_id":'
        + json.dumps(item_id).encode()
        + b',"title":'
        + json.dumps(title).encode()
        + b',"genres":'
        + json.dumps(list(g), separators=(",", ":")).encode()
        + b',"score":'
        for item_id, title, g in zip(item_ids, titles, genres, strict=True)
    ]
    return Catalog(item_ids, titles, genres, popularity, index_of, masks, names, order, prefixes)
