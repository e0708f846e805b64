"""Manifest schema and name/version validation: strict, explicit errors, UTC timestamps."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from fake_bundle import bundle_info

from model_store import InvalidName, Manifest, ManifestError, validate_model_name, validate_version
from model_store.manifest import parse_bundle_info, parse_manifest
from model_store.validation import validate_file_name

DIGEST = "ab" * 32


def manifest_dict(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "schema_version": 1,
        "name": "cinesync",
        "version": 3,
        "files": {"encoder.onnx": DIGEST, "item_embeddings.npy": "0" * 64},
        "created_at": "2025-01-02T03:04:05Z",
        **bundle_info(),
    }
    data.update(changes)
    return data


def encode(data: dict[str, Any]) -> bytes:
    return json.dumps(data).encode()


def test_manifest_round_trips_through_json_with_a_utc_timestamp() -> None:
    manifest = parse_manifest(encode(manifest_dict()))
    assert manifest.created_at == datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    again = parse_manifest(manifest.to_json())
    assert again == manifest
    written = json.loads(manifest.to_json())
    assert written["created_at"] == "2025-01-02T03:04:05Z"
    assert list(written)[:3] == ["schema_version", "name", "version"]
    assert manifest.ndcg10("valid") == 0.1
    assert manifest.ndcg10("test") == 0.09


def test_manifest_from_bundle_carries_every_bundle_section() -> None:
    info = parse_bundle_info(encode(bundle_info()))
    when = datetime(2025, 6, 1, 12, tzinfo=timezone(timedelta(hours=2)))
    manifest = Manifest.from_bundle(
        info, name="m1", version=1, files={"a.npy": DIGEST}, created_at=when
    )
    assert manifest.created_at == datetime(2025, 6, 1, 10, tzinfo=UTC)
    dumped = json.loads(manifest.to_json())
    for section in ("model", "dataset", "metrics", "parity"):
        assert dumped[section] == bundle_info()[section]


def test_parity_is_optional_in_bundle_json() -> None:
    info = bundle_info()
    del info["parity"]
    assert parse_bundle_info(encode(info)).parity is None


def _nested(path: str, value: Any) -> dict[str, Any]:
    data = manifest_dict()
    *parents, leaf = path.split(".")
    node = data
    for key in parents:
        node = node[key]
    if value is KeyError:
        del node[leaf]
    else:
        node[leaf] = value
    return data


BAD_FIELDS = [
    ("schema_version", 2),
    ("schema_version", KeyError),
    ("name", "../etc"),
    ("version", 0),
    ("version", "3"),
    ("version", True),
    ("created_at", "2025-01-02T03:04:05"),
    ("created_at", "yesterday"),
    ("files", {}),
    ("files", {"../encoder.onnx": DIGEST}),
    ("files", {"manifest.json": DIGEST}),
    ("files", {"a.npy": DIGEST.upper()}),
    ("files", {"a.npy": DIGEST[:-1]}),
    ("model.dim", "8"),
    ("model.dim", 0),
    ("model.metric", "dot"),
    ("model.config", [1]),
    ("model", KeyError),
    ("dataset.users", -1),
    ("dataset.split", ""),
    ("metrics.test", KeyError),
    ("metrics.valid", {"ndcg@10": "high"}),
    ("surprise", 1),
    ("model.extra", 1),
]


@pytest.mark.parametrize(("path", "value"), BAD_FIELDS, ids=[f"{p}={v!r}" for p, v in BAD_FIELDS])
def test_manifest_with_a_bad_field_is_refused_naming_it(path: str, value: Any) -> None:
    with pytest.raises(ManifestError) as info:
        parse_manifest(encode(_nested(path, value)))
    assert path.split(".")[0] in str(info.value)


@pytest.mark.parametrize("data", [b"", b"{", b"[]", b"null", b"\xff\xfe", b'{"name": NaN}'])
def test_unparseable_manifest_is_a_manifest_error(data: bytes) -> None:
    with pytest.raises(ManifestError, match=r"manifest\.json is invalid"):
        parse_manifest(data)


def test_non_finite_metric_in_bundle_json_is_refused() -> None:
    info = bundle_info()
    info["metrics"]["valid"]["ndcg@10"] = float("nan")
    with pytest.raises(ManifestError, match="finite"):
        parse_bundle_info(json.dumps(info).encode())
    info["metrics"]["valid"]["ndcg@10"] = None
    assert parse_bundle_info(json.dumps(info).encode()).metrics.valid["ndcg@10"] is None


@pytest.mark.parametrize("name", ["cinesync", "a", "sasrec-v2_small", "0", "x" * 64])
def test_valid_model_names_are_accepted(name: str) -> None:
    assert validate_model_name(name) == name


@pytest.mark.parametrize("name", ["", "..", "A", "-a", "a/b", "/abs", "x" * 65, "a\n", None, 3])
def test_invalid_model_names_are_refused_with_a_clear_message(name: object) -> None:
    with pytest.raises(InvalidName, match=r"invalid model name .*1-64 characters"):
        validate_model_name(name)


@pytest.mark.parametrize(("value", "expected"), [(1, 1), ("1", 1), ("42", 42), (10**17, 10**17)])
def test_valid_versions_are_accepted(value: object, expected: int) -> None:
    assert validate_version(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "007",
        "0",
        "../../etc",
        "-1",
        "1e3",
        "",
        "+1",
        "1_000",
        "٣",
        "http://x/1",
        0,
        -1,
        True,
        2.0,
        None,
        b"1",
    ],
)
def test_invalid_versions_are_refused_with_a_clear_message(value: object) -> None:
    with pytest.raises(InvalidName, match="invalid version"):
        validate_version(value)


@pytest.mark.parametrize(
    "name", ["..", ".hidden", "a/b", "manifest.json", "bundle.json", "LATEST", "", "a b", "a\\b"]
)
def test_invalid_bundle_file_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidName, match="bundle file name"):
        validate_file_name(name)
