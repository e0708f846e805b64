"""Cold-start benchmark: do feature-only queries beat popularity for users the model never saw?

    python -m benchmarks.cold_start [--dataset ml-100k] [--seeds 0 1 2] [--cold-share 0.1]
                                    [--config training/configs/two_tower.toml] [--out DIR]

For each seed, a seeded `--cold-share` of the users is removed from the data entirely. A two-tower
model with user features is trained (validation-selected, as `cinesync train` does) on the rest,
and its feature-only query table is exported as the service reads it. Each held-out user then gets
three top-10 lists from nothing but what a sign-up form would give:
- `features`: the table row of the user's features (what the service serves as `features`);
- `unknown`: row 0, the model's query for a user whose features are all unknown;
- `popular`: the remaining users' most frequent items (the service's `popular`).
Ground truth is the held-out user's own items: `first` = NDCG@10 and HR@10 of the first item they
rated (the cold-start moment), `any` = precision@10 over everything they rated. Writes
benchmarks/results/cold_start.{json,md} with mean ± spread over the seeds and the machine.
`synthetic-taste` is synthetic data with a favourite-genre feature (a feature with signal): the
generator's latent favourite genre of each user, as declared at sign-up, never derived from the
user's items (so not from the held-out items it is scored on).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).with_name("results")
SYNTHETIC_TASTE = "synthetic-taste"
METRICS = ("first_ndcg@10", "first_hr@10", "any_precision@10")


def drop_users(ds: Any, cold: np.ndarray) -> Any:
    """The dataset without the users in `cold` (internal ids); items are kept as they are."""
    import dataclasses

    keep_user = np.ones(ds.n_users, dtype=bool)
    keep_user[cold] = False
    new_id = np.cumsum(keep_user) - 1
    rows = keep_user[ds.users]
    features = ds.user_features
    if features is not None:
        features = features[keep_user].reset_index(drop=True)
    return dataclasses.replace(
        ds,
        user_ids=ds.user_ids[keep_user],
        users=new_id[ds.users[rows]].astype(np.int32),
        items=ds.items[rows],
        timestamps=ds.timestamps[rows],
        ratings=None if ds.ratings is None else ds.ratings[rows],
        user_features=features,
    )


def top10(scores: np.ndarray) -> np.ndarray:
    scores = scores.astype(np.float64)
    scores[0] = -np.inf
    return np.argsort(-scores, kind="stable")[:10]


def score_lists(lists: dict[str, list[np.ndarray]], sequences: list[np.ndarray]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, tops in lists.items():
        ndcg, hr, precision = [], [], []
        for top, seq in zip(tops, sequences, strict=True):
            hit = np.flatnonzero(top == seq[0])
            hr.append(float(len(hit) > 0))
            ndcg.append(1.0 / np.log2(hit[0] + 2) if len(hit) else 0.0)
            precision.append(float(np.isin(top, seq).mean()))
        out[name] = dict(zip(METRICS, map(float, map(np.mean, (ndcg, hr, precision))), strict=True))
    return out


def one_seed(dataset: str, config: Path, seed: int, share: float, scratch: Path) -> dict[str, Any]:
    from training.config import build_model_config, load_config
    from training.data import leave_one_out, load_dataset
    from training.export import export_bundle
    from training.feature_queries import FEATURE_QUERIES, USER_FEATURES, feature_rows
    from training.features import user_feature_specs
    from training.models.two_tower import TwoTower, TwoTowerConfig
    from training.tiny_bundle import with_taste_features
    from training.train import seed_everything, train

    if dataset == SYNTHETIC_TASTE:
        ds = with_taste_features(load_dataset("synthetic:users=2000,items=1000,seed=0"), 0)
    else:
        ds = load_dataset(dataset)
    codes, _ = user_feature_specs(ds)
    if codes.shape[1] == 0:
        raise SystemExit(f"{dataset} has no usable user features")
    rng = np.random.default_rng(seed)
    cold = np.sort(rng.choice(ds.n_users, max(1, int(share * ds.n_users)), replace=False))
    warm = drop_users(ds, cold)
    split = leave_one_out(warm)
    run = load_config(config, TwoTowerConfig)
    run.train.seed = seed
    seed_everything(seed)
    model = TwoTower.from_dataset(build_model_config(TwoTowerConfig, run, n_items=ds.n_items), warm)
    started = time.perf_counter()
    result = train(model, split, run, scratch / f"run-{seed}", log=lambda _: None)
    seconds = time.perf_counter() - started
    best = result.model.eval()
    bundle = export_bundle(best, warm, split, scratch / f"bundle-{seed}", result.metrics,
                           kind="two_tower", n_parity=64)  # fmt: skip
    spec = json.loads((bundle / USER_FEATURES).read_text(encoding="utf-8"))
    table = np.load(bundle / FEATURE_QUERIES, allow_pickle=False)
    items = np.load(bundle / "item_embeddings.npy", allow_pickle=False)
    cards = [int(c["codes"]) for c in spec["columns"]]
    popular = top10(np.bincount(warm.items, minlength=ds.n_items + 1).astype(np.float64))
    unknown = top10(items @ table[0])
    rows = feature_rows(codes[cold], cards)
    lists: dict[str, list[np.ndarray]] = {
        "features": [top10(items @ table[row]) for row in rows.tolist()],
        "unknown": [unknown] * len(cold),
        "popular": [popular] * len(cold),
    }
    sequences = [ds.sequence(user) for user in cold.tolist()]
    return {
        "seed": seed, "cold_users": len(cold), "train_seconds": round(seconds, 1),
        "epochs": result.epochs_run,
        "valid_ndcg@10": result.metrics.get("valid", {}).get("ndcg@10"),
        "columns": [c["name"] for c in spec["columns"]], "codes": cards,
        "scores": score_lists(lists, sequences),
    }  # fmt: skip


def summarise(runs: list[dict[str, Any]]) -> dict[str, dict[str, list[float]]]:
    """{list: {metric: [mean, std]}} over the seeds."""
    out: dict[str, dict[str, list[float]]] = {}
    for name in ("features", "unknown", "popular"):
        out[name] = {}
        for metric in METRICS:
            values = np.asarray([r["scores"][name][metric] for r in runs])
            out[name][metric] = [round(float(values.mean()), 4), round(float(values.std()), 4)]
    return out


def render(result: dict[str, Any]) -> str:
    lines = [
        "# Cold-start benchmark: feature-only queries against popularity",
        "",
        f"Machine: {result['machine']}. Generated by `{result['command']}`.",
        "",
        f"Dataset `{result['dataset']}`; per seed, {result['cold_share']:.0%} of the users are "
        "held out of training entirely; a two-tower with user features "
        f"(`{result['config']}`) is trained on the rest. Each held-out user gets a top-10 from "
        "their features alone. `first` = the first item they rated, `any` = everything they rated.",
        "",
        "| list | first NDCG@10 | first HR@10 | any precision@10 |",
        "|---|---:|---:|---:|",
    ]
    for name, row in result["summary"].items():
        cells = [f"{m:.4f} ± {s:.4f}" for m, s in (row[metric] for metric in METRICS)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Runs:", ""]
    for run in result["runs"]:
        lines.append(
            f"- seed {run['seed']}: {run['cold_users']} cold users, features {run['columns']} "
            f"(codes {run['codes']}), {run['epochs']} epochs in {run['train_seconds']} s, "
            f"valid NDCG@10 {run['valid_ndcg@10']:.4f}"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--config", type=Path, default=Path("training/configs/two_tower.toml"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--cold-share", type=float, default=0.1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default="cold_start")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    if not 0.0 < args.cold_share < 1.0:
        raise SystemExit("--cold-share must be in (0, 1)")
    with tempfile.TemporaryDirectory(prefix="cinesync-cold-") as tmp:
        scratch = Path(tmp)
        share = args.cold_share
        runs = [one_seed(args.dataset, args.config, s, share, scratch) for s in args.seeds]
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {platform.platform()}",
        "command": " ".join(["python -m benchmarks.cold_start", *argv]),
        "dataset": args.dataset, "config": str(args.config), "cold_share": args.cold_share,
        "summary": summarise(runs), "runs": runs,
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / f"{args.name}.md").write_text(render(result), encoding="utf-8")
    print(render(result))


if __name__ == "__main__":
    main()
