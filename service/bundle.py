"""Load one published version into memory: verify every checksum, then ONNX Runtime session
(from bytes) -> item embeddings -> FAISS index -> items -> histories -> content embeddings ->
warm-up on real histories (which also measures the index's recall@10 against exact search).
Blocking: the registry runs it in a worker thread."""

from __future__ import annotations

import io
import logging
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from model_store.errors import StoreError, VersionNotFound
from model_store.manifest import Manifest
from model_store.store import ModelStore
from model_store.verified import VerifiedBundle
from service.catalog import Catalog, read_catalog
from service.encoder import Encoder
from service.errors import BundleLoadError, UnknownVersionError
from service.index import ItemIndex, build_index, recall_at_10
from service.settings import Settings
from service.user_features import FEATURE_QUERIES, USER_FEATURES, FeatureQueries
from service.user_sequences import UserSequences, read_user_sequences

log = logging.getLogger(__name__)

ENCODER_FILES = {"fp32": "encoder.onnx", "int8": "encoder.int8.onnx"}
ITEM_EMBEDDINGS = "item_embeddings.npy"
CONTENT_EMBEDDINGS = "content_embeddings.npy"
ITEMS = "items.jsonl"
HISTORIES = "histories.npz"
WARMUP_SEED = 0


@dataclass
class Bundle:
    """Everything one model version needs to answer requests; immutable once served."""

    name: str
    version: int
    manifest: Manifest
    encoder: Encoder
    item_embeddings: np.ndarray  # float32 [n + 1, D]
    content_embeddings: np.ndarray  # float32 [n + 1, Dc], L2-normalised rows
    index: ItemIndex
    content_index: ItemIndex
    catalog: Catalog
    users: UserSequences
    max_item_norm: float
    index_recall: float
    features: FeatureQueries | None = None  # feature-only queries for users with no history
    load_seconds: float = 0.0
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def n_items(self) -> int:
        return self.catalog.n_items

    @property
    def providers(self) -> list[str]:
        return self.encoder.providers

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version}"


def _check_npy_size(data: bytes, filename: str) -> None:
    """The .npy header's shape and dtype must account for exactly the bytes that follow, so a
    header claiming a huge array is refused before numpy allocates anything."""
    fp = io.BytesIO(data)
    try:
        major, _ = np.lib.format.read_magic(fp)
        read = (
            np.lib.format.read_array_header_1_0
            if major == 1
            else np.lib.format.read_array_header_2_0
        )
        shape, _, dtype = read(fp)
    except (ValueError, EOFError) as exc:
        raise BundleLoadError(f"{filename}: not a plain .npy array ({exc})") from exc
    if dtype.hasobject:
        raise BundleLoadError(f"{filename}: holds pickled Python objects; refused")
    expected = fp.tell() + math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        raise BundleLoadError(
            f"{filename}: header says {dtype} {list(shape)} ({expected} bytes), file has "
            f"{len(data)} bytes"
        )


def _npy(verified: VerifiedBundle, filename: str) -> np.ndarray:
    """A verified .npy file, size-checked before it is read, never unpickled."""
    data = verified.read_bytes(filename)
    _check_npy_size(data, filename)
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise BundleLoadError(f"{filename}: not a plain .npy array ({exc})") from exc
    if not isinstance(array, np.ndarray):
        raise BundleLoadError(f"{filename}: not a plain .npy array")
    return array


def _matrix(verified: VerifiedBundle, filename: str, rows: int, dim: int | None) -> np.ndarray:
    array = _npy(verified, filename)
    if array.dtype != np.float32 or array.ndim != 2:
        raise BundleLoadError(
            f"{filename}: expected a float32 matrix, got {array.dtype} with {array.ndim} dimensions"
        )
    if array.shape[0] != rows or (dim is not None and array.shape[1] != dim):
        want = f"[{rows}, {dim if dim is not None else 'D'}]"
        raise BundleLoadError(f"{filename}: shape {list(array.shape)}, manifest says {want}")
    if not np.isfinite(array).all():
        raise BundleLoadError(f"{filename}: non-finite values")
    return array


def _feature_queries(verified: VerifiedBundle, dim: int) -> FeatureQueries | None:
    """The optional feature-only query table (both files or neither)."""
    present = [f for f in (USER_FEATURES, FEATURE_QUERIES) if f in verified.manifest.files]
    if not present:
        return None
    if len(present) == 1:
        raise BundleLoadError(f"{present[0]} without its companion file")
    table = _npy(verified, FEATURE_QUERIES)
    return FeatureQueries(verified.read_bytes(USER_FEATURES), table, dim)


def _verify(store: ModelStore, name: str, version: int | None) -> VerifiedBundle:
    try:
        if version is None:
            version = store.latest(name)
            if version is None:
                raise BundleLoadError(f"no published version of model {name!r} in {store.root}")
        return store.verify(name, version)
    except VersionNotFound as exc:
        raise UnknownVersionError(str(exc)) from exc
    except StoreError as exc:
        raise BundleLoadError(str(exc)) from exc


def load_bundle(store: ModelStore, name: str, version: int | None, settings: Settings) -> Bundle:
    """Verify and load `name` at `version` (None = LATEST); BundleLoadError says what is wrong."""
    started = time.perf_counter()
    verified = _verify(store, name, version)
    manifest = verified.manifest
    label = f"{name} v{verified.version}"
    if manifest.model.metric != "ip":
        raise BundleLoadError(f"{label}: metric {manifest.model.metric!r} is not served (ip only)")
    n_items, dim = manifest.dataset.items, manifest.model.dim
    try:
        encoder_file = ENCODER_FILES[settings.encoder.precision]
        encoder = Encoder(
            verified.read_bytes(encoder_file),
            manifest.model.max_len,
            settings.encoder,
            f"{label} {encoder_file}",
        )
        item_emb = _matrix(verified, ITEM_EMBEDDINGS, n_items + 1, dim)
        index = build_index(item_emb, settings.index.kind, settings.index)
        catalog = read_catalog(verified.read_bytes(ITEMS), n_items)
        users = read_user_sequences(verified.read_bytes(HISTORIES), n_items)
        content = _matrix(verified, CONTENT_EMBEDDINGS, n_items + 1, None)
        content_index = build_index(content, settings.index.kind, settings.index)
        features = _feature_queries(verified, dim)
    except StoreError as exc:
        raise BundleLoadError(f"{label}: {exc}") from exc
    except BundleLoadError as exc:
        raise BundleLoadError(f"{label}: {exc}") from exc
    bundle = Bundle(
        name=name,
        version=verified.version,
        manifest=manifest,
        encoder=encoder,
        item_embeddings=item_emb,
        content_embeddings=content,
        index=index,
        content_index=content_index,
        catalog=catalog,
        users=users,
        max_item_norm=float(np.linalg.norm(item_emb[1:], axis=1).max(initial=0.0)) or 1.0,
        index_recall=1.0,
        features=features,
    )
    bundle.index_recall = warm_up(
        bundle, settings.encoder.warmup_queries, settings.index.recall_sample
    )
    bundle.load_seconds = time.perf_counter() - started
    log.info(
        "bundle loaded",
        extra={
            "model": name,
            "version": bundle.version,
            "seconds": round(bundle.load_seconds, 3),
            "index": index.kind,
            "recall_at_10": round(bundle.index_recall, 4),
            "providers": encoder.providers,
            "items": n_items,
            "users": len(users),
        },
    )
    return bundle


def warm_up(bundle: Bundle, n_queries: int, recall_sample: int) -> float:
    """Run the encoder and index on real histories; check shapes; return the index recall@10."""
    wanted = n_queries if bundle.index.exact else max(n_queries, recall_sample)
    histories = bundle.users.sample(max(wanted, 1), seed=WARMUP_SEED)
    if not histories:
        histories = [np.asarray([1], dtype=np.int64)]
    queries = []
    for start in range(0, len(histories), 64):
        try:
            out = bundle.encoder.encode(histories[start : start + 64])
        except Exception as exc:  # onnxruntime raises untyped runtime errors
            raise BundleLoadError(
                f"{bundle.label}: the encoder fails on real histories: {exc}"
            ) from exc
        if out.query.shape != (len(histories[start : start + 64]), bundle.index.dim):
            raise BundleLoadError(
                f"{bundle.label}: encoder query has shape "
                f"{list(out.query.shape)}, expected [batch, {bundle.index.dim}]"
            )
        if not np.isfinite(out.query).all():
            raise BundleLoadError(f"{bundle.label}: encoder produces non-finite queries")
        queries.append(out.query)
    matrix = np.concatenate(queries)
    for history, row in zip(
        histories[:n_queries], matrix[:n_queries], strict=True
    ):  # request-shaped calls
        bundle.encoder.encode([history])
        bundle.index.search(row[None, :], 10)
    if bundle.index.exact:
        return 1.0
    return recall_at_10(bundle.index, matrix[:recall_sample])
