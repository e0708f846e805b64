"""A real bundle in seconds: a tiny SASRec trained on the synthetic dataset, exported with every
parity check. Used by the service tests and as the demo's fallback model."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import cast

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from training.data import Dataset, Split, leave_one_out, load_dataset
from training.errors import DataError
from training.evaluate import ScoreFn, evaluate
from training.export import export_bundle
from training.models.sasrec import SASRec, SASRecConfig
from training.parity import left_pad
from training.tasks import train_counts

TINY_MAX_LEN = 50
INTERACTIONS_PER_USER = 20


def _next_item_batches(train: list[np.ndarray], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs (seq[:-1]) and targets (seq[1:]), left-padded to max_len; target 0 = ignored."""
    seqs = [s[-(max_len + 1) :] for s in train if len(s) >= 2]
    inputs = left_pad([s[:-1] for s in seqs], max_len)
    targets = left_pad([s[1:] for s in seqs], max_len)
    return torch.from_numpy(inputs), torch.from_numpy(targets)


def train_tiny(
    model: SASRec, split: Split, epochs: int, seed: int, batch_size: int = 64, lr: float = 3e-3
) -> None:
    """Full-softmax next-item cross-entropy with AdamW; a few seconds on a CPU."""
    inputs, targets = _next_item_batches(split.train, model.config.max_len)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(inputs), generator=generator)
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            hidden = model(inputs[rows])  # (B, L, D)
            logits = hidden @ model.item_embeddings().T  # (B, L, n_items + 1)
            loss = F.cross_entropy(logits.flatten(0, 1), targets[rows].flatten(), ignore_index=0)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
    model.eval()


def score_fn(model: SASRec) -> ScoreFn:
    """An evaluate.ScoreFn over the model's query encoder."""

    def scores(users: np.ndarray, histories: list[np.ndarray]) -> np.ndarray:
        batch = torch.from_numpy(left_pad(histories, model.config.max_len))
        with torch.no_grad():
            query = model.query(batch)
            return (query @ model.item_embeddings().T).numpy().astype(np.float32)

    return scores


def make_tiny_bundle(
    out_dir: Path,
    *,
    seed: int = 0,
    n_users: int = 300,
    n_items: int = 200,
    dim: int = 32,
    epochs: int = 2,
) -> Path:
    """Train a tiny SASRec on `synthetic:users=..,items=..` and export its bundle into `out_dir`
    (the bundle folder itself, ready for ModelStore.publish). Returns `out_dir`."""
    spec = (
        f"synthetic:users={n_users},items={n_items},"
        f"interactions={n_users * INTERACTIONS_PER_USER},seed={seed}"
    )
    dataset = load_dataset(spec)
    split = leave_one_out(dataset)
    torch.manual_seed(seed)
    config = SASRecConfig(
        n_items=dataset.n_items, max_len=TINY_MAX_LEN, dim=dim, n_layers=2, n_heads=2, dropout=0.1
    )
    model = SASRec(config)
    train_tiny(model, split, epochs, seed)
    popularity = train_counts(split)
    metrics = {
        stage: evaluate(score_fn(model), eval_set, dataset, train_popularity=popularity)
        for stage, eval_set in (("valid", split.valid), ("test", split.test))
    }
    return export_bundle(model, dataset, split, Path(out_dir), metrics, kind="sasrec", seed=seed)


def with_taste_features(dataset: Dataset, seed: int = 0) -> Dataset:
    """`dataset` (synthetic, as `load_dataset` names it) plus user features a sign-up form could
    ask: `taste`, the user's declared favourite genre, and a random `age` (noise). Lets tests and
    the cold-start benchmark check that a feature-only query carries signal.

    `taste` is the generator's latent favourite genre (`synthetic.favourite_genres`), drawn before
    any interaction: it never reads the user's items, so a user held out of training is not
    described by the very items they are scored on. (It depends only on the users, items, genres
    and seed that the dataset's name records.)"""
    from training.data.synthetic import SyntheticConfig, favourite_genres

    if not dataset.name.startswith("synthetic:"):
        raise DataError(
            f"with_taste_features needs a synthetic dataset (got {dataset.name!r}): its taste is "
            f"the generator's latent favourite genre"
        )
    cfg = SyntheticConfig.parse(dataset.name)
    if (cfg.users, cfg.items) != (dataset.n_users, dataset.n_items):
        raise DataError(
            f"with_taste_features: {dataset.name!r} has {dataset.n_users} users and "
            f"{dataset.n_items} items, not the ones its name says"
        )
    rng = np.random.default_rng(seed)
    features = pd.DataFrame(
        {"age": rng.integers(15, 70, dataset.n_users), "taste": favourite_genres(cfg)}
    )
    return dataclasses.replace(dataset, user_features=features)


def make_tiny_two_tower_bundle(
    out_dir: Path, *, seed: int = 0, n_users: int = 300, n_items: int = 200, epochs: int = 6
) -> Path:
    """Train a tiny two-tower (with user features, so the bundle holds feature-only queries)
    with the real training loop on synthetic data, and export its bundle into `out_dir`."""
    from training.config import RunConfig, TrainConfig
    from training.models.two_tower import TwoTower, TwoTowerConfig
    from training.train import train

    spec = (
        f"synthetic:users={n_users},items={n_items},"
        f"interactions={n_users * INTERACTIONS_PER_USER},seed={seed}"
    )
    dataset = with_taste_features(load_dataset(spec), seed)
    split = leave_one_out(dataset)
    torch.manual_seed(seed)
    config = TwoTowerConfig(n_items=dataset.n_items, max_len=TINY_MAX_LEN, dim=32, hidden=64)
    model = TwoTower.from_dataset(config, dataset)
    run = RunConfig(train=TrainConfig(epochs=epochs, batch_size=64, lr=3e-3, seed=seed))
    result = train(model, split, run, out_dir.parent / f"{out_dir.name}.run", log=lambda _: None)
    best = cast(TwoTower, result.model).eval()
    return export_bundle(best, dataset, split, Path(out_dir), result.metrics, kind="two_tower")
