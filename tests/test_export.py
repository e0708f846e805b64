"""ONNX/INT8 export of the query encoder: parity with torch, dynamic shapes, failing checks."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from model_store.onnx_check import check_self_contained
from training import export as export_module
from training.data import Dataset, Split, leave_one_out, load_dataset
from training.export import ExportParityError, export_bundle
from training.models.sasrec import SASRec, SASRecConfig
from training.onnx_export import export_encoder
from training.parity import check_fp32, check_int8, left_pad, pick_histories

MAX_LEN = 20
METRICS = {"valid": {"ndcg@10": 0.1}, "test": {"ndcg@10": 0.09}}


@pytest.fixture(scope="module")
def data() -> tuple[Dataset, Split]:
    ds = load_dataset("synthetic:users=150,items=90,interactions=3000,seed=3")
    return ds, leave_one_out(ds)


@pytest.fixture(scope="module")
def model(data: tuple[Dataset, Split]) -> SASRec:
    torch.manual_seed(0)
    return SASRec(SASRecConfig(n_items=data[0].n_items, max_len=MAX_LEN, dim=16, n_heads=2)).eval()


@pytest.fixture(scope="module")
def bundle(
    tmp_path_factory: pytest.TempPathFactory, model: SASRec, data: tuple[Dataset, Split]
) -> Path:
    out = tmp_path_factory.mktemp("bundle")
    return export_bundle(model, data[0], data[1], out, METRICS, kind="sasrec")


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_onnx_fp32_matches_torch_on_padded_validation_histories(
    bundle: Path, model: SASRec, data: tuple[Dataset, Split]
) -> None:
    histories = pick_histories(data[1].valid.histories, 256)
    batch = left_pad(histories, MAX_LEN)
    query, attention = _session(bundle / "encoder.onnx").run(None, {"history": batch})
    with torch.no_grad():
        want_q, want_a = model.encode(torch.from_numpy(batch))
    assert np.abs(query - want_q.numpy()).max() <= 1e-4
    assert np.abs(attention - want_a.numpy()).max() <= 1e-4
    parity = json.loads((bundle / "bundle.json").read_text())["parity"]
    assert parity["fp32_histories"] == len(histories) == min(256, len(data[1].valid.histories))
    assert parity["fp32_query_max_abs_diff"] <= 1e-4
    assert parity["fp32_attention_max_abs_diff"] <= 1e-4
    assert parity["exporter"] in ("dynamo", "torchscript")


@pytest.mark.parametrize("batch_size", [1, 7])
@pytest.mark.parametrize("length", [3, MAX_LEN])
def test_onnx_encoder_accepts_dynamic_batch_and_length(
    bundle: Path, model: SASRec, batch_size: int, length: int
) -> None:
    history = torch.randint(1, model.config.n_items + 1, (batch_size, length))
    history[0, : length // 2] = 0  # one row left-padded
    for name in ("encoder.onnx", "encoder.int8.onnx"):
        query, attention = _session(bundle / name).run(None, {"history": history.numpy()})
        assert query.shape == (batch_size, model.config.dim)
        assert attention.shape == (batch_size, length)
        assert np.allclose(attention.sum(axis=1), 1.0, atol=1e-4)
        assert np.all(attention[0, : length // 2] == 0)
    with torch.no_grad():
        want_q, _ = model.encode(history)
    fp32_q, _ = _session(bundle / "encoder.onnx").run(None, {"history": history.numpy()})
    assert np.abs(fp32_q - want_q.numpy()).max() <= 1e-4


def test_onnx_query_does_not_depend_on_left_padding(
    bundle: Path, data: tuple[Dataset, Split]
) -> None:
    sess = _session(bundle / "encoder.onnx")
    history = np.asarray(pick_histories(data[1].valid.histories, 1)[0][-5:], dtype=np.int64)
    alone, att_alone = sess.run(None, {"history": history[None, :]})
    padded, att_padded = sess.run(None, {"history": left_pad([history], MAX_LEN)})
    assert np.abs(alone - padded).max() <= 1e-5
    assert np.abs(att_alone - att_padded[:, -5:]).max() <= 1e-6


def test_int8_overlap_is_recorded_and_reproducible(
    bundle: Path, data: tuple[Dataset, Split]
) -> None:
    parity = json.loads((bundle / "bundle.json").read_text())["parity"]
    histories = pick_histories(data[1].valid.histories, 256)
    items = np.load(bundle / "item_embeddings.npy")
    again = check_int8(
        bundle / "encoder.onnx", bundle / "encoder.int8.onnx", histories, items, MAX_LEN, floor=0.0
    )
    assert parity["int8_floor"] == 0.9
    assert 0.9 <= parity["int8_top10_overlap"] <= 1.0
    assert again["int8_top10_overlap"] == pytest.approx(parity["int8_top10_overlap"])
    assert parity["int8_top10_overlap_min"] <= parity["int8_top10_overlap"]


def test_int8_floor_above_one_fails_the_export(
    tmp_path: Path, model: SASRec, data: tuple[Dataset, Split]
) -> None:
    with pytest.raises(ExportParityError, match="INT8 retrieval parity failed"):
        export_bundle(model, data[0], data[1], tmp_path, METRICS, int8_floor=1.01)
    assert not (tmp_path / "bundle.json").exists()


def test_perturbed_weights_after_export_fail_fp32_parity(
    bundle: Path, model: SASRec, data: tuple[Dataset, Split]
) -> None:
    wrong = copy.deepcopy(model)
    with torch.no_grad():
        wrong.blocks[0].ffn.fc.weight.add_(0.01 * torch.randn_like(wrong.blocks[0].ffn.fc.weight))
    histories = pick_histories(data[1].valid.histories, 64)
    check_fp32(model.query_encoder(), bundle / "encoder.onnx", histories, MAX_LEN)  # still fine
    with pytest.raises(ExportParityError, match="ONNX FP32 parity failed"):
        check_fp32(wrong.query_encoder(), bundle / "encoder.onnx", histories, MAX_LEN)


def test_export_parity_judges_the_serving_graph_against_the_training_model(
    tmp_path: Path, model: SASRec, data: tuple[Dataset, Split]
) -> None:
    """A serving graph that drifted from the model it was built from (here: its fused
    projection perturbed) is exported faithfully, yet the export refuses it: parity is
    measured against the training forward (`reference`), not the graph exported."""
    drifted = model.query_encoder()
    fused = drifted.blocks[0].in_proj.weight
    with torch.no_grad():
        fused.add_(0.05 * torch.randn_like(fused))
    with pytest.raises(ExportParityError, match="ONNX FP32 parity failed"):
        export_bundle(_Fixed(model, drifted), data[0], data[1], tmp_path, METRICS, kind="sasrec")


class _Fixed(torch.nn.Module):
    """The model, with `query_encoder()` answering a given serving graph."""

    def __init__(self, model: SASRec, encoder: torch.nn.Module) -> None:
        super().__init__()
        self.inner, self.encoder, self.config = model, encoder, model.config

    def query_encoder(self) -> torch.nn.Module:
        return self.encoder

    def item_embeddings(self) -> torch.Tensor:
        return self.inner.item_embeddings()


def test_bundle_files_follow_the_contract(
    bundle: Path, model: SASRec, data: tuple[Dataset, Split]
) -> None:
    ds = data[0]
    names = {p.name for p in bundle.iterdir()}
    assert names == {
        "encoder.onnx",
        "encoder.int8.onnx",
        "item_embeddings.npy",
        "content_embeddings.npy",
        "items.jsonl",
        "histories.npz",
        "bundle.json",
    }
    items = np.load(bundle / "item_embeddings.npy", allow_pickle=False)
    assert items.dtype == np.float32
    assert items.shape == (ds.n_items + 1, model.config.dim)
    assert not items[0].any()
    assert np.array_equal(items[1:], model.item_embeddings().detach().numpy()[1:])
    for name in ("encoder.onnx", "encoder.int8.onnx"):
        check_self_contained((bundle / name).read_bytes(), name)
        sess = _session(bundle / name)
        assert [i.name for i in sess.get_inputs()] == ["history"]
        assert [o.name for o in sess.get_outputs()] == ["query", "attention"]
    info = json.loads((bundle / "bundle.json").read_text())
    assert info["model"] | {"config": None} == {
        "kind": "sasrec",
        "config": None,
        "dim": 16,
        "max_len": MAX_LEN,
        "metric": "ip",
    }
    assert info["model"]["config"]["n_items"] == ds.n_items
    assert info["dataset"] == {
        "name": ds.name,
        "users": ds.n_users,
        "items": ds.n_items,
        "interactions": ds.n_interactions,
        "split": "loo-time",
    }
    assert info["metrics"] == METRICS


class DataDependentEncoder(nn.Module):
    """Stand-in with the encoder interface and a data-dependent Python branch, which
    torch.export (dynamo) refuses and TorchScript tracing records as the branch taken."""

    def __init__(self, n_items: int = 40, dim: int = 8, max_len: int = MAX_LEN) -> None:
        super().__init__()
        self.item = nn.Embedding(n_items + 1, dim, padding_idx=0)
        self.pos = nn.Embedding(max_len, dim)
        self.key = nn.Linear(dim, dim)

    def forward(self, history: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        L = history.shape[1]
        x = self.item(history) + self.pos((L - 1) - torch.arange(L))[None]  # (B, L, D)
        if bool((history[:, -1] > 0).all()):  # data-dependent: no guard possible in torch.export
            x = 2.0 * x
        logits = (self.key(x) * x[:, -1:]).sum(-1).masked_fill(history == 0, float("-inf"))
        attention = torch.softmax(logits, dim=-1)  # (B, L)
        return (attention[..., None] * x).sum(1), attention


def test_dynamo_failure_falls_back_to_torchscript_and_keeps_parity(tmp_path: Path) -> None:
    torch.manual_seed(0)
    encoder = DataDependentEncoder().eval()
    histories = [np.arange(1, n + 1) for n in range(3, 40, 3)]
    example = torch.from_numpy(left_pad(histories[-2:], MAX_LEN))
    info = export_encoder(encoder, tmp_path / "enc.onnx", example, MAX_LEN)
    assert info.exporter == "torchscript"
    assert info.fallback_reason is not None
    assert info.fallback_reason.startswith("dynamo")
    report = check_fp32(encoder, tmp_path / "enc.onnx", histories, MAX_LEN)
    assert report["fp32_query_max_abs_diff"] <= 1e-4
    assert report["unpadded_histories"] >= 2


def _gather_table_is_int8(path: Path) -> bool:
    graph = onnx.load(str(path)).graph
    dtypes = {t.name: t.data_type for t in graph.initializer}
    eight_bit = (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)
    return any(dtypes.get(n.input[0]) in eight_bit for n in graph.node if n.op_type == "Gather")


def test_int8_drops_gather_quantisation_when_it_misses_the_floor(
    bundle: Path, data: tuple[Dataset, Split], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real, calls = export_module.check_int8, []

    def first_attempt_misses(*args: Any, **kwargs: Any) -> dict[str, float | int]:
        calls.append(args[1])
        report = real(*args, **kwargs)
        if len(calls) == 1:
            raise ExportParityError("simulated miss")
        return report

    monkeypatch.setattr(export_module, "check_int8", first_attempt_misses)
    histories = pick_histories(data[1].valid.histories, 64)
    items = np.load(bundle / "item_embeddings.npy")
    report = export_module.quantize_with_parity(
        bundle / "encoder.onnx", tmp_path / "q.onnx", histories, items, MAX_LEN, 0.9
    )
    assert len(calls) == 2
    assert report["int8_quantization"].endswith("MatMul/Gemm")
    assert "simulated miss" in report["int8_rejected"][0]
    assert not _gather_table_is_int8(tmp_path / "q.onnx")
    assert _gather_table_is_int8(bundle / "encoder.int8.onnx")  # the default quantises Gather
