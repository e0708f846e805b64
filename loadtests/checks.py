"""The API contract each load-test response must satisfy (kept free of locust, so it can be
unit-tested without gevent's monkey-patching)."""

from __future__ import annotations

from typing import Any

STRATEGIES = {"sequential", "blend", "content", "features", "popular"}
CACHE_TIERS = {"l1", "l2", "miss"}


class ValidationError(Exception):
    """A response that is well-formed HTTP but breaks the API contract."""


def check_recommendation(
    body: Any, user: str, k: int, seen: frozenset[str], expected: int, cold: bool
) -> list[str]:
    """The contract of GET /recommend for one answer; returns the item ids."""
    if not isinstance(body, dict):
        raise ValidationError("body is not a JSON object")
    if body.get("user_id") != user:
        raise ValidationError(f"user_id {body.get('user_id')!r} != {user!r}")
    if body.get("model_version") in (None, ""):
        raise ValidationError("model_version missing")
    if body.get("strategy") not in STRATEGIES or body.get("cache") not in CACHE_TIERS:
        raise ValidationError(f"bad strategy/cache {body.get('strategy')!r}/{body.get('cache')!r}")
    if cold and body["strategy"] != "popular":
        raise ValidationError(f"cold-start user answered with {body['strategy']!r}")
    items = body.get("items")
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise ValidationError("items is not a list of objects")
    ids = [str(i.get("item_id")) for i in items]
    if len(ids) != expected or len(ids) > k:
        raise ValidationError(f"{len(ids)} items, expected {expected} (k={k})")
    if len(set(ids)) != len(ids):
        raise ValidationError("duplicate items in one list")
    if leaked := seen.intersection(ids):
        raise ValidationError(f"already-seen items returned: {sorted(leaked)[:5]}")
    return ids


def check_explain(body: Any, item: str) -> None:
    """The contract of GET /explain for one answer."""
    if not isinstance(body, dict):
        raise ValidationError("body is not a JSON object")
    explained = body.get("item")
    explained_id = explained.get("item_id") if isinstance(explained, dict) else explained
    if str(explained_id) != item:
        raise ValidationError(f"explained item {explained_id!r} != {item!r}")
    if body.get("strategy") not in STRATEGIES:
        raise ValidationError(f"bad strategy {body.get('strategy')!r}")
    if not isinstance(body.get("because"), list) or not isinstance(body.get("score"), int | float):
        raise ValidationError("because/score missing")
