"""Every Redis key CineSync uses is built here, and only here.

Recommendation keys always carry the model version, so a reload invalidates by key:
``cinesync:{model}:{version}:recs:{uid}:{digest}``. ``uid`` is the user id itself when it is
short and made of safe characters, else ``h-`` + a blake2b hex digest, so arbitrary client ids
(unicode, ``/``, ``:``, NUL, 10,000 characters) can never change the key's shape.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

PREFIX = "cinesync"
_SAFE_UID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_MODEL = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_HASHED = "h-"
_RECS = re.compile(
    r"cinesync:(?P<model>[a-z0-9][a-z0-9_-]{0,63}):(?P<version>[0-9]+):recs:"
    r"(?P<uid>[A-Za-z0-9_.-]{1,64}):(?P<digest>[0-9a-f]+)"
)


@dataclass(frozen=True)
class RecsKey:
    """The parts of a recommendation key."""

    model: str
    version: int
    uid: str
    digest: str


def user_token(user_id: str) -> str:
    """The user's part of a key: the id itself when safe, else ``h-`` + blake2b hex."""
    if _SAFE_UID.fullmatch(user_id) and not user_id.startswith(_HASHED):
        return user_id
    raw = user_id.encode("utf-8", "surrogatepass")
    return _HASHED + hashlib.blake2b(raw, digest_size=16).hexdigest()


def _model(model: str) -> str:
    if not _MODEL.fullmatch(model):
        raise ValueError(f"invalid model name for a cache key: {model!r}")
    return model


def params_digest(**params: object) -> str:
    """A stable 16-hex digest of the request parameters (order of keywords does not matter).

    Sets are sorted; lists and tuples keep their order (normalise them before calling if their
    order does not matter, e.g. a genre filter).
    """
    text = json.dumps(params, sort_keys=True, separators=(",", ":"), default=_jsonable)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def _jsonable(value: object) -> object:
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    raise TypeError(f"cannot digest a parameter of type {type(value).__name__}")


def recs_key(model: str, version: int, user_id: str, params_digest: str) -> str:
    """``cinesync:{model}:{version}:recs:{uid}:{digest}``."""
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ValueError(f"invalid model version for a cache key: {version!r}")
    if not re.fullmatch(r"[0-9a-f]{1,64}", params_digest):
        raise ValueError(f"invalid params digest: {params_digest!r}")
    return f"{PREFIX}:{_model(model)}:{version}:recs:{user_token(user_id)}:{params_digest}"


def parse_recs_key(key: str) -> RecsKey | None:
    """The parts of a key built by :func:`recs_key`, or None for any other string."""
    m = _RECS.fullmatch(key)
    if m is None:
        return None
    return RecsKey(m["model"], int(m["version"]), m["uid"], m["digest"])


def user_index_key(model: str, user_id: str) -> str:
    """The set of a user's cached recommendation keys, across model versions."""
    return _index_key(_model(model), user_token(user_id))


def index_key_for(recs_key: str) -> str | None:
    """The user index key a recommendation key belongs to (None if not a recs key).

    ``index_key_for(recs_key(m, v, u, d)) == user_index_key(m, u)`` for every user id u.
    """
    parts = parse_recs_key(recs_key)
    return None if parts is None else _index_key(parts.model, parts.uid)


def _index_key(model: str, uid: str) -> str:
    return f"{PREFIX}:{model}:userkeys:{uid}"


def events_key(model: str, user_id: str) -> str:
    """The capped list of a user's live events (external item ids, oldest first)."""
    return f"{PREFIX}:{_model(model)}:events:{user_token(user_id)}"


def event_ids_key(model: str, user_id: str) -> str:
    """The ids of the user's latest events Redis took (capped like the events, kept minutes
    after the user's last push): a push that Redis ran after the client gave up on it, and that
    is sent again, is not applied twice."""
    return f"{PREFIX}:{_model(model)}:eventids:{user_token(user_id)}"


def events_generation_key(model: str, user_id: str) -> str:
    """A counter raised with every append to the user's live events: an L2 write computed from
    an older read of the events is refused (the cross-replica read-your-writes guard)."""
    return f"{PREFIX}:{_model(model)}:eventgen:{user_token(user_id)}"


# A generation no counter ever has: an L2 write guarded by it would always be refused, so it is
# not sent. Reads that fell back to the in-process store return it, since they cannot say what
# Redis holds.
UNKNOWN_GENERATION = "unknown"


def invalidation_channel(model: str) -> str:
    """The pub/sub channel on which replicas announce a user's invalidation (L1 of the others)."""
    return f"{PREFIX}:{_model(model)}:invalidate"
