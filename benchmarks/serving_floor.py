"""Floor scenarios for the serving benchmark (`python -m benchmarks.serving --floor`): the real
service app with part of a miss's work replaced by a constant, to measure how much of the miss
latency is scoring and how much is the rest of the request path (framework, two Redis reads,
rendering, L1 fill and the L2 write behind). Benchmark-only: nothing here is used by the service.

- `constant_encoder`: a batch-1 encoder call returns the first batch-1 answer it gave (the index
  search, filtering and everything else stay real);
- `no_scoring`: `rank` returns the first ranking it computed (top 20), cut to the request's k,
  so a miss does no encoder call, no search and no numpy scoring at all.
Both still answer `strategy: sequential` with a fresh key per request, so the miss path is taken.
"""

from __future__ import annotations

from typing import Any

import numpy as np

MEMO_K = 20  # the benchmark's misses ask for k in 1..20


def constant_encoder() -> Any:
    from service import encoder as enc
    from service.main import create_app

    original = enc.Encoder.encode
    memo: dict[int, enc.EncoderOutput] = {}

    def encode(self: enc.Encoder, histories: list[np.ndarray]) -> enc.EncoderOutput:
        if len(histories) != 1:  # warm-up batches stay real
            return original(self, histories)
        if id(self) not in memo:
            memo[id(self)] = enc.EncoderOutput(original(self, histories).query, None)
        return memo[id(self)]

    enc.Encoder.encode = encode  # type: ignore[method-assign]
    return create_app()


def no_scoring() -> Any:
    from service import recommender as rec
    from service.main import create_app
    from service.ranking import Query, Ranked

    original = rec.rank
    memo: dict[int, Ranked] = {}

    def rank(bundle: Any, history: np.ndarray, query: Query, n_full: int, n_content: int) -> Ranked:
        key = id(bundle)
        if key not in memo:
            wide = Query(MEMO_K, query.exclude_seen, query.genres, query.features)
            memo[key] = original(bundle, history, wide, n_full, n_content)
        r = memo[key]
        return Ranked(r.strategy, r.ids[: query.k], r.scores[: query.k], 0.0, 0.0)

    rec.rank = rank  # type: ignore[assignment]
    return create_app()
