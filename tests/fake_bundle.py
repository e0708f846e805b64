"""Small fake bundle folders for store tests (the store never parses ONNX, so dummy bytes do)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

BUNDLE_FILES = (
    "content_embeddings.npy",
    "encoder.int8.onnx",
    "encoder.onnx",
    "histories.npz",
    "item_embeddings.npy",
    "items.jsonl",
)


def bundle_info(ndcg_valid: float = 0.1, ndcg_test: float = 0.09) -> dict[str, Any]:
    return {
        "model": {
            "kind": "sasrec",
            "config": {"layers": 2, "heads": 1},
            "dim": 8,
            "max_len": 20,
            "metric": "ip",
        },
        "dataset": {
            "name": "synthetic",
            "users": 3,
            "items": 5,
            "interactions": 12,
            "split": "loo-time",
        },
        "metrics": {
            "valid": {"ndcg@10": ndcg_valid, "hr@10": 0.2},
            "test": {"ndcg@10": ndcg_test, "hr@10": 0.18},
        },
        "parity": {"onnx_max_abs_diff": 1e-6, "int8_top10_overlap": 0.97},
    }


def make_fake_bundle(
    folder: Path, seed: int = 0, ndcg_valid: float = 0.1, ndcg_test: float = 0.09, **info: Any
) -> Path:
    """Write a fake bundle (contract files + bundle.json; `info` replaces bundle.json sections)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "item_embeddings.npy", rng.standard_normal((6, 8)).astype(np.float32))
    np.save(folder / "content_embeddings.npy", rng.standard_normal((6, 4)).astype(np.float32))
    (folder / "encoder.onnx").write_bytes(b"fake onnx " + rng.bytes(64))
    (folder / "encoder.int8.onnx").write_bytes(b"fake int8 onnx " + rng.bytes(32))
    items = [
        {
            "index": i,
            "item_id": str(100 + i),
            "title": f"Movie {i}",
            "genres": ["Drama"],
            "year": 2000 + i,
            "popularity": 10 - i,
        }
        for i in range(1, 6)
    ]
    (folder / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in items))
    np.savez(
        folder / "histories.npz",
        user_ids=np.array(["u1", "u2", "u3"]),
        offsets=np.array([0, 4, 8, 12], dtype=np.int64),
        items=rng.integers(1, 6, size=12).astype(np.int32),
    )
    (folder / "bundle.json").write_text(json.dumps({**bundle_info(ndcg_valid, ndcg_test), **info}))
    return folder
