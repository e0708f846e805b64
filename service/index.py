"""FAISS inner-product search over the real items (rows 1..n of the embedding matrix; row 0 is
padding and never returned). Exact Flat for small catalogues, HNSW on CPU for large ones, IVF on
request, a GPU index only when FAISS has GPU support (else a logged CPU fallback). Every
approximate index is measured against exact search (`recall_at_10`)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Literal

import faiss
import numpy as np

from service.errors import BundleLoadError
from service.settings import IndexSettings

log = logging.getLogger(__name__)

IndexKind = Literal["auto", "flat", "hnsw", "ivf", "gpu"]
MIN_POINTS_PER_CENTROID = 39  # below this FAISS k-means complains; nlist is clipped to fit
# An exact scan scores only the allowed rows below this share of the catalogue (gathering a row
# costs several times a row of the full product), else every row, masking the others.
GATHER_SHARE = 0.1
# GPU FAISS selects at most this many results per search (GPU_MAX_SELECTION_K; more raises)
GPU_MAX_K = 2048
# A filter keeping at least this share of the items runs inside the index (benchmarks/index.py:
# recall@10 0.99 with a user's seen items excluded, 0.7-0.8 with half the catalogue left).
INDEX_TRUSTED_SHARE = 0.9


def gpu_available() -> bool:
    """True when this FAISS build has GPU support and sees a device."""
    return hasattr(faiss, "StandardGpuResources") and int(faiss.get_num_gpus()) > 0


@dataclass
class ItemIndex:
    """A built index; ids it returns are internal item ids (1..n_items), -1 = no result."""

    index: Any
    embeddings: np.ndarray  # float32 [n_items + 1, D], row 0 = padding
    kind: str  # what was built: flat | hnsw | ivf | gpu-flat | gpu-ivf
    exact: bool
    fallback_reason: str | None = None
    _gpu_lock: threading.Lock | None = None
    _keepalive: tuple[Any, ...] = ()  # objects FAISS needs alive (GPU resources)
    scan_max_items: int = 0  # narrow filters leaving at most this many items: an exact scan
    max_k: int | None = None  # the most results one FAISS search may ask for (GPU: 2048)

    @property
    def n_items(self) -> int:
        return int(self.embeddings.shape[0]) - 1

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    @property
    def filters(self) -> bool:
        """True when searches skip disallowed items inside FAISS (a bitmap IDSelector): Flat,
        HNSW and IVF on the CPU. GPU indexes search unfiltered and drop disallowed results
        afterwards, so their callers over-fetch."""
        return self._gpu_lock is None

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by inner product: (scores float32 [B, k'], ids int64 [B, k']), k' = min(k, n).

        `allowed` (bool [n + 1] over internal ids): only those items are returned. An
        approximate index answers a narrow filter (`_scans`) with an exact scan of the allowed
        items (graph and list searches lose most of a narrow filter's best items:
        `benchmarks/results/index.md`); otherwise the filter runs inside FAISS where the index
        `filters`, else by dropping the others from the top k. A k over what the index may
        select in one search (`max_k`, GPU FAISS) is an exact scan too. Either way a result
        may hold fewer than k allowed items: the rest are ids of -1."""
        k = max(1, min(int(k), self.n_items))
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if allowed is not None and not self.exact and self._scans(allowed):
            return exact_topk(self.embeddings, q, k, allowed)
        if self.max_k is not None and k > self.max_k:  # GPU FAISS refuses it: scan exactly
            return exact_topk(self.embeddings, q, k, allowed)
        if allowed is not None and self.filters:
            bitmap = np.packbits(allowed[1:], bitorder="little")  # row r = internal id r + 1
            selector = faiss.IDSelectorBitmap(self.n_items, faiss.swig_ptr(bitmap))
            scores, rows = self.index.search(q, k, params=self._params(selector))
        elif self._gpu_lock is not None:  # GPU searches are kept to one thread at a time
            with self._gpu_lock:
                scores, rows = self.index.search(q, k)
        else:
            scores, rows = self.index.search(q, k)
        ids = np.where(rows >= 0, rows + 1, -1).astype(np.int64)
        if allowed is not None and not self.filters:
            ids[~allowed[np.maximum(ids, 0)]] = -1  # row 0 is never allowed: -1 stays -1
        return scores, ids

    def _scans(self, allowed: np.ndarray) -> bool:
        """True when a filter is answered by an exact scan: it leaves at most `scan_max_items`
        items and removes more than a tenth of the catalogue (excluding a user's seen items
        alone keeps the index's own recall: it is the load check's)."""
        count = int(np.count_nonzero(allowed[1:]))
        return count <= self.scan_max_items and count < INDEX_TRUSTED_SHARE * self.n_items

    def _params(self, selector: Any) -> Any:
        """Search parameters carrying `selector` and this index's own search breadth (FAISS
        parameter objects otherwise reset efSearch / nprobe to their defaults)."""
        lib: Any = faiss  # the SWIG classes take keyword arguments its stubs do not list
        if self.kind == "hnsw":
            return lib.SearchParametersHNSW(sel=selector, efSearch=self.index.hnsw.efSearch)
        if self.kind == "ivf":
            return lib.SearchParametersIVF(sel=selector, nprobe=self.index.nprobe)
        return lib.SearchParameters(sel=selector)

    def exact_topk(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k with numpy (the oracle and the last-resort refill)."""
        return exact_topk(self.embeddings, queries, k)


def exact_topk(
    embeddings: np.ndarray, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k over rows 1..n (optionally only where `allowed[row]`):
    (scores float32 [B, k'], ids int64 [B, k']), k' = min(k, n), ids of -1 past the allowed."""
    q = np.asarray(queries, dtype=np.float32)
    n = int(embeddings.shape[0]) - 1
    k = max(1, min(int(k), n))
    rows: np.ndarray | None = None
    if allowed is not None and np.count_nonzero(allowed[1:]) < GATHER_SHARE * n:
        rows = np.flatnonzero(allowed[1:]) + 1  # few allowed rows: score only those
        scores = q @ embeddings[rows].T
        if len(rows) < k:  # fewer allowed rows than k: pad with nothing-found columns
            pad = k - len(rows)
            scores = np.concatenate([scores, np.full((len(q), pad), -np.inf, np.float32)], 1)
            rows = np.concatenate([rows, np.zeros(pad, dtype=np.int64)])
    else:
        scores = q @ embeddings.T  # (B, n + 1)
        if allowed is not None:  # np.where: a third of the time of a masked assignment
            scores = np.where(allowed, scores, np.float32(-np.inf))
        scores[:, 0] = -np.inf
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    cols = np.take_along_axis(part, order, axis=1)
    ids = (cols if rows is None else rows[cols]).astype(np.int64)
    top = np.take_along_axis(part_scores, order, axis=1)
    ids[~np.isfinite(top)] = -1
    return top.astype(np.float32), ids


def _resolve(kind: str, n_items: int, params: IndexSettings) -> tuple[str, str | None]:
    if kind == "gpu" and not gpu_available():
        reason = "index.kind=gpu but this FAISS build has no GPU support or sees no GPU"
        log.warning("%s; falling back to a CPU index", reason)
        kind = "auto"
        fallback: str | None = reason
    else:
        fallback = None
    if kind == "auto":
        kind = "flat" if n_items <= params.flat_max_items else "hnsw"
    return kind, fallback


def build_index(embeddings: np.ndarray, kind: str, params: IndexSettings) -> ItemIndex:
    """Build the index of `kind` (auto | flat | hnsw | ivf | gpu) over rows 1..n."""
    if embeddings.ndim != 2 or embeddings.shape[0] < 2:
        raise BundleLoadError(f"cannot index embeddings of shape {list(embeddings.shape)}")
    emb = np.ascontiguousarray(embeddings, dtype=np.float32)
    items = emb[1:]
    n, d = items.shape
    resolved, fallback = _resolve(kind, n, params)
    gpu_lock: threading.Lock | None = None
    keepalive: tuple[Any, ...] = ()
    index: Any
    if resolved == "flat":
        index = faiss.IndexFlatIP(d)
    elif resolved == "hnsw":
        index = faiss.IndexHNSWFlat(d, params.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = params.ef_construction
        index.hnsw.efSearch = params.ef_search
    elif resolved == "ivf":
        index = _ivf(items, params)
    elif resolved == "gpu":
        index, resolved, keepalive = _gpu(items, n, params)
        gpu_lock = threading.Lock()
    else:
        raise BundleLoadError(f"unknown index kind {resolved!r}")
    if resolved != "ivf":  # IVF vectors are added by _ivf after training
        index.add(items)
    exact = resolved in ("flat", "gpu-flat")
    max_k = GPU_MAX_K if gpu_lock is not None else None
    return ItemIndex(
        index, emb, resolved, exact, fallback, gpu_lock, keepalive, params.filter_scan_max_items,
        max_k,
    )  # fmt: skip


def _ivf(items: np.ndarray, params: IndexSettings) -> Any:
    n, d = items.shape
    nlist = max(1, min(params.nlist, n // MIN_POINTS_PER_CENTROID))
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    index.train(items)
    index.add(items)
    index.nprobe = min(params.nprobe, nlist)
    return index


def _gpu(items: np.ndarray, n: int, params: IndexSettings) -> tuple[Any, str, tuple[Any, ...]]:
    res = faiss.StandardGpuResources()  # pragma: no cover (needs a CUDA FAISS build)
    d = items.shape[1]
    if n <= params.flat_max_items:
        return faiss.GpuIndexFlatIP(res, d), "gpu-flat", (res,)
    nlist = max(1, min(params.nlist, n // MIN_POINTS_PER_CENTROID))
    index = faiss.GpuIndexIVFFlat(res, d, nlist, faiss.METRIC_INNER_PRODUCT)  # type: ignore[attr-defined]
    index.train(items)
    index.nprobe = min(params.nprobe, nlist)
    return index, "gpu-ivf", (res,)


def recall_at_10(index: ItemIndex, queries: np.ndarray) -> float:
    """Mean overlap of the index's top-10 with the exact top-10 over `queries` [B, D]."""
    if len(queries) == 0:
        return 1.0
    k = min(10, index.n_items)
    _, approx = index.search(queries, k)
    _, exact = exact_topk(index.embeddings, queries, k)
    hits = sum(
        len(set(a[a > 0].tolist()) & set(e[e > 0].tolist()))
        for a, e in zip(approx, exact, strict=True)
    )
    return hits / float(exact.shape[0] * k)


def set_threads(n: int) -> None:
    """FAISS (OpenMP) threads, so native threads don't oversubscribe the cores."""
    faiss.omp_set_num_threads(int(n))
