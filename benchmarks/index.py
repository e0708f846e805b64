"""Index benchmark: exact Flat vs HNSW vs IVF, built and searched through the service's own
`ItemIndex`, over seeded synthetic catalogues of several sizes, each result checked against
exact search (the oracle) under the filters the service applies.

    python -m benchmarks.index [--sizes 10000,20000,50000,100000,200000] [--queries 300]

What it measures, per catalogue size and index kind:
- build seconds with the service's FAISS thread count (`faiss_threads`, default 1: a bundle load
  builds its indexes so), and the serialised index size;
- `recall@10 (load check)`: what `/admin/models` shows (`service.index.recall_at_10`, unfiltered);
- per filter, batch-1 latency (p50 / p99) and recall@10 of the search path `service.ranking.rank`
  takes for a sequential user: a filtered FAISS search for k, the fetch grown by `FETCH_GROWTH`
  while fewer than k allowed items come back, an exact scan of the allowed items when even the
  whole catalogue's fetch came back short, then the candidates scored exactly and cut to k.
  Recall is against the exact top 10 of the allowed items (`service.index.exact_topk`).

Filters: `none`; `seen` (the user's 50 history items excluded: the default `exclude_seen`);
`genre 25%` and `genre 2%` (a `genres=` filter on a wide and a narrow genre, seen excluded too).

The catalogue is synthetic, not a trained model's table (no model trains at 200,000 items on
this CPU in a benchmark's time): 18 genres with Zipf-like shares, each item near the mean of its
genres' centroids with Gaussian noise and a lognormal norm (trained tables' norms track
popularity); a query is the mean of a user's 50 history items (70% from a favourite genre) plus
noise, as a sequence encoder's output lands near its history. Queries are timed interleaved
across the index kinds, so a noisy neighbour slows all of them alike.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from benchmarks.machine import cpu_name
from service.index import ItemIndex, build_index, exact_topk, recall_at_10, set_threads
from service.ranking import grow_candidates, index_candidates
from service.settings import IndexSettings

RESULTS = Path(__file__).resolve().parent / "results"
N_GENRES = 18
HISTORY = 50
K = 10
KINDS = ("flat", "hnsw", "ivf")
# (label, kind, scan): scan False = every filter runs inside FAISS (the service before
# `filter_scan_max_items`), True = the service's default threshold
VARIANTS = (
    ("flat", "flat", True),
    ("hnsw, filter in FAISS", "hnsw", False),
    ("hnsw", "hnsw", True),
    ("ivf, filter in FAISS", "ivf", False),
    ("ivf", "ivf", True),
)
FILTERS = ("none", "seen", "genres ~50%", "genre ~20%", "genre ~2%")
WARMUP = 20


@dataclass
class Catalogue:
    """Item vectors (row 0 = padding), genre flags, and the users' queries and histories."""

    embeddings: np.ndarray  # float32 [n + 1, d]
    genres: np.ndarray  # bool [n + 1, N_GENRES]; row 0 all False
    queries: np.ndarray  # float32 [Q, d]
    histories: np.ndarray  # int64 [Q, HISTORY], internal ids 1..n

    @property
    def n_items(self) -> int:
        return int(self.embeddings.shape[0]) - 1


def genre_shares() -> np.ndarray:
    """Primary-genre shares, Zipf-like (the widest about a quarter, the narrowest under 2%)."""
    raw = 1.0 / np.arange(1, N_GENRES + 1) ** 0.9
    return np.asarray(raw / raw.sum())


def synthetic_catalogue(n: int, d: int, queries: int, seed: int) -> Catalogue:
    rng = np.random.default_rng(seed)
    shares = genre_shares()
    centroids = rng.standard_normal((N_GENRES, d)) / np.sqrt(d)
    primary = rng.choice(N_GENRES, size=n, p=shares)
    second = rng.choice(N_GENRES, size=n, p=shares)
    has_second = rng.random(n) < 0.5
    flags = np.zeros((n + 1, N_GENRES), dtype=bool)
    flags[np.arange(1, n + 1), primary] = True
    flags[np.arange(1, n + 1)[has_second], second[has_second]] = True
    centre = (flags[1:] @ centroids) / flags[1:].sum(axis=1, keepdims=True)
    noise = rng.standard_normal((n, d)) * (0.8 / np.sqrt(d))
    norms = np.exp(0.3 * rng.standard_normal((n, 1)))
    emb = np.zeros((n + 1, d), dtype=np.float32)
    emb[1:] = (centre + noise) * norms
    by_genre = [np.flatnonzero(flags[:, g]) for g in range(N_GENRES)]
    favourite = rng.choice(N_GENRES, size=queries, p=shares)
    hist = np.empty((queries, HISTORY), dtype=np.int64)
    for u, g in enumerate(favourite):
        n_fav = int(0.7 * HISTORY)
        fav = rng.choice(by_genre[g], size=min(n_fav, len(by_genre[g])), replace=False)
        rest = rng.permutation(np.setdiff1d(np.arange(1, n + 1), fav))[: HISTORY - len(fav)]
        hist[u] = np.concatenate([fav, rest])  # distinct items
    q = emb[hist].mean(axis=1) + rng.standard_normal((queries, d)) * (0.5 / np.sqrt(d))
    return Catalogue(emb, flags, q.astype(np.float32), hist)


def genre_for_share(flags: np.ndarray, target: float) -> int:
    """The genre whose share of the items is closest to `target`."""
    shares = flags[1:].mean(axis=0)
    return int(np.argmin(np.abs(shares - target)))


def genre_mask(cat: Catalogue, name: str) -> np.ndarray:
    """Items of the filter's genres (`genres=` keeps an item with any of them)."""
    if name == "genres ~50%":  # the widest genres, added until half the items are in
        mask = np.zeros(cat.n_items + 1, dtype=bool)
        for g in np.argsort(-cat.genres[1:].mean(axis=0)):
            mask |= cat.genres[:, g]
            if mask[1:].mean() >= 0.5:
                break
        return mask
    share = 0.2 if name == "genre ~20%" else 0.02
    return cat.genres[:, genre_for_share(cat.genres, share)].copy()


def allowed_mask(
    cat: Catalogue, name: str, user: int, genres: np.ndarray | None = None
) -> np.ndarray | None:
    """bool [n + 1] of what the user may be shown under filter `name` (None = no filter);
    `genres`: the filter's `genre_mask`, when the caller has it already."""
    if name == "none":
        return None
    if name == "seen":
        allowed = np.ones(cat.n_items + 1, dtype=bool)
    else:
        allowed = genre_mask(cat, name) if genres is None else genres.copy()
    allowed[0] = False
    allowed[cat.histories[user]] = False
    return allowed


def search_like_rank(
    index: ItemIndex, query: np.ndarray, k: int, allowed: np.ndarray | None
) -> tuple[np.ndarray, bool]:
    """The top-k ids `service.ranking.rank` returns for a sequential user (its candidate loop on
    one index, every CPU index filtering inside FAISS), and whether it ended in an exact scan."""

    def candidates(fetch: int) -> tuple[np.ndarray, float]:
        return index_candidates(index, query, fetch, allowed)[0], -np.inf  # one list: no bound

    def score(ids: np.ndarray) -> np.ndarray:
        return np.asarray(index.embeddings[ids] @ query)

    found = grow_candidates(candidates, score, k, index.n_items, k)
    if found is None:
        return exact_topk(index.embeddings, query[None, :], k, allowed)[1][0], True
    return found[0], False


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure_size(
    n: int, d: int, queries: int, seed: int, settings: IndexSettings, build_threads: int
) -> dict[str, Any]:
    cat = synthetic_catalogue(n, d, queries, seed)
    built: dict[str, ItemIndex] = {}
    indexes: dict[str, ItemIndex] = {}
    rows: dict[str, dict[str, Any]] = {}
    for label, kind, scan in VARIANTS:
        if kind not in built:
            set_threads(build_threads)
            started = time.perf_counter()
            built[kind] = build_index(cat.embeddings, kind, settings)
            build_s = time.perf_counter() - started
            set_threads(1)
            index = built[kind]
            info = {
                "built": index.kind,
                "build_seconds": build_s,
                "index_mb": faiss.serialize_index(index.index).nbytes / 1e6,
                "load_check_recall_at_10": recall_at_10(
                    index, cat.queries[: settings.recall_sample]
                ),
            }
        indexes[label] = replace(built[kind], scan_max_items=0) if not scan else built[kind]
        rows[label] = {**info, "scan_max_items": indexes[label].scan_max_items, "filters": {}}
    for name in FILTERS:
        genres = genre_mask(cat, name) if name.startswith("genre") else None
        masks = [allowed_mask(cat, name, u, genres) for u in range(queries)]
        oracle = [
            exact_topk(cat.embeddings, cat.queries[u][None, :], K, masks[u])[1][0]
            for u in range(queries)
        ]
        times: dict[str, list[float]] = {label: [] for label in indexes}
        recalls: dict[str, list[float]] = {label: [] for label in indexes}
        exact_scans = dict.fromkeys(indexes, 0)
        order_rng = np.random.default_rng(seed)
        for u in range(-WARMUP, queries):
            user = u % queries
            variants = list(indexes.items())
            # a fresh order per query: a variant must not always follow the one that has just
            # pulled a whole table through the caches (Flat)
            for i in order_rng.permutation(len(variants)):
                label, index = variants[i]
                started = time.perf_counter()
                ids, scanned = search_like_rank(index, cat.queries[user], K, masks[user])
                elapsed = time.perf_counter() - started
                if u < 0:
                    continue
                times[label].append(elapsed)
                exact_scans[label] += int(scanned)
                truth = set(oracle[user].tolist())
                recalls[label].append(len(truth & set(ids.tolist())) / len(truth))
        shares = [1.0 if m is None else float(m.mean()) for m in masks]
        for label in indexes:
            rows[label]["filters"][name] = {
                "allowed_share": statistics.fmean(shares),
                "p50_ms": statistics.median(times[label]) * 1000,
                "p99_ms": percentile(times[label], 0.99) * 1000,
                "recall_at_10": statistics.fmean(recalls[label]),
                "exact_scans": exact_scans[label],
            }
    return {"n_items": n, "dim": d, "queries": queries, "variants": rows}


def machine(build_threads: int) -> dict[str, Any]:
    return {
        "cpu": cpu_name(),
        "logical_cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "faiss": faiss.__version__,
        "build_threads": build_threads,
        "search_threads": 1,
        "load_average_at_start": list(os.getloadavg()),
    }


def render(result: dict[str, Any]) -> str:
    m, s = result["machine"], result["settings"]
    lines = [
        "# Index benchmark",
        "",
        f"Machine: {m['cpu']}, {m['logical_cpus']} logical CPUs, load average "
        f"{m['load_average_at_start'][0]:.2f} at start ({m['platform']}, Python {m['python']}, "
        f"FAISS {m['faiss']}). Builds with {m['build_threads']} FAISS thread(s) (the service's "
        f"`faiss_threads`), searches with 1.",
        "",
        f"Index settings (the service's defaults): HNSW M {s['hnsw_m']}, efConstruction "
        f"{s['ef_construction']}, efSearch {s['ef_search']}; IVF nlist {s['nlist']}, nprobe "
        f"{s['nprobe']}. Synthetic catalogues, dim {result['dim']}, seed {result['seed']}, "
        f"{result['queries']} queries per size, k = {K}; what is generated and how the search "
        "path mirrors the service: `benchmarks/index.py`'s docstring.",
        "",
        f"Command: `{result['command']}`",
        "",
        "Latency is batch-1, per query, of the whole candidate path (FAISS search with the "
        "filter inside, fetch growth, exact-scan fallback, exact re-scoring); recall@10 is "
        "against the exact top 10 of the allowed items. `scans` = queries that ended in an "
        "exact scan of the allowed items because the index came back short.",
        "",
    ]
    for size in result["sizes"]:
        lines += [
            f"## {size['n_items']:,} items",
            "",
            "| index | build s | MB | load-check recall@10 | filter | allowed | p50 ms | p99 ms "
            "| p99 x flat | recall@10 | scans |",
            "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|",
        ]
        flat = size["variants"]["flat"]["filters"]
        for label, row in size["variants"].items():
            for name, f in row["filters"].items():
                head = (
                    f"{label} | {row['build_seconds']:.1f} | {row['index_mb']:.0f} | "
                    f"{row['load_check_recall_at_10']:.3f}"
                    if name == FILTERS[0]
                    else " | | |"
                )
                lines.append(
                    f"| {head} | {name} | {f['allowed_share']:.1%} | {f['p50_ms']:.3f} | "
                    f"{f['p99_ms']:.3f} | {f['p99_ms'] / flat[name]['p99_ms']:.2f} | "
                    f"{f['recall_at_10']:.3f} | {f['exact_scans']} |"
                )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,20000,50000,100000,200000")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--build-threads", type=int, default=1, help="FAISS threads while building (service: 1)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for index.md/.json")
    parser.add_argument("--name", default="index")
    given = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(given)
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--sizes must be comma-separated integers, got {args.sizes!r}")
    if not sizes or min(sizes) < 1_000:
        parser.error("--sizes: each catalogue needs at least 1,000 items (IVF trains on them)")
    if args.queries < 10 or args.dim < 2 or args.build_threads < 1:
        parser.error("--queries must be at least 10, --dim at least 2, --build-threads at least 1")
    settings = IndexSettings()
    result: dict[str, Any] = {
        "machine": machine(args.build_threads),
        "settings": settings.model_dump(),
        "dim": args.dim,
        "seed": args.seed,
        "queries": args.queries,
        "command": " ".join(["python -m benchmarks.index", *given]),
        "sizes": [],
    }
    for n in sizes:
        print(f"{n:,} items ...", flush=True)
        result["sizes"].append(
            measure_size(n, args.dim, args.queries, args.seed, settings, args.build_threads)
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    text = render(result)
    (args.out / f"{args.name}.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
