"""`cinesync demo` helpers: reuse a published model, probe Redis, a valid short training config.
(The full train-then-serve path takes minutes; `make demo` runs it.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import free_port
from service_fixtures import MODEL

from service.settings import Settings
from training.demo import DEMO_CONFIG, ensure_model, example_ids, redis_answers


def test_a_published_model_is_reused_without_training(
    published_store: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import training.train_cli

    def refuse(**_: object) -> None:
        raise AssertionError("the demo trained although the store had a model")

    monkeypatch.setattr(training.train_cli, "run_train", refuse)
    settings = Settings(store_dir=published_store, model_name=MODEL)
    assert ensure_model(settings) == 2
    assert "reusing cinesync version 2" in capsys.readouterr().out
    user_id, item_id = example_ids(settings, 2)
    assert user_id == "1"
    assert item_id.isdigit()


def test_an_empty_store_trains_the_demo_config_and_publishes(
    tmp_path: Path, tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import training.train_cli
    from model_store.store import ModelStore

    calls: list[dict[str, object]] = []

    def fake_train(**kwargs: object) -> None:  # publishes like run_train(publish=True) does
        calls.append(kwargs)
        ModelStore(Path(str(kwargs["store"]))).publish(str(kwargs["name"]), tiny_bundle)

    monkeypatch.setattr(training.train_cli, "run_train", fake_train)
    settings = Settings(store_dir=tmp_path / "store", model_name=MODEL)
    assert ensure_model(settings) == 1
    assert calls[0]["config"] == DEMO_CONFIG
    assert (calls[0]["model"], calls[0]["dataset"], calls[0]["publish"]) == (
        "sasrec",
        "ml-latest-small",
        True,
    )


@pytest.mark.redis
def test_redis_probe(redis_url: str) -> None:
    assert redis_answers(redis_url)
    assert not redis_answers(f"redis://127.0.0.1:{free_port()}/0")


def test_the_demo_config_is_a_valid_short_sasrec_run() -> None:
    from training.config import load_config
    from training.models.sasrec import SASRecConfig

    config = load_config(DEMO_CONFIG, SASRecConfig)
    assert config.train.epochs <= 50
    assert 0 < config.train.max_seconds <= 300
