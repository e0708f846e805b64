"""`cinesync store list|rollback|prune`: readable reports, LATEST marked, bad input -> exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_bundle import make_fake_bundle
from typer.testing import CliRunner

from model_store import ModelStore, VersionNotFound
from model_store.cli_ops import list_store, prune, rollback
from training.cli import app


@pytest.fixture
def root(tmp_path: Path) -> Path:
    store = ModelStore(tmp_path / "store")
    store.publish("cinesync", make_fake_bundle(tmp_path / "a", ndcg_valid=0.1234, ndcg_test=0.2))
    store.publish("cinesync", make_fake_bundle(tmp_path / "b", ndcg_valid=0.3, ndcg_test=0.25))
    store.publish("other", make_fake_bundle(tmp_path / "c", ndcg_valid=0.5, ndcg_test=0.45))
    return store.root


def table(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines()]


def test_list_shows_every_version_with_latest_marked_and_its_metrics(root: Path) -> None:
    rows = table(list_store(root))
    assert rows[0][:3] == ["MODEL", "VERSION", "LATEST"]
    body = {(r[0], r[1]): r for r in rows[1:]}
    assert set(body) == {("cinesync", "1"), ("cinesync", "2"), ("other", "1")}
    assert body[("cinesync", "2")][2] == "*"
    assert "*" not in body[("cinesync", "1")]
    assert body[("cinesync", "1")][-3:] == ["sasrec", "0.1234", "0.2000"]
    assert body[("cinesync", "2")][-2:] == ["0.3000", "0.2500"]


def test_list_of_one_model_and_of_an_empty_store(root: Path, tmp_path: Path) -> None:
    assert {r[0] for r in table(list_store(root, "other"))[1:]} == {"other"}
    (tmp_path / "nothing").mkdir()
    assert list_store(tmp_path / "nothing") == f"no models in {tmp_path / 'nothing'}"
    assert list_store(root, "absent") == "absent: no complete versions"


def test_list_notes_a_latest_that_points_at_no_complete_version(root: Path) -> None:
    (root / "cinesync" / "LATEST").write_text("9\n")
    out = list_store(root, "cinesync")
    assert "LATEST points at 9, which is not a complete version" in out
    assert "*" not in out


def test_rollback_and_prune_report_what_changed(root: Path, tmp_path: Path) -> None:
    assert rollback(root, "cinesync") == "cinesync: LATEST 2 -> 1"
    assert rollback(root, "cinesync", 2) == "cinesync: LATEST 1 -> 2"
    store = ModelStore(root)
    store.publish("cinesync", make_fake_bundle(tmp_path / "d"))
    assert prune(root, "cinesync", 1) == "cinesync: deleted 1, 2; kept 3 (LATEST 3)"
    assert prune(root, "cinesync", 1) == "cinesync: deleted nothing; kept 3 (LATEST 3)"
    with pytest.raises(VersionNotFound):
        rollback(root, "cinesync")


def test_default_model_name_comes_from_the_environment(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CINESYNC_MODEL_NAME", "other")
    with pytest.raises(VersionNotFound, match="older than 1"):
        rollback(root)
    monkeypatch.delenv("CINESYNC_MODEL_NAME")
    assert rollback(root) == "cinesync: LATEST 2 -> 1"


def test_cli_store_commands_print_reports_and_exit_2_on_bad_input(root: Path) -> None:
    runner = CliRunner()
    listed = runner.invoke(app, ["store", "list", "--store", str(root)])
    assert listed.exit_code == 0, listed.output
    assert "cinesync  2        *" in listed.output
    rolled = runner.invoke(app, ["store", "rollback", "--store", str(root), "--name", "cinesync"])
    assert rolled.exit_code == 0, rolled.output
    assert "LATEST 2 -> 1" in rolled.output
    assert ModelStore(root).latest("cinesync") == 1
    for args in (
        ["store", "list", "--name", "../etc"],
        ["store", "rollback", "--name", "cinesync", "--to", "7"],
        ["store", "rollback", "--name", "/abs"],
    ):
        bad = runner.invoke(app, [*args, "--store", str(root)])
        assert bad.exit_code == 2, bad.output
        assert "error:" in bad.output
    assert ModelStore(root).latest("cinesync") == 1
