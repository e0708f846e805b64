"""Internal ids, ordering and padding of the one Dataset object."""

from __future__ import annotations

import numpy as np
import pandas as pd

from training.data.build import build_dataset, sorted_ids


def _frame(rows: list[tuple[str, str, int]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])


def test_ties_in_time_are_broken_by_numeric_item_id() -> None:
    ds = build_dataset("t", _frame([("1", "10", 5), ("1", "9", 5), ("1", "100", 5), ("1", "2", 9)]))
    assert ds.item_ids[ds.sequence(0)].tolist() == ["9", "10", "100", "2"]


def test_ties_use_string_order_when_ids_are_not_all_numeric() -> None:
    ds = build_dataset("t", _frame([("a", "b10", 5), ("a", "b9", 5), ("a", "10", 5)]))
    assert ds.item_ids[ds.sequence(0)].tolist() == ["10", "b10", "b9"]


def test_ordering_does_not_depend_on_input_row_order() -> None:
    rows = [
        (str(u), str(i), t) for u, i, t in [(3, 5, 1), (1, 7, 2), (1, 6, 2), (2, 5, 0), (3, 1, 1)]
    ]
    a = build_dataset("t", _frame(rows))
    b = build_dataset("t", _frame(rows[::-1]))
    for name in ("users", "items", "timestamps"):
        assert np.array_equal(getattr(a, name), getattr(b, name))


def test_internal_ids_are_contiguous_in_external_order_and_zero_is_padding() -> None:
    ds = build_dataset("t", _frame([("20", "30", 1), ("3", "4", 2), ("100", "30", 3)]))
    assert ds.user_ids.tolist() == ["3", "20", "100"]
    assert ds.item_ids.tolist() == ["", "4", "30"]
    assert ds.items.min() == 1
    assert ds.items.max() == ds.n_items
    assert ds.item_meta.loc[0, "item_id"] == ""
    assert ds.item_meta.loc[0, "genres"] == []
    assert len(ds.item_meta) == ds.n_items + 1
    assert ds.item_popularity().tolist() == [0, 1, 2]
    assert ds.stats()["interactions"] == 3


def test_sorted_ids_orders_numbers_numerically() -> None:
    assert sorted_ids(np.array(["10", "9", "-1", "9"])).tolist() == ["-1", "9", "10"]
