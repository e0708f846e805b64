"""What the load test asks for: Zipf-distributed known users (from the served bundle's
histories), a share of cold-start users, and the facts needed to validate each answer.

Configured from the environment (the runner sets these for the locust process):
CINESYNC_STORE_DIR and CINESYNC_MODEL_NAME (the service's own settings) locate the bundle;
LOADTEST_K, LOADTEST_ZIPF_S, LOADTEST_SEED and LOADTEST_MIX shape the traffic.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from model_store.store import ModelStore

ACTIONS = ("recommend", "cold", "event", "explain")
DEFAULT_MIX = "recommend=0.75,cold=0.10,event=0.05,explain=0.10"


def parse_mix(spec: str) -> dict[str, float]:
    """'recommend=0.75,cold=0.1,...' -> normalised weights over ACTIONS."""
    weights = dict.fromkeys(ACTIONS, 0.0)
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, sep, value = part.partition("=")
        if not sep or name not in weights:
            raise ValueError(f"bad mix entry {part!r}; expected one of {ACTIONS} as name=weight")
        weights[name] = float(value)
    total = sum(weights.values())
    if total <= 0 or any(w < 0 for w in weights.values()):
        raise ValueError(f"mix weights must be >= 0 with a positive sum: {spec!r}")
    return {name: w / total for name, w in weights.items()}


@dataclass
class Workload:
    """Known users with their histories (external ids) and a sampler over them."""

    version: int
    item_ids: list[str]
    users: list[str]
    histories: dict[str, frozenset[str]]
    k: int = 10
    zipf_s: float = 1.1
    mix: dict[str, float] = field(default_factory=lambda: parse_mix(DEFAULT_MIX))
    seed: int = 0
    # events this process sent: `attempted` before the POST, `confirmed` after its 202
    attempted: dict[str, set[str]] = field(default_factory=dict)
    confirmed: dict[str, set[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        order = list(self.users)
        random.Random(self.seed).shuffle(order)  # popularity rank independent of id order
        self._ranked = order
        weights = [1.0 / (rank**self.zipf_s) for rank in range(1, len(order) + 1)]
        self._cum = list(itertools.accumulate(weights))
        self._actions = list(self.mix)
        self._action_cum = list(itertools.accumulate(self.mix[a] for a in self._actions))

    def known_user(self, rng: random.Random) -> str:
        return rng.choices(self._ranked, cum_weights=self._cum, k=1)[0]

    @staticmethod
    def cold_user() -> str:
        return f"cold-{uuid.uuid4().hex[:16]}"

    def action(self, rng: random.Random) -> str:
        return rng.choices(self._actions, cum_weights=self._action_cum, k=1)[0]

    def seen(self, user: str) -> frozenset[str]:
        """Items the service must not return for `user` (bundle history + confirmed events)."""
        return self.histories.get(user, frozenset()) | self.confirmed.get(user, set())

    def expected_count(self, user: str) -> int:
        """How many items a full answer holds: k, unless too few unseen items are left."""
        unseen_at_least = len(self.item_ids) - len(
            self.histories.get(user, frozenset()) | self.attempted.get(user, set())
        )
        return min(self.k, max(unseen_at_least, 0))


def load_workload(store_dir: Path, name: str, version: int) -> Workload:
    """Read the served version's histories and item table through the model store."""
    bundle = ModelStore(store_dir).verify(name, version)
    with bundle.path("items.jsonl").open(encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    by_index = {int(row["index"]): str(row["item_id"]) for row in rows}
    with np.load(bundle.path("histories.npz"), allow_pickle=False) as npz:
        user_ids = [str(u) for u in npz["user_ids"]]
        offsets = npz["offsets"]
        items = npz["items"]
    histories = {
        user: frozenset(by_index[int(i)] for i in items[offsets[row] : offsets[row + 1]])
        for row, user in enumerate(user_ids)
    }
    return Workload(
        version=version,
        item_ids=[by_index[i] for i in sorted(by_index)],
        users=[u for u in user_ids if histories[u]],
        histories=histories,
        k=int(os.environ.get("LOADTEST_K", "10")),
        zipf_s=float(os.environ.get("LOADTEST_ZIPF_S", "1.1")),
        mix=parse_mix(os.environ.get("LOADTEST_MIX", DEFAULT_MIX)),
        seed=int(os.environ.get("LOADTEST_SEED", "0")),
    )


def store_location() -> tuple[Path, str]:
    """The store root and model name, from the same variables the service reads."""
    return (
        Path(os.environ.get("CINESYNC_STORE_DIR", "model_store/store")),
        os.environ.get("CINESYNC_MODEL_NAME", "cinesync"),
    )
