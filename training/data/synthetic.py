"""Seeded synthetic interactions with the structure real logs have, vectorised for 10M rows.

- Zipf item popularity (exponent `zipf`, ranks shuffled over items).
- Genre clusters: each item has a primary genre plus 0-2 others; each user prefers 1-3 genres.
- Order carries signal: a fixed transition graph gives each item one successor (a
  popularity-weighted item of its genre); with probability `follow` a user's next item is the
  successor of the previous one, otherwise a popularity-weighted jump within one of the user's
  genres (5% of jumps go to any genre; more in top-up rounds for users who exhausted theirs).
- Timestamps strictly increase within a user; repeats of an item within a user are dropped.
Spec: "synthetic" or "synthetic:users=2000,items=1000,interactions=60000,genres=18,seed=0".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
import pandas as pd

from training.data.dataset import Dataset
from training.errors import DataError

GENRES = (
    "Action",
    "Adventure",
    "Animation",
    "Children",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
    "IMAX",
    "Biography",
)
T0 = 1_500_000_000  # 2017-07-14, first possible timestamp


@dataclass(frozen=True)
class SyntheticConfig:
    users: int = 2000
    items: int = 1000
    interactions: int = 60_000
    genres: int = 18
    seed: int = 0
    follow: float = 0.6  # probability that the next item is the previous item's successor
    zipf: float = 1.0
    min_length: int = 5

    @classmethod
    def parse(cls, spec: str) -> SyntheticConfig:
        """'synthetic' or 'synthetic:key=value,...' (keys are the field names)."""
        _, _, params = spec.partition(":")
        known = {f.name: f.type for f in fields(cls)}
        values: dict[str, float | int] = {}
        for part in filter(None, (p.strip() for p in params.split(","))):
            key, sep, raw = part.partition("=")
            key = key.strip()
            if not sep or key not in known:
                raise DataError(
                    f"synthetic spec {spec!r}: unknown parameter {part!r} "
                    f"(known: {', '.join(known)})"
                )
            try:
                values[key] = float(raw) if known[key] == "float" else int(raw.replace("_", ""))
            except ValueError as exc:
                raise DataError(f"synthetic spec {spec!r}: {key}={raw!r} is not a number") from exc
        cfg = cls(**values)  # type: ignore[arg-type]
        cfg.check(spec)
        return cfg

    def spec(self) -> str:
        """The canonical spec string (also the dataset name)."""
        return (
            f"synthetic:users={self.users},items={self.items},interactions={self.interactions},"
            f"genres={self.genres},seed={self.seed}"
        )

    def check(self, spec: str) -> None:
        problems = []
        if self.users < 1 or self.items < 6:
            problems.append("needs users >= 1 and items >= 6 (each user gets at most items // 2)")
        if not 1 <= self.genres <= len(GENRES):
            problems.append(f"genres must be in 1..{len(GENRES)}")
        if self.interactions < self.users * 3:
            problems.append("interactions must be at least 3 per user")
        elif self.interactions > self.users * (self.items // 2):
            problems.append(
                f"interactions must be at most users * (items // 2) = "
                f"{self.users * (self.items // 2)} (a user sees at most half the items, no "
                f"repeats); raise users or items, or lower interactions"
            )
        if self.seed < 0:
            problems.append("seed must be >= 0")
        if self.min_length < 3:
            problems.append("min_length must be >= 3 (leave-one-out needs 3 items per user)")
        if not (math.isfinite(self.zipf) and self.zipf >= 0):
            problems.append("zipf must be a finite number >= 0")
        if not 0 <= self.follow <= 1:
            problems.append("follow must be in [0, 1]")
        if problems:
            raise DataError(f"synthetic spec {spec!r}: {'; '.join(problems)}")


def _lengths(cfg: SyntheticConfig, rng: np.random.Generator) -> np.ndarray:
    """Per-user target lengths (log-normal shape) summing to cfg.interactions."""
    floor = min(cfg.min_length, cfg.interactions // cfg.users)
    cap = max(floor, cfg.items // 2)
    w = rng.lognormal(0.0, 0.8, cfg.users)
    extra = cfg.interactions - floor * cfg.users
    lengths = floor + np.floor(w / w.sum() * extra).astype(np.int64)
    short = cfg.interactions - lengths.sum()
    np.add.at(lengths, rng.choice(cfg.users, size=int(short), replace=True), 1)
    capped: np.ndarray = np.minimum(lengths, cap)
    return capped


@dataclass(frozen=True)
class _Catalogue:
    """Item tables: primary genre, successor graph, per-genre popularity for sampling."""

    primary: np.ndarray  # int64 [n] primary genre of each item (0-based item index)
    by_genre: np.ndarray  # int64 [n] item indices grouped by primary genre
    succ: np.ndarray  # int64 [n] successor of each item (the transition graph)
    cum: np.ndarray  # float [n] genre k's segment of by_genre holds k + cumulative popularity
    present: np.ndarray  # genres that own at least one item

    @classmethod
    def build(cls, cfg: SyntheticConfig, rng: np.random.Generator) -> _Catalogue:
        n, g = cfg.items, cfg.genres
        pop = 1.0 / np.arange(1, n + 1) ** cfg.zipf
        pop = pop[rng.permutation(n)]
        primary = rng.integers(0, g, n)
        # within a genre, items form one cycle ordered by noisy descending popularity: following
        # successors walks down a genre's "ladder" from a popular entry point, never repeating
        ladder = -np.log(pop) + rng.normal(0.0, 1.0, n)
        by_genre = np.lexsort((ladder, primary))
        start = np.searchsorted(primary[by_genre], np.arange(g + 1))
        pos = np.arange(n)
        genre_of_pos = primary[by_genre]
        nxt = np.where(pos + 1 < start[genre_of_pos + 1], pos + 1, start[genre_of_pos])
        succ = np.empty(n, dtype=np.int64)
        succ[by_genre] = by_genre[nxt]
        cum = np.empty(n)
        w = pop[by_genre]
        for k in range(g):
            lo, hi = start[k], start[k + 1]
            if hi > lo:
                c = np.cumsum(w[lo:hi])
                cum[lo:hi] = k + c / c[-1]
        return cls(primary, by_genre, succ, cum, np.flatnonzero(np.diff(start) > 0))

    def sample(self, genre: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One popularity-weighted item of each given genre."""
        at = np.searchsorted(self.cum, genre + rng.random(len(genre)))
        return self.by_genre[np.minimum(at, len(self.cum) - 1)]


def _walk(
    cat: _Catalogue,
    cfg: SyntheticConfig,
    rng: np.random.Generator,
    users: np.ndarray,
    steps: np.ndarray,
    prefs: np.ndarray,
    n_prefs: np.ndarray,
    prev: np.ndarray,
    explore: float,
) -> tuple[np.ndarray, np.ndarray]:
    """`steps[j]` more items for `users[j]`, continuing from `prev` (-1: none); `explore` is the
    chance of a step outside the user's genres.
    Returns (user, item) flat arrays grouped by user in `users` order, chronological within."""
    order = np.argsort(-steps, kind="stable")  # longest first: active users form a prefix
    offsets = np.zeros(len(users) + 1, dtype=np.int64)
    np.cumsum(steps, out=offsets[1:])
    out = np.empty(offsets[-1], dtype=np.int64)
    active = np.searchsorted(-steps[order], -np.arange(int(steps.max())), side="left")
    for t in range(len(active)):
        rows = order[: active[t]]
        u = users[rows]
        genre = prefs[u, rng.integers(0, n_prefs[u])]
        wander = rng.random(len(u)) < explore
        genre[wander] = cat.present[rng.integers(0, len(cat.present), int(wander.sum()))]
        item = cat.sample(genre, rng)
        last = prev[u]
        follow = (last >= 0) & (rng.random(len(u)) < cfg.follow)
        item[follow] = cat.succ[last[follow]]
        prev[u] = item
        out[offsets[rows] + t] = item
    return np.repeat(users, steps), out


def _preferences(
    cfg: SyntheticConfig, cat: _Catalogue, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Each user's latent genres: (prefs int64 [users, 3], n_prefs int64 [users]); a user's
    jumps go to one of prefs[u, :n_prefs[u]], picked uniformly."""
    prefs = cat.present[rng.integers(0, len(cat.present), (cfg.users, 3))]
    n_prefs = rng.integers(1, 4, cfg.users)  # each user prefers the first 1-3 of 3 genres
    return prefs, n_prefs


def favourite_genres(cfg: SyntheticConfig) -> np.ndarray:
    """Each user's latent favourite genre (str [users]; user u is internal user u of
    `generate(cfg)`): the genre the generator draws that user's jumps from most often (the most
    frequent of prefs[u, :n_prefs[u]], ties: the first). It is drawn before any interaction, so it
    models what the user would declare at sign-up and says nothing about which items they took.
    Replays `generate`'s random stream up to the preferences; generate's output is unaffected."""
    rng = np.random.default_rng(cfg.seed)
    prefs, n_prefs = _preferences(cfg, _Catalogue.build(cfg, rng), rng)
    active = np.arange(3)[None, :] < n_prefs[:, None]
    same = (prefs[:, :, None] == prefs[:, None, :]) & active[:, None, :]
    weight = np.where(active, same.sum(axis=2), -1)
    favourite = prefs[np.arange(cfg.users), np.argmax(weight, axis=1)]  # argmax: first of ties
    names: np.ndarray = np.asarray(GENRES, dtype=object)[favourite]
    return names


def generate(cfg: SyntheticConfig) -> Dataset:
    rng = np.random.default_rng(cfg.seed)
    cat = _Catalogue.build(cfg, rng)
    prefs, n_prefs = _preferences(cfg, cat, rng)
    target = _lengths(cfg, rng)
    prev = np.full(cfg.users, -1, dtype=np.int64)
    chunks_u: list[np.ndarray] = []
    chunks_i: list[np.ndarray] = []
    deficit = target.copy()
    for round_ in range(8):  # top up users whose walk repeated items until they reach their length
        needy = np.flatnonzero(deficit > 0)
        if len(needy) == 0:
            break
        steps = np.ceil(deficit[needy] * 1.3).astype(np.int64) + 2
        explore = min(1.0, 0.05 * 3**round_)  # users who exhausted their genres look further afield
        u, i = _walk(cat, cfg, rng, needy, steps, prefs, n_prefs, prev, explore)
        chunks_u.append(u)
        chunks_i.append(i)
        is_needy = np.zeros(cfg.users, dtype=bool)
        is_needy[needy] = True
        keys = np.concatenate(
            [
                cu[is_needy[cu]] * cfg.items + ci[is_needy[cu]]
                for cu, ci in zip(chunks_u, chunks_i, strict=True)
            ]
        )
        keys.sort()
        keys = keys[np.r_[True, keys[1:] != keys[:-1]]]
        deficit[needy] = (target - np.bincount(keys // cfg.items, minlength=cfg.users))[needy]

    user_of = np.concatenate(chunks_u)
    seq = np.concatenate(chunks_i)
    by_user = np.argsort(user_of, kind="stable")  # rounds were appended: stable keeps time order
    user_of, seq = user_of[by_user], seq[by_user]
    keys = user_of * cfg.items + seq
    by_key = np.argsort(keys, kind="stable")  # first occurrence of each (user, item) comes first
    sorted_keys = keys[by_key]
    keep = np.zeros(len(seq), dtype=bool)
    keep[by_key[np.r_[True, sorted_keys[1:] != sorted_keys[:-1]]]] = True
    user_of, seq = user_of[keep], seq[keep]
    starts = np.searchsorted(user_of, np.arange(cfg.users))
    within = np.arange(len(seq)) - starts[user_of] < target[user_of]
    user_of, seq = user_of[within], seq[within]

    starts = np.searchsorted(user_of, np.arange(cfg.users))  # every user keeps >= 1 item
    gaps = rng.exponential(3600.0, len(seq)).astype(np.int64) + 1
    gaps[starts] = rng.integers(0, 3 * 365 * 86400, cfg.users)  # each user's first timestamp
    csum = np.cumsum(gaps)
    timestamps = T0 + csum - (csum[starts] - gaps[starts])[user_of]
    return _as_dataset(cfg, rng, user_of, seq, timestamps, cat.primary)


def _as_dataset(
    cfg: SyntheticConfig,
    rng: np.random.Generator,
    user_of: np.ndarray,
    seq: np.ndarray,
    timestamps: np.ndarray,
    primary: np.ndarray,
) -> Dataset:
    n = cfg.items
    extra = rng.integers(0, cfg.genres, (n, 2))
    n_extra = rng.integers(0, 3, n)
    combo = np.column_stack([primary, extra]).astype(np.int64)
    combo[:, 1][n_extra < 1] = combo[:, 0][n_extra < 1]
    combo[:, 2][n_extra < 2] = combo[:, 0][n_extra < 2]
    unique, inverse = np.unique(combo, axis=0, return_inverse=True)
    lists = [list(dict.fromkeys(GENRES[k] for k in row)) for row in unique.tolist()]
    genres: list[list[str]] = [[], *(list(lists[k]) for k in inverse.ravel())]
    item_ids = np.concatenate([[""], np.arange(1, n + 1).astype(str)])
    meta = pd.DataFrame(
        {
            "item_id": item_ids,
            "title": np.concatenate([[""], np.char.add("Synthetic Movie ", item_ids[1:])]).astype(
                object
            ),
            "genres": genres,
            "year": pd.array(
                np.concatenate([[pd.NA], 1950 + rng.integers(0, 75, n)]), dtype="Int64"
            ),
            "tags": [""] * (n + 1),
        }
    )
    return Dataset(
        name=cfg.spec(),
        user_ids=np.arange(1, cfg.users + 1).astype(str),
        item_ids=item_ids.astype(str),
        users=user_of.astype(np.int32),
        items=(seq + 1).astype(np.int32),
        timestamps=timestamps.astype(np.int64),
        ratings=None,
        item_meta=meta,
    )
