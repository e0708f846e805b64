"""benchmarks.index at a tiny size: every variant and filter is measured against the exact
oracle, and the synthetic catalogue has the filter shares the report names."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks import index as bench


def test_the_synthetic_catalogue_has_wide_and_narrow_genres_and_histories_of_real_items() -> None:
    cat = bench.synthetic_catalogue(20_000, 16, 30, seed=0)
    assert cat.embeddings.shape == (20_001, 16)
    assert not cat.genres[0].any()
    assert (cat.genres[1:].sum(axis=1) >= 1).all()
    shares = {name: bench.genre_mask(cat, name)[1:].mean() for name in bench.FILTERS[2:]}
    assert 0.5 <= shares["genres ~50%"] < 0.75
    assert 0.12 <= shares["genre ~20%"] <= 0.3
    assert 0.01 <= shares["genre ~2%"] <= 0.04
    assert cat.histories.min() >= 1
    assert cat.histories.max() <= 20_000
    assert all(len(set(h.tolist())) == bench.HISTORY for h in cat.histories)
    again = bench.synthetic_catalogue(20_000, 16, 30, seed=0)
    np.testing.assert_array_equal(cat.embeddings, again.embeddings)


def test_the_benchmark_measures_every_variant_and_filter_against_the_oracle(
    tmp_path: Path,
) -> None:
    bench.main(["--sizes", "3000", "--queries", "20", "--dim", "16", "--out", str(tmp_path)])
    result = json.loads((tmp_path / "index.json").read_text())
    (size,) = result["sizes"]
    assert size["n_items"] == 3000
    assert set(size["variants"]) == {label for label, _, _ in bench.VARIANTS}
    for label, kind, scan in bench.VARIANTS:
        row = size["variants"][label]
        assert row["built"] == kind
        assert row["scan_max_items"] == (0 if not scan else 100_000)
        assert set(row["filters"]) == set(bench.FILTERS)
        for name, f in row["filters"].items():
            assert 0 < f["p50_ms"] <= f["p99_ms"]
            assert 0.0 <= f["recall_at_10"] <= 1.0
            if kind == "flat" or (scan and name.startswith("genre")):
                assert f["recall_at_10"] == 1.0, (label, name)  # exact: the oracle's items
    text = (tmp_path / "index.md").read_text()
    assert "## 3,000 items" in text
    assert "Machine: " in text
    assert "python -m benchmarks.index --sizes 3000" in text


@pytest.mark.parametrize(
    "argv", [["--sizes", "big"], ["--sizes", "500"], ["--queries", "3"], ["--build-threads", "0"]]
)
def test_bad_arguments_are_a_usage_error(argv: list[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as stopped:
        bench.main([*argv, "--out", str(tmp_path)])
    assert stopped.value.code == 2
    assert not (tmp_path / "index.json").exists()
