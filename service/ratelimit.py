"""Per-client rate limiting for event ingestion: who the client is, and a token bucket each.

Client identity is the socket peer, unless the peer is one of the configured trusted proxies
(IP addresses or CIDR networks, `CINESYNC_TRUSTED_PROXIES`): then it is the right-most
X-Forwarded-For entry that is not itself a trusted proxy (entries to its left were written by
the client and prove nothing). An untrusted peer's X-Forwarded-For is ignored, so a client cannot
pick a fresh identity per request. This module is the only place that reads the header (uvicorn's
own proxy-header rewriting is off).
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from cachetools import LRUCache

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_IDENTITY_CHARS = 64
UNKNOWN = "unknown"


def parse_networks(entries: Iterable[str]) -> list[IpNetwork]:
    """'10.0.0.1', '10.0.0.0/8', '::1' -> networks; ValueError names a bad entry."""
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError as exc:
            raise ValueError(f"{entry!r} is not an IP address or a CIDR network") from exc
    return networks


def _normalise(host: str) -> str:
    """A canonical IP text when `host` is an address, else a bounded opaque label."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return "invalid:" + host[:MAX_IDENTITY_CHARS]


class ClientResolver:
    """Who a request comes from (see module docstring)."""

    def __init__(self, trusted_proxies: Sequence[str]) -> None:
        self.networks = parse_networks(trusted_proxies)

    def is_trusted(self, host: str) -> bool:
        if not self.networks:
            return False
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.networks)

    def identify(self, peer: str | None, forwarded_for: Sequence[str]) -> str:
        """The client key for a request from socket `peer` with these X-Forwarded-For values."""
        if peer is None:
            return UNKNOWN
        if not self.is_trusted(peer):
            return _normalise(peer)
        hops = [hop.strip() for value in forwarded_for for hop in value.split(",")]
        hops = [hop for hop in hops if hop]
        for hop in reversed(hops):
            if not self.is_trusted(hop):
                return _normalise(hop)
        return _normalise(hops[0]) if hops else _normalise(peer)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after_s: float  # until the next token, when refused (0 when allowed)


class TokenBuckets:
    """A token bucket per client key: `rate` tokens per second, up to `burst`; at most
    `max_clients` buckets (least recently used dropped: a dropped client starts full)."""

    def __init__(
        self, rate: float, burst: int, max_clients: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0 or burst < 1 or max_clients < 1:
            raise ValueError(f"need rate > 0, burst >= 1, max_clients >= 1: {rate}, {burst}")
        self.rate, self.burst, self._clock = rate, float(burst), clock
        self._buckets: LRUCache[str, tuple[float, float]] = LRUCache(maxsize=max_clients)

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, client: str) -> Decision:
        now = self._clock()
        tokens, last = self._buckets.get(client, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - last) * self.rate)
        if tokens < 1.0:
            self._buckets[client] = (tokens, now)
            return Decision(False, (1.0 - tokens) / self.rate)
        self._buckets[client] = (tokens - 1.0, now)
        return Decision(True, 0.0)


def retry_after_header(seconds: float) -> str:
    """Retry-After is whole seconds: round up, at least 1."""
    return str(max(1, math.ceil(seconds)))


class EventRateLimit:
    """The event endpoint's limiter: resolve the client, take a token from its bucket."""

    def __init__(self, resolver: ClientResolver, buckets: TokenBuckets) -> None:
        self.resolver, self.buckets = resolver, buckets

    def check(self, peer: str | None, forwarded_for: Sequence[str]) -> Decision:
        return self.buckets.take(self.resolver.identify(peer, forwarded_for))
