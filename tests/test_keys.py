"""Redis keys: one builder, the model version always in the key, any user id safe."""

from __future__ import annotations

import pytest

from service import keys

ODD_IDS = ["", " ", "x" * 10_000, "ünïcødé-ユーザー", "%2F", "../..", "a/b", "a:b", "nul\x00id",
           "h-0123", "tab\tid", "\udcff"]  # fmt: skip


def test_recs_key_has_the_documented_shape_for_a_plain_id() -> None:
    digest = keys.params_digest(k=10, exclude_seen=True)
    assert (
        keys.recs_key("cinesync", 3, "user_42", digest)
        == f"cinesync:cinesync:3:recs:user_42:{digest}"
    )


def test_versions_give_different_keys() -> None:
    d = keys.params_digest(k=10)
    assert keys.recs_key("m", 1, "u", d) != keys.recs_key("m", 2, "u", d)


@pytest.mark.parametrize("user_id", ODD_IDS)
def test_odd_user_ids_become_a_short_safe_token(user_id: str) -> None:
    key = keys.recs_key("cinesync", 1, user_id, keys.params_digest(k=10))
    parts = keys.parse_recs_key(key)
    assert parts is not None
    assert parts.uid.startswith("h-")
    assert len(parts.uid) == 34
    assert len(key) < 120
    assert key.isascii()
    assert "\x00" not in key


def test_distinct_user_ids_give_distinct_tokens() -> None:
    ids = [*ODD_IDS, "h", "u1", "U1", "u1 ", *(f"user{i}" for i in range(1000))]
    assert len({keys.user_token(u) for u in ids}) == len(ids)


def test_a_literal_id_cannot_collide_with_a_hashed_one() -> None:
    hashed = keys.user_token("a/b")
    assert hashed.startswith("h-")
    assert keys.user_token(hashed) != hashed


def test_params_digest_ignores_keyword_order_and_sees_every_value() -> None:
    a = keys.params_digest(k=10, exclude_seen=True, genres=["Comedy", "Drama"])
    b = keys.params_digest(genres=["Comedy", "Drama"], exclude_seen=True, k=10)
    assert a == b
    assert a != keys.params_digest(k=11, exclude_seen=True, genres=["Comedy", "Drama"])
    assert a != keys.params_digest(k=10, exclude_seen=False, genres=["Comedy", "Drama"])
    assert a != keys.params_digest(k=10, exclude_seen=True, genres=["Comedy"])
    assert keys.params_digest(g={"b", "a"}) == keys.params_digest(g={"a", "b"})
    assert len(a) == 16
    assert int(a, 16) >= 0


def test_params_digest_refuses_values_it_cannot_digest_stably() -> None:
    with pytest.raises(TypeError):
        keys.params_digest(x=object())


@pytest.mark.parametrize("user_id", ["u1", *ODD_IDS])
def test_the_index_key_is_derivable_from_a_recs_key(user_id: str) -> None:
    key = keys.recs_key("cinesync", 7, user_id, keys.params_digest(k=5))
    assert keys.index_key_for(key) == keys.user_index_key("cinesync", user_id)


def test_index_and_events_keys_do_not_depend_on_the_version_and_differ_per_user() -> None:
    assert keys.user_index_key("m", "a") != keys.user_index_key("m", "b")
    assert keys.events_key("m", "a") != keys.events_key("m", "b")
    assert keys.events_key("m", "a") != keys.user_index_key("m", "a")
    assert keys.events_key("m", "../..").startswith("cinesync:m:events:h-")


def test_non_recs_keys_do_not_parse() -> None:
    assert keys.parse_recs_key("cinesync:m:1:recs:u:zz") is None
    assert keys.parse_recs_key("other") is None
    assert keys.index_key_for("cinesync:m:userkeys:u") is None


@pytest.mark.parametrize(
    ("model", "version", "digest"),
    [("Bad", 1, "ab"), ("../x", 1, "ab"), ("m:1", 1, "ab"), ("m", -1, "ab"), ("m", True, "ab"),
     ("m", 1, "not-hex"), ("m", 1, "")],
)  # fmt: skip
def test_bad_key_parts_are_refused(model: str, version: int, digest: str) -> None:
    with pytest.raises(ValueError, match="invalid"):
        keys.recs_key(model, version, "u", digest)
