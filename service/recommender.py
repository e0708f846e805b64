"""The request path (DESIGN section 4): read the bundle once -> cache key -> L1 -> L2 -> on a
miss, one computation per key (single-flight): bundle history + live events -> strategy ->
encoder and FAISS (on the loop for small catalogues, else in a worker thread) -> filter -> JSON
-> L1 now, L2 written behind the response. (Reading L2 and the live history side by side was
tried: the redis.asyncio client costs ~0.2 ms of CPU per command on a 2-core machine, so the
miss was no faster and every L2 hit paid for an unused history read.) The cached payload is the
response body without `user_id` and `cache`, which are spliced in per response."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio.to_thread
import numpy as np

from service import keys
from service.bundle import Bundle
from service.cache import Tier, TieredCache
from service.errors import NotReadyError, UnknownItemError
from service.explain import Explanation, explain
from service.exposure import OnlineExposure
from service.history import LiveHistory
from service.metrics import ServiceMetrics
from service.ranking import Query, Ranked, rank
from service.registry import ModelRegistry
from service.singleflight import SingleFlight
from service.user_features import parse_features

PAYLOAD_VERSION = 1  # bump when the cached payload's shape changes (it is in the key digest)


@dataclass(frozen=True)
class Served:
    """One /recommend answer: the body bytes plus what the metrics need."""

    body: bytes
    strategy: str
    tier: Tier
    version: int


@dataclass(frozen=True)
class _Computed:
    payload: bytes
    strategy: str


def render_payload(bundle: Bundle, ranked: Ranked) -> bytes:
    """b'{"model_version":V,"strategy":S,"items":[...]}' with pre-rendered item prefixes."""
    prefixes = bundle.catalog.json_prefix
    items = b",".join(
        prefixes[i] + repr(round(float(s), 6)).encode() + b"}"
        for i, s in zip(ranked.ids.tolist(), ranked.scores.tolist(), strict=True)
    )
    head = f'{{"model_version":{bundle.version},"strategy":"{ranked.strategy}","items":['
    return head.encode() + items + b"]}"


def splice(user_id: str, tier: Tier, payload: bytes) -> bytes:
    """The response body: the payload with `user_id` and `cache` added in front."""
    return (
        b'{"user_id":'
        + json.dumps(user_id).encode()
        + b',"cache":"'
        + tier.encode()
        + b'",'
        + payload[1:]
    )


class Recommender:
    """Recommendations and explanations over whatever bundle the registry currently serves."""

    def __init__(
        self,
        registry: ModelRegistry,
        cache: TieredCache,
        history: LiveHistory,
        metrics: ServiceMetrics,
        exposure: OnlineExposure,
        *,
        n_full: int,
        n_content: int,
        inline_max_items: int = 0,
        feature_queries: bool = True,
        announce: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self.registry, self.cache, self.history = registry, cache, history
        self.metrics, self.exposure = metrics, exposure
        self.n_full, self.n_content = n_full, n_content
        self.inline_max_items = inline_max_items
        self.feature_queries = feature_queries  # False: features are parsed, then ignored
        self.announce = announce  # tells the other replicas to drop the user from their L1
        self._flights: SingleFlight[_Computed] = SingleFlight()

    def bundle(self) -> Bundle:
        bundle = self.registry.current  # read once per request
        if bundle is None:
            detail = self.registry.last_error or "the model is still loading"
            raise NotReadyError(f"no model bundle is loaded: {detail}")
        return bundle

    async def user_history(self, bundle: Bundle, user_id: str) -> tuple[np.ndarray, str | None]:
        """Bundle history + live events mapped to this bundle's ids (unknown ids dropped), and
        the generation of the live events read (see ``LiveEvents``). Every live event kept is
        read, not only the encoder's window: all of them are seen items to exclude."""
        known = bundle.users.get(user_id)
        live = await self.history.read(user_id, self.history.cap)
        index_of = bundle.catalog.index_of
        mapped = [index_of[i] for i in live.items if i in index_of]
        if not mapped:
            return known, live.generation
        return np.concatenate([known, np.asarray(mapped, dtype=np.int64)]), live.generation

    async def recommend(
        self,
        user_id: str,
        k: int,
        exclude_seen: bool,
        genres: str | None,
        features: str | None = None,
    ) -> Served:
        bundle = self.bundle()
        codes = self._feature_codes(bundle, features)
        query = Query(k, exclude_seen, bundle.catalog.parse_genres(genres), codes)
        # feature codes join the key only when they can be used: a user the bundle has a history
        # for never gets the features strategy (events only add history), so features given
        # for them would only split one answer over several keys
        used = codes if codes is not None and len(bundle.users.get(user_id)) == 0 else None
        extra = {} if used is None else {"features": list(used)}
        digest = keys.params_digest(
            k=k, exclude_seen=exclude_seen, genres=list(query.genres), v=PAYLOAD_VERSION, **extra
        )
        key = keys.recs_key(bundle.name, bundle.version, user_id, digest)
        cached = await self.cache.l1.get(key)
        if cached is not None:
            return self._served(bundle, user_id, "l1", cached)
        snapshot = self.cache.snapshot()  # before L2 and the history are read (see TieredCache)
        cached, tier = await self.cache.get_l2(key, snapshot)
        if cached is not None:
            return self._served(bundle, user_id, tier, cached)
        late = self.cache.l1.peek(key)  # a flight for this key may have ended while L2 answered
        if late is not None:  # (no await from here to `do`: no flight can end in between)
            return self._served(bundle, user_id, "l1", late)
        # a flight that began before the user's invalidation is not joined; other users'
        # invalidations (every event anywhere, over pub/sub) do not split it
        flight = f"{key}#{self.cache.user_epoch(keys.user_index_key(bundle.name, user_id))}"
        computed = await self._flights.do(
            flight, lambda: self._compute(bundle, user_id, query, key, snapshot)
        )
        self.exposure.record(served_item_ids(computed.payload))
        return Served(
            splice(user_id, "miss", computed.payload), computed.strategy, "miss", bundle.version
        )

    def _feature_codes(self, bundle: Bundle, features: str | None) -> tuple[int, ...] | None:
        """The request's user features as the bundle's codes, or None: none given, a bundle
        without feature-only queries (features are optional hints a model may ignore), or the
        strategy switched off. Malformed text, unknown names and bad values are always
        InvalidRequestError (422), whatever the bundle."""
        given = parse_features(features)
        if not given or bundle.features is None:
            return None
        codes = bundle.features.codes(given)
        return codes if self.feature_queries else None

    def _served(self, bundle: Bundle, user_id: str, tier: Tier, payload: bytes) -> Served:
        self.exposure.record(served_item_ids(payload))
        return Served(splice(user_id, tier, payload), _strategy_of(payload), tier, bundle.version)

    async def _compute(
        self, bundle: Bundle, user_id: str, query: Query, key: str, snapshot: int
    ) -> _Computed:
        history, generation = await self.user_history(bundle, user_id)
        if bundle.n_items <= self.inline_max_items:  # cheaper than a worker-thread hop
            ranked = rank(bundle, history, query, self.n_full, self.n_content)
        else:
            ranked = await anyio.to_thread.run_sync(
                rank, bundle, history, query, self.n_full, self.n_content
            )
        if ranked.encoder_seconds:
            self.metrics.encoder_duration.observe(ranked.encoder_seconds)
        if ranked.search_seconds:
            self.metrics.index_search_duration.observe(ranked.search_seconds)
        payload = render_payload(bundle, ranked)
        await self.cache.set(
            key,
            payload,
            user_id,
            bundle.name,
            snapshot=snapshot,  # this replica's events since: not stored in either tier
            write_behind=True,
            generation=generation,  # any replica's events since: not stored in L2
        )
        return _Computed(payload, ranked.strategy)

    async def explain(
        self, user_id: str, item_id: str, features: str | None = None
    ) -> tuple[Bundle, Explanation]:
        bundle = self.bundle()
        codes = self._feature_codes(bundle, features)
        item = bundle.catalog.index_of.get(item_id)
        if item is None:
            raise UnknownItemError(f"unknown item {item_id[:64]!r} in {bundle.label}")
        history, _ = await self.user_history(bundle, user_id)
        result = await anyio.to_thread.run_sync(
            explain, bundle, history, item, self.n_full, self.n_content, codes
        )
        return bundle, result

    async def record_event(self, user_id: str, item_id: str, ts: float) -> Bundle:
        """Append to the live history, then drop the user's cached lists (read-your-writes)."""
        bundle = self.bundle()
        if item_id not in bundle.catalog.index_of:
            raise UnknownItemError(f"unknown item {item_id[:64]!r} in {bundle.label}")
        await self.history.append(user_id, item_id, ts)
        await self.forget_user(bundle.name, user_id)
        return bundle

    async def forget_user(self, model: str, user_id: str) -> None:
        """Drop the user's cached lists here and in Redis, and tell the other replicas (after
        an event, and after events accepted during a Redis outage reach it late)."""
        await self.cache.invalidate_user(model, user_id)
        if self.announce is not None:
            await self.announce(user_id)


_ITEM_ID = re.compile(rb'"item_id":"((?:[^"\\]|\\.)*)"')


def served_item_ids(payload: bytes) -> list[str]:
    """The (JSON-escaped) item ids of a payload, for the online exposure window."""
    return [raw.decode("utf-8", "replace") for raw in _ITEM_ID.findall(payload)]


def _strategy_of(payload: bytes) -> str:
    """The strategy recorded in a cached payload (for the latency histogram's label)."""
    start = payload.find(b'"strategy":"')
    if start < 0:
        return "none"
    start += len(b'"strategy":"')
    return payload[start : payload.find(b'"', start)].decode("ascii", "replace")
