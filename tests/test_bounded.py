"""BoundedKeys: the keys waiting for work, oldest first, bounded, with drops counted."""

from __future__ import annotations

import pytest

from service.bounded import BoundedKeys


def test_the_oldest_key_is_dropped_and_counted_past_the_limit() -> None:
    waiting = BoundedKeys(limit=2)
    for key in ("a", "b", "a", "c"):  # "a" again moves it to the newest end
        waiting.add(key)
    assert list(waiting) == ["a", "c"]
    assert waiting.dropped == 1
    assert "b" not in waiting


def test_a_discarded_key_is_not_counted_as_dropped() -> None:
    waiting = BoundedKeys(limit=2)
    waiting.add("a")
    waiting.discard("a")
    waiting.discard("never added")
    assert len(waiting) == 0
    assert waiting.dropped == 0


def test_a_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="limit must be >= 1"):
        BoundedKeys(limit=0)
