"""SASRec model and losses: causality, padding invariance, attention, overfitting, objectives."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch

from training.losses import FullSoftmaxLoss, Seen, build_loss, negative_distribution
from training.models.sasrec import SASRec, SASRecConfig

N_ITEMS = 30


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny tensors: one thread avoids thread hand-off costs on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(pos: str = "learned", **overrides: Any) -> SASRec:
    torch.manual_seed(0)
    config = SASRecConfig(
        n_items=N_ITEMS,
        max_len=12,
        dim=16,
        n_layers=2,
        n_heads=2,
        dropout=0.0,
        pos=pos,
        **overrides,
    )
    return SASRec(config).eval()


def histories() -> torch.Tensor:
    return torch.tensor([[0, 0, 0, 0, 3, 7, 9, 2, 11, 4], [5, 6, 7, 8, 9, 10, 11, 12, 13, 14]])


@pytest.mark.parametrize("pos", ["learned", "rope"])
def test_changing_a_later_item_never_changes_an_earlier_output(pos: str) -> None:
    model = tiny(pos)
    h = histories()
    before = model(h)
    for column in range(4, h.shape[1]):
        changed = h.clone()
        changed[:, column] = 17
        after = model(changed)
        torch.testing.assert_close(after[:, :column], before[:, :column], rtol=0, atol=1e-6)
        assert (after[:, column:] - before[:, column:]).abs().max() > 1e-4


@pytest.mark.parametrize("pos", ["learned", "rope"])
def test_query_does_not_depend_on_left_padding(pos: str) -> None:
    model = tiny(pos)
    items = torch.tensor([3, 7, 9, 2, 11])
    rows = [torch.cat([torch.zeros(pad, dtype=torch.long), items]) for pad in (0, 1, 4, 7)]
    queries = [model.query(r[None, :])[0] for r in rows]
    attentions = [model.last_attention(r[None, :])[0, -len(items) :] for r in rows]
    for q, a in zip(queries[1:], attentions[1:], strict=True):
        torch.testing.assert_close(q, queries[0], rtol=0, atol=1e-5)
        torch.testing.assert_close(a, attentions[0], rtol=0, atol=1e-5)


def test_histories_longer_than_max_len_read_only_the_most_recent_items() -> None:
    model = tiny()
    long = torch.arange(1, 21)[None, :]  # 20 items, max_len 12
    torch.testing.assert_close(model.query(long), model.query(long[:, -12:]))


def test_fully_padded_rows_give_finite_outputs_and_zero_attention() -> None:
    model = tiny()
    empty = torch.zeros(2, 6, dtype=torch.long)
    assert torch.isfinite(model(empty)).all()
    assert torch.isfinite(model.query(empty)).all()
    assert torch.equal(model.last_attention(empty), torch.zeros(2, 6))


def test_last_attention_sums_to_one_and_is_zero_on_padding() -> None:
    model = tiny()
    weights = model.last_attention(histories())
    assert weights.shape == (2, 10)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(2))
    assert torch.equal(weights[0, :4], torch.zeros(4))
    assert (weights[0, 4:] > 0).all()


def test_query_encoder_returns_the_query_and_the_attention() -> None:
    model = tiny()
    query, attention = model.query_encoder()(histories())
    torch.testing.assert_close(query, model.query(histories()))
    torch.testing.assert_close(attention, model.last_attention(histories()))
    assert query.shape == (2, 16)
    assert model.item_embeddings().shape == (N_ITEMS + 1, 16)


def test_padding_embedding_row_is_zero() -> None:
    assert torch.equal(tiny().item_embeddings()[0], torch.zeros(16))


def test_a_tiny_model_overfits_a_tiny_batch() -> None:
    torch.manual_seed(0)
    model = SASRec(
        SASRecConfig(n_items=N_ITEMS, max_len=8, dim=32, n_layers=1, n_heads=2, dropout=0.0)
    )
    seqs = torch.tensor(
        [
            [0, 0, 1, 2, 3, 4, 5, 6, 7],
            [0, 8, 9, 10, 11, 12, 13, 14, 15],
            [20, 19, 18, 17, 16, 21, 22, 23, 24],
        ]
    )
    inputs, targets = seqs[:, :-1], seqs[:, 1:]
    mask = inputs != 0
    loss_fn = FullSoftmaxLoss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(80):
        loss = loss_fn(model(inputs)[mask], model.item_embeddings(), targets[mask])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert float(loss.detach()) < 0.05
    model.eval()
    scores = model(inputs)[mask] @ model.item_embeddings().T
    scores[:, 0] = -torch.inf
    assert torch.equal(scores.argmax(dim=1), targets[mask])  # HR@1 == 1


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="divisible"):
        SASRecConfig(n_items=5, dim=10, n_heads=3)
    with pytest.raises(ValueError, match="pos must be one of"):
        SASRecConfig(n_items=5, pos="sinusoid")
    with pytest.raises(ValueError, match="loss must be one of"):
        SASRecConfig(n_items=5, loss="bpr")
    with pytest.raises(ValueError, match="exclude_seen needs the full softmax"):
        SASRecConfig(n_items=5, loss="sampled", exclude_seen=True)


def test_label_smoothing_changes_the_loss() -> None:
    torch.manual_seed(0)
    hidden, items = torch.randn(12, 8), torch.randn(N_ITEMS + 1, 8)
    targets = torch.randint(1, N_ITEMS + 1, (12,))
    plain = build_loss("ce", 0.0)(hidden, items, targets)
    smooth = build_loss("ce", 0.1)(hidden, items, targets)
    assert abs(float(plain) - float(smooth)) > 1e-3
    # the padding row is never a class: changing it leaves the loss unchanged
    items2 = items.clone()
    items2[0] = 100.0
    torch.testing.assert_close(build_loss("ce", 0.1)(hidden, items2, targets), smooth)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_chunked_cross_entropy_matches_the_materialised_one(smoothing: float) -> None:
    torch.manual_seed(0)
    hidden = torch.randn(70, 8, requires_grad=True)
    items = torch.randn(N_ITEMS + 1, 8, requires_grad=True)
    targets = torch.randint(1, N_ITEMS + 1, (70,))
    chunked = FullSoftmaxLoss(smoothing, chunk=16)(hidden, items, targets)
    grads = torch.autograd.grad(chunked, (hidden, items))
    logits = hidden @ items[1:].T
    reference = torch.nn.functional.cross_entropy(logits, targets - 1, label_smoothing=smoothing)
    expected = torch.autograd.grad(reference, (hidden, items))
    torch.testing.assert_close(chunked, reference)
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want)
    assert torch.equal(grads[1][0], torch.zeros(8))  # padding row gets no gradient


def seen_oracle(
    hidden: torch.Tensor, items: torch.Tensor, targets: torch.Tensor, seen: torch.Tensor, eps: float
) -> torch.Tensor:
    """Row by row: CE over the columns left after padding and the row's seen items (its target
    always kept), label smoothing spread over those columns."""
    losses = []
    for h, t, row_seen in zip(hidden, targets.tolist(), seen.tolist(), strict=True):
        kept = [c for c in range(1, items.shape[0]) if c == t or c not in row_seen]
        logp = (items[kept] @ h).log_softmax(dim=0)
        losses.append(-(1 - eps) * logp[kept.index(t)] - eps * logp.mean())
    return torch.stack(losses).mean()


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("grad", [True, False])
def test_cross_entropy_without_seen_items_matches_a_row_by_row_oracle(
    smoothing: float, grad: bool
) -> None:
    torch.manual_seed(0)
    hidden = torch.randn(70, 8, requires_grad=True)
    items = torch.randn(N_ITEMS + 1, 8, requires_grad=True)
    targets = torch.randint(1, N_ITEMS + 1, (70,))
    seen = torch.randint(0, N_ITEMS + 1, (70, 6))
    seen[:5, 0] = targets[:5]  # a repeat: the target itself stays a class
    want = seen_oracle(hidden, items, targets, seen, smoothing)
    with torch.set_grad_enabled(grad):  # False: the materialised (evaluation, GPU) form
        got = FullSoftmaxLoss(smoothing, chunk=16)(
            hidden, items, targets, Seen.of_lists(seen, N_ITEMS + 1)
        )
    torch.testing.assert_close(got, want.detach() if not grad else want)
    if grad:
        grads = torch.autograd.grad(got, (hidden, items))
        expected = torch.autograd.grad(want, (hidden, items))
        for g, w in zip(grads, expected, strict=True):
            torch.testing.assert_close(g, w)
        assert torch.equal(grads[1][0], torch.zeros(8))  # padding row gets no gradient


def test_removing_seen_items_raises_the_targets_probability() -> None:
    torch.manual_seed(0)
    hidden, items = torch.randn(20, 8), torch.randn(N_ITEMS + 1, 8)
    targets = torch.randint(1, N_ITEMS + 1, (20,))
    seen = torch.randint(0, N_ITEMS + 1, (20, 10))
    plain = FullSoftmaxLoss(0.0)(hidden, items, targets)
    without = FullSoftmaxLoss(0.0)(hidden, items, targets, Seen.of_lists(seen, N_ITEMS + 1))
    assert float(without) < float(plain)


def test_sampled_softmax_refuses_seen_items() -> None:
    loss_fn = build_loss("sampled", 0.0, n_negatives=4, item_counts=np.ones(N_ITEMS + 1))
    with pytest.raises(ValueError, match="does not remove seen items"):
        loss_fn(
            torch.randn(3, 8),
            torch.randn(N_ITEMS + 1, 8),
            torch.ones(3, dtype=torch.long),
            Seen.of_lists(torch.zeros(3, 2, dtype=torch.long), N_ITEMS + 1),
        )


@pytest.mark.parametrize("negatives", ["uniform", "popularity"])
def test_sampled_softmax_trains_and_decreases_the_loss(negatives: str) -> None:
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(n_items=200, max_len=8, dim=16, n_layers=1, n_heads=1, dropout=0.0))
    counts = np.arange(201)
    loss_fn = build_loss("sampled", 0.05, n_negatives=32, negatives=negatives, item_counts=counts)
    seqs = torch.randint(1, 201, (16, 9))
    inputs, targets = seqs[:, :-1], seqs[:, 1:]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        loss = loss_fn(model(inputs).reshape(-1, 16), model.item_embeddings(), targets.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert all(np.isfinite(losses))
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:5])


def test_negative_distribution_never_samples_padding() -> None:
    for kind in ("uniform", "popularity"):
        probs = negative_distribution(kind, np.array([0, 5, 1, 0, 10]))
        assert probs[0] == 0
        torch.testing.assert_close(probs.sum(), torch.tensor(1.0))
    popular = negative_distribution("popularity", np.array([0, 5, 1, 0, 10]))
    assert popular[4] > popular[1] > popular[2] > popular[3] > 0


def content(n_features: int = 5, seed: int = 3) -> torch.Tensor:
    """A random multi-hot content matrix [N_ITEMS + 1, n_features] with a zero padding row."""
    g = torch.Generator().manual_seed(seed)
    feats = (torch.rand(N_ITEMS + 1, n_features, generator=g) < 0.4).float()
    feats[0] = 0.0
    return feats


def test_item_features_add_a_linear_content_term_to_every_item_vector() -> None:
    torch.manual_seed(0)
    feats = content()
    model = SASRec(SASRecConfig(n_items=N_ITEMS, dim=16, item_features=True), feats)
    assert model.feat_proj is not None
    want = model.item_emb.weight + feats @ model.feat_proj.weight.T
    torch.testing.assert_close(model.item_embeddings(), want)
    assert torch.equal(model.item_embeddings()[0], torch.zeros(16))
    # the feature-free model reads its id embeddings alone
    plain = tiny()
    assert plain.item_embeddings() is plain.item_emb.weight


def test_items_with_the_same_features_share_the_content_term() -> None:
    torch.manual_seed(0)
    feats = content()
    feats[2] = feats[1]
    model = SASRec(SASRecConfig(n_items=N_ITEMS, dim=16, item_features=True), feats)
    table, ids = model.item_embeddings(), model.item_emb.weight
    torch.testing.assert_close(table[1] - ids[1], table[2] - ids[2])
    assert not torch.allclose(table[1] - ids[1], table[3] - ids[3])


def test_item_features_are_given_exactly_when_the_config_asks_for_them() -> None:
    with pytest.raises(ValueError, match="exactly when"):
        SASRec(SASRecConfig(n_items=N_ITEMS, item_features=True))
    with pytest.raises(ValueError, match="exactly when"):
        SASRec(SASRecConfig(n_items=N_ITEMS), content())
    with pytest.raises(ValueError, match="expected"):
        SASRec(SASRecConfig(n_items=N_ITEMS, item_features=True), content()[1:])
    bad = content()
    bad[0, 0] = 1.0
    with pytest.raises(ValueError, match="padding"):
        SASRec(SASRecConfig(n_items=N_ITEMS, item_features=True), bad)


@pytest.mark.parametrize("features", [False, True])
def test_training_never_moves_the_padding_row(features: bool) -> None:
    torch.manual_seed(0)
    config = SASRecConfig(n_items=N_ITEMS, max_len=8, dim=16, dropout=0.0, item_features=features)
    model = SASRec(config, content() if features else None)
    seqs = torch.tensor([[0, 0, 0, 1, 2, 3, 4, 5, 6], [0, 0, 7, 8, 9, 10, 11, 12, 13]])
    inputs, targets = seqs[:, :-1], seqs[:, 1:]
    mask = inputs != 0
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(3):
        loss = FullSoftmaxLoss()(model(inputs)[mask], model.item_embeddings(), targets[mask])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert torch.equal(model.item_embeddings()[0], torch.zeros(16))
    if features:
        assert model.feat_proj is not None
        assert model.feat_proj.weight.grad is not None
        assert model.feat_proj.weight.grad.abs().sum() > 0


def test_from_dataset_reads_the_content_matrix_only_when_asked() -> None:
    from training.data.build import empty_meta
    from training.data.synthetic import SyntheticConfig, generate
    from training.features import item_content_matrix

    ds = generate(SyntheticConfig(users=20, items=N_ITEMS, interactions=400, seed=0))
    on = SASRec.from_dataset(SASRecConfig(n_items=ds.n_items, item_features=True), ds)
    assert torch.equal(on.item_feats, torch.from_numpy(item_content_matrix(ds)))
    bare = replace(ds, item_meta=empty_meta(ds.item_ids))
    with pytest.warns(UserWarning, match="no item genres"):
        ids_only = SASRec.from_dataset(SASRecConfig(n_items=ds.n_items, item_features=True), bare)
    torch.testing.assert_close(ids_only.item_embeddings(), ids_only.item_emb.weight)
    off = SASRec.from_dataset(SASRecConfig(n_items=ds.n_items), ds)
    assert off.feat_proj is None
    assert not hasattr(off, "item_feats")


@pytest.mark.parametrize("features", [False, True])
@pytest.mark.parametrize("pos", ["learned", "rope"])
@pytest.mark.parametrize("n_heads", [1, 2])
@pytest.mark.parametrize("n_layers", [1, 2, 3])
def test_serving_graph_equals_the_training_forward(
    pos: str, n_heads: int, n_layers: int, features: bool
) -> None:
    """The fused serving graph (one input projection with rotary halves and scale folded in,
    last block on the last position only, the item table with its content term precomputed)
    against `SASRec.encode`, with left padding, empty rows and lengths above, at and below
    max_len."""
    torch.manual_seed(1)
    config = SASRecConfig(
        n_items=N_ITEMS, max_len=12, dim=16, n_heads=n_heads, n_layers=n_layers, pos=pos,
        init_std=0.3, item_features=features,
    )  # fmt: skip
    model = SASRec(config, content() if features else None).eval()
    encoder = model.query_encoder().eval()
    history = torch.randint(1, N_ITEMS + 1, (6, 15))
    history[0, :10] = 0  # mostly padding
    history[2, :] = 0  # empty
    history[3, 4] = 0  # a hole
    for length in (15, 12, 5, 1):
        with torch.no_grad():
            want_q, want_a = model.encode(history[:, -length:])
            got_q, got_a = encoder(history[:, -length:])
        torch.testing.assert_close(got_q, want_q, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got_a, want_a, rtol=1e-5, atol=1e-5)
