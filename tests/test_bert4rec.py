"""BERT4Rec: bidirectional attention, [MASK]-appended queries, padding invariance, overfitting,
and export through the bundle contract."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from training.config import CONFIG_DIR, load_config
from training.data import leave_one_out, load_dataset
from training.export import export_bundle
from training.losses import FullSoftmaxLoss
from training.models.bert4rec import BERT4Rec, BERT4RecConfig
from training.parity import left_pad, pick_histories
from training.tasks import cloze_mask
from training.train import seed_everything, train

N_ITEMS = 30


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(pos: str = "learned", **overrides: object) -> BERT4Rec:
    torch.manual_seed(0)
    config = BERT4RecConfig(
        n_items=N_ITEMS,
        max_len=12,
        dim=16,
        n_layers=2,
        n_heads=2,
        dropout=0.0,
        pos=pos,
        **overrides,  # type: ignore[arg-type]
    )
    return BERT4Rec(config).eval()


def histories() -> torch.Tensor:
    return torch.tensor([[0, 0, 0, 0, 3, 7, 9, 2, 11, 4], [5, 6, 7, 8, 9, 10, 11, 12, 13, 14]])


@pytest.mark.parametrize("pos", ["learned", "rope"])
def test_every_position_sees_earlier_and_later_items(pos: str) -> None:
    model = tiny(pos)
    h = histories()
    before = model(h)
    later = h.clone()
    later[:, -1] = 17  # a later item changes earlier positions' outputs (no causal mask)
    assert (model(later)[:, 5] - before[:, 5]).abs().max() > 1e-4
    earlier = h.clone()
    earlier[:, 5] = 17  # an earlier item changes the last position's output and the query
    assert (model(earlier)[:, -1] - before[:, -1]).abs().max() > 1e-4
    assert (model.query(earlier) - model.query(h)).abs().max() > 1e-4


@pytest.mark.parametrize("pos", ["learned", "rope"])
def test_query_does_not_depend_on_left_padding(pos: str) -> None:
    model = tiny(pos)
    items = torch.tensor([3, 7, 9, 2, 11])
    rows = [torch.cat([torch.zeros(pad, dtype=torch.long), items]) for pad in (0, 1, 4, 6)]
    queries = [model.query(r[None, :])[0] for r in rows]
    attentions = [model.last_attention(r[None, :])[0, -len(items) :] for r in rows]
    for q, a in zip(queries[1:], attentions[1:], strict=True):
        torch.testing.assert_close(q, queries[0], rtol=0, atol=1e-5)
        torch.testing.assert_close(a, attentions[0], rtol=0, atol=1e-5)
    hidden = [model(r[None, :])[0, -1] for r in rows]  # training forward: last position too
    for x in hidden[1:]:
        torch.testing.assert_close(x, hidden[0], rtol=0, atol=1e-5)


def test_query_is_the_output_at_a_mask_appended_to_the_history() -> None:
    model = tiny()
    h = histories()
    tokens = torch.cat([h, torch.full((2, 1), model.mask_token)], dim=1)[:, -12:]
    torch.testing.assert_close(model.query(h), model(tokens)[:, -1], rtol=0, atol=1e-5)


def test_a_full_history_drops_its_oldest_item_for_the_mask() -> None:
    model = tiny()
    full = torch.arange(1, 13)[None, :]  # max_len = 12 items
    torch.testing.assert_close(model.query(full), model.query(full[:, 1:]), rtol=0, atol=1e-5)
    attention = model.last_attention(full)
    assert attention.shape == (1, 12)
    assert float(attention[0, 0].detach()) == 0.0
    torch.testing.assert_close(
        model.query(torch.arange(1, 30)[None, :]), model.query(torch.arange(18, 30)[None, :])
    )


def test_attention_sums_to_one_over_the_history_and_is_zero_on_padding() -> None:
    model = tiny()
    weights = model.last_attention(histories())
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(2))
    assert torch.equal(weights[0, :4], torch.zeros(4))
    assert (weights[0, 4:] > 0).all()
    assert torch.equal(model.last_attention(torch.zeros(1, 4, dtype=torch.long)), torch.zeros(1, 4))


def test_item_embeddings_exclude_the_mask_token() -> None:
    model = tiny()
    assert model.item_embeddings().shape == (N_ITEMS + 1, 16)
    assert model.item_emb.weight.shape == (N_ITEMS + 2, 16)
    assert torch.equal(model.item_embeddings()[0], torch.zeros(16))


def test_a_tiny_model_learns_to_fill_in_masked_items() -> None:
    torch.manual_seed(0)
    model = BERT4Rec(BERT4RecConfig(n_items=N_ITEMS, max_len=9, dim=32, n_layers=1, dropout=0.0))
    seqs = torch.tensor(
        [
            [0, 0, 1, 2, 3, 4, 5, 6, 7],
            [0, 8, 9, 10, 11, 12, 13, 14, 15],
            [20, 19, 18, 17, 16, 21, 22, 23, 24],
        ]
    )
    loss_fn = FullSoftmaxLoss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(150):
        inputs, targets = cloze_mask(seqs, 0.3, True, model.mask_token)
        mask = targets != 0
        loss = loss_fn(model(inputs)[mask], model.item_embeddings(), targets[mask])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    scores = model.query(seqs[:, :-1]) @ model.item_embeddings().T  # the serving query
    scores[:, 0] = -torch.inf
    assert torch.equal(scores.argmax(dim=1), seqs[:, -1])


def test_config_rejects_bad_cloze_values() -> None:
    with pytest.raises(ValueError, match="mask_prob"):
        BERT4RecConfig(n_items=5, mask_prob=0.0)
    with pytest.raises(ValueError, match="max_len"):
        BERT4RecConfig(n_items=5, max_len=1)


def test_a_trained_bert4rec_exports_with_onnx_parity(tmp_path: Path) -> None:
    ds = load_dataset("synthetic:users=120,items=60,interactions=2400,seed=3")
    split = leave_one_out(ds)
    config = load_config(CONFIG_DIR / "bert4rec-tiny.toml", BERT4RecConfig)
    config = replace(config, train=replace(config.train, epochs=1))
    seed_everything(0)
    model = BERT4Rec(BERT4RecConfig(n_items=ds.n_items, **config.model))
    result = train(model, split, config, tmp_path / "run", log=lambda _: None)  # the cloze task
    assert np.isfinite(result.losses).all()
    model.eval()
    bundle = export_bundle(
        model, ds, split, tmp_path / "bundle", result.metrics, kind="bert4rec", n_parity=64
    )
    meta = json.loads((bundle / "bundle.json").read_text())
    assert meta["model"]["kind"] == "bert4rec"
    assert meta["parity"]["padding_invariance_max_abs_diff"] <= 1e-4
    assert np.load(bundle / "item_embeddings.npy").shape == (ds.n_items + 1, 16)
    batch = left_pad(pick_histories(split.valid.histories, 32), 20)
    sess = ort.InferenceSession(str(bundle / "encoder.onnx"), providers=["CPUExecutionProvider"])
    query, attention = sess.run(None, {"history": batch})
    with torch.no_grad():
        want_q, want_a = model.encode(torch.from_numpy(batch))
    assert np.abs(query - want_q.numpy()).max() <= 1e-4
    assert np.abs(attention - want_a.numpy()).max() <= 1e-4
    short = batch[:1, -3:]  # unpadded, shorter than max_len
    query_short, _ = sess.run(None, {"history": short})
    assert np.abs(query_short - model.query(torch.from_numpy(short)).detach().numpy()).max() <= 1e-4
