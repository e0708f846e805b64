"""ONNX models in a bundle must be self-contained: external data anywhere is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fake_bundle import make_fake_bundle

from model_store import ModelStore, UnsafeArtifact
from model_store.onnx_check import check_self_contained
from model_store.safe_load import load_onnx_bytes

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

ort = pytest.importorskip("onnxruntime")


def embedding_model(rows: int = 6, dim: int = 8) -> onnx.ModelProto:
    weights = numpy_helper.from_array(
        np.arange(rows * dim, dtype=np.float32).reshape(rows, dim), "W"
    )
    graph = helper.make_graph(
        [helper.make_node("Gather", ["W", "history"], ["query"])],
        "g",
        [helper.make_tensor_value_info("history", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("query", TensorProto.FLOAT, [1, dim])],
        [weights],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def point_outside(tensor: onnx.TensorProto, location: str = "../../../etc/passwd") -> None:
    tensor.data_location = TensorProto.EXTERNAL
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    for key, value in (("location", location), ("offset", "0"), ("length", "192")):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value


def test_self_contained_model_is_accepted_and_runs_from_bytes(tmp_path: Path) -> None:
    bundle = make_fake_bundle(tmp_path / "b")
    (bundle / "encoder.onnx").write_bytes(embedding_model().SerializeToString())
    store = ModelStore(tmp_path / "store")
    verified = store.verify("cinesync", store.publish("cinesync", bundle))
    data = load_onnx_bytes(verified, "encoder.onnx")
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    (query,) = session.run(None, {"history": np.array([2], np.int64)})
    assert query.tolist() == [list(range(16, 24))]


def test_initializer_with_external_data_outside_the_bundle_is_refused(tmp_path: Path) -> None:
    model = embedding_model()
    point_outside(model.graph.initializer[0])
    bundle = make_fake_bundle(tmp_path / "b")
    (bundle / "encoder.onnx").write_bytes(model.SerializeToString())
    store = ModelStore(tmp_path / "store")
    verified = store.verify("cinesync", store.publish("cinesync", bundle))
    with pytest.raises(UnsafeArtifact, match="external tensor data"):
        load_onnx_bytes(verified, "encoder.onnx")


def test_external_data_saved_by_onnx_beside_the_model_is_refused(tmp_path: Path) -> None:
    model = embedding_model()
    onnx.save_model(
        model,
        tmp_path / "m.onnx",
        save_as_external_data=True,
        location="m.onnx.data",
        size_threshold=0,
    )
    with pytest.raises(UnsafeArtifact, match="external tensor data"):
        check_self_contained((tmp_path / "m.onnx").read_bytes())


def test_external_data_hidden_in_a_subgraph_or_constant_is_refused() -> None:
    inner = embedding_model().graph
    point_outside(inner.initializer[0], "/etc/shadow")
    cond = helper.make_tensor_value_info("c", TensorProto.BOOL, [])
    node = helper.make_node("If", ["c"], ["query"], then_branch=inner, else_branch=inner)
    outer = helper.make_graph(
        [node], "outer", [cond], [helper.make_tensor_value_info("query", TensorProto.FLOAT, None)]
    )
    with pytest.raises(UnsafeArtifact, match="external"):
        check_self_contained(helper.make_model(outer).SerializeToString())
    value = numpy_helper.from_array(np.ones(4, np.float32), "v")
    point_outside(value)
    const = helper.make_graph(
        [helper.make_node("Constant", [], ["y"], value=value)],
        "k",
        [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
    )
    with pytest.raises(UnsafeArtifact, match="external"):
        check_self_contained(helper.make_model(const).SerializeToString())


@pytest.mark.parametrize("cut", [1, 7, 100])
def test_truncated_or_garbage_onnx_is_refused(cut: int) -> None:
    data = embedding_model().SerializeToString()
    with pytest.raises(UnsafeArtifact, match="not a valid ONNX model"):
        check_self_contained(data[:-cut])
    with pytest.raises(UnsafeArtifact, match="not a valid ONNX model"):
        check_self_contained(b"\xff" * cut)
