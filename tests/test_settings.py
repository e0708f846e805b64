"""Settings from CINESYNC_* variables: nesting, lists, and unsafe values refused by name."""

from __future__ import annotations

import pytest

from service.errors import SettingsError
from service.settings import load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("CINESYNC_"):
            monkeypatch.delenv(name)


def test_defaults_are_safe_for_development() -> None:
    settings = load_settings()
    assert settings.env == "development"
    assert settings.redis.url is None
    assert settings.admin_token_value() is None
    assert (settings.max_k, settings.cache.l1_size > 0, settings.index.kind) == (100, True, "auto")


def test_nested_variables_use_a_double_underscore(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CINESYNC_REDIS__URL", "redis://cache:6379/1")
    monkeypatch.setenv("CINESYNC_CACHE__L1_SIZE", "0")
    monkeypatch.setenv("CINESYNC_CACHE__L2_ENABLED", "false")
    monkeypatch.setenv("CINESYNC_INDEX__KIND", "hnsw")
    monkeypatch.setenv("CINESYNC_ENCODER__PRECISION", "int8")
    monkeypatch.setenv("CINESYNC_MAX_K", "50")
    monkeypatch.setenv("CINESYNC_CORS_ORIGINS", "https://a.example, https://b.example")
    settings = load_settings()
    assert settings.redis.url == "redis://cache:6379/1"
    assert (settings.cache.l1_size, settings.cache.l2_enabled) == (0, False)
    assert (settings.index.kind, settings.encoder.precision, settings.max_k) == ("hnsw", "int8", 50)
    assert settings.cors_origins == ["https://a.example", "https://b.example"]


@pytest.mark.parametrize(
    ("name", "value", "named"),
    [("CINESYNC_MAX_K", "0", "CINESYNC_MAX_K='0'"),
     ("CINESYNC_CACHE__L1_SIZE", "-5", "CINESYNC_CACHE__L1_SIZE='-5'"),
     ("CINESYNC_INDEX__KIND", "annoy", "CINESYNC_INDEX__KIND='annoy'"),
     ("CINESYNC_REDIS__URL", "http://cache", "CINESYNC_REDIS__URL='http://cache'"),
     ("CINESYNC_MODEL_NAME", "../etc", "CINESYNC_MODEL_NAME='../etc'"),
     ("CINESYNC_ENV", "staging", "CINESYNC_ENV='staging'")],
)  # fmt: skip
def test_an_invalid_value_is_refused_naming_the_variable_and_the_value(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, named: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert named in str(info.value)


def test_production_refuses_a_missing_or_short_admin_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CINESYNC_ENV", "production")
    with pytest.raises(SettingsError, match="CINESYNC_ADMIN_TOKEN"):
        load_settings()
    monkeypatch.setenv("CINESYNC_ADMIN_TOKEN", "short-secret")
    with pytest.raises(SettingsError, match="at least 16") as info:
        load_settings()
    assert "short-secret" not in str(info.value)
    monkeypatch.setenv("CINESYNC_ADMIN_TOKEN", "a-long-enough-admin-secret")
    assert load_settings().admin_token_value() == "a-long-enough-admin-secret"


def test_production_refuses_a_wildcard_cors_origin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CINESYNC_ENV", "production")
    monkeypatch.setenv("CINESYNC_ADMIN_TOKEN", "a-long-enough-admin-secret")
    monkeypatch.setenv("CINESYNC_CORS_ORIGINS", "*")
    with pytest.raises(SettingsError, match="CINESYNC_CORS_ORIGINS"):
        load_settings()


def test_a_secret_is_never_echoed_in_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CINESYNC_ADMIN_TOKEN", "x" * 20)
    monkeypatch.setenv("CINESYNC_MAX_K", "zero")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "x" * 20 not in str(info.value)
    assert "x" * 20 not in repr(load_settings(max_k=5))


def test_malformed_nested_json_is_a_settings_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CINESYNC_REDIS", "{not json")
    with pytest.raises(SettingsError, match="redis"):
        load_settings()
