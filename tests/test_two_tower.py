"""Two-tower model, its in-batch logQ softmax, mined hard negatives, user features and export."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
import torch

from training.config import TrainConfig
from training.data import Dataset, Split, leave_one_out, load_dataset
from training.export import export_bundle
from training.feature_queries import all_codes, feature_rows
from training.features import user_feature_codes
from training.models.two_tower import TwoTower, TwoTowerConfig
from training.negatives import in_batch_softmax, inclusion_log_q, log_q, mine_hard_negatives
from training.parity import left_pad, pick_histories
from training.two_tower_task import TwoTowerTask

N_ITEMS = 30


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data() -> tuple[Dataset, Split]:
    ds = load_dataset("synthetic:users=120,items=60,interactions=2400,seed=3")
    rng = np.random.default_rng(0)
    features = pd.DataFrame(
        {
            "age": rng.integers(12, 70, ds.n_users),
            "gender": rng.choice(["F", "M"], ds.n_users),
            "occupation": rng.choice(["artist", "doctor", "writer"], ds.n_users),
            "zip": [f"{z:05d}" for z in rng.permutation(100000)[: ds.n_users]],  # too many
        }
    )
    ds = dataclasses.replace(ds, user_features=features)
    return ds, leave_one_out(ds)


def tiny(**overrides: object) -> TwoTower:
    torch.manual_seed(0)
    config = TwoTowerConfig(n_items=N_ITEMS, max_len=12, dim=16, hidden=32, dropout=0.0)
    return TwoTower(dataclasses.replace(config, **overrides)).eval()  # type: ignore[arg-type]


def featured(ds: Dataset, **overrides: object) -> TwoTower:
    """A small two-tower over `ds` with distinct, non-trivial embeddings per user-feature code."""
    torch.manual_seed(0)
    base = TwoTowerConfig(n_items=ds.n_items, max_len=20, dim=16, hidden=32, dropout=0.0)
    model = TwoTower.from_dataset(dataclasses.replace(base, **overrides), ds).eval()  # type: ignore[arg-type]
    with torch.no_grad():
        for emb in model.user_embs:
            emb.weight.normal_()
    return model


def histories() -> torch.Tensor:
    return torch.tensor([[0, 0, 0, 0, 3, 7, 9, 2, 11, 4], [5, 6, 7, 8, 9, 10, 11, 12, 13, 14]])


def test_in_batch_loss_with_logq_matches_a_hand_computation() -> None:
    torch.manual_seed(0)
    table = torch.randn(7, 3)
    queries = torch.randn(2, 3, 3)  # (B, L, D)
    targets = torch.tensor([[0, 1, 2], [2, 2, 5]])  # 0 = no target
    hard = torch.tensor([[3, 0], [2, 4]])  # per row; 0 = none; row 1's 2 is a target there
    counts = np.array([0, 4, 1, 2, 3, 6, 1])
    tau = 0.5
    got = in_batch_softmax(queries, targets, lambda ids: table[ids], log_q(counts), tau, hard)
    losses = []
    for b, row in enumerate(targets.tolist()):
        for pos, target in enumerate(row):
            if target == 0:
                continue

            def logit(item: int, corrected: bool, b: int = b, pos: int = pos) -> float:
                score = float(queries[b, pos] @ table[item]) / tau
                share = counts[item] / counts.sum()  # Q: among the batch's 5 targets at all
                return score - math.log(1 - (1 - share) ** 5) if corrected else score

            # the batch's distinct targets, less the row's other targets (its user's items)
            own = {c for c in row if c not in (0, target)}
            logits = [logit(c, True) for c in (1, 2, 5) if c not in own]
            logits += [logit(h, False) for h in hard[b].tolist() if h not in (0, target)]
            losses.append(-logit(target, True) + math.log(sum(math.exp(v) for v in logits)))
    assert float(got) == pytest.approx(sum(losses) / len(losses), rel=1e-5)
    plain = in_batch_softmax(queries, targets, lambda ids: table[ids], None, tau)
    assert float(plain) != pytest.approx(float(got), rel=1e-3)


def test_mined_hard_negatives_skip_the_top_and_exclude_positives() -> None:
    items = torch.zeros(9, 2)
    items[1:, 0] = torch.arange(8, 0, -1).float()  # item 1 scores highest, item 8 lowest
    queries = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    positives = [np.array([2, 4]), np.array([1, 2, 3, 4, 5, 6])]
    pool, stats = mine_hard_negatives(queries, items, positives, pool=3, skip=1)
    assert pool.tolist() == [[3, 5, 6], [8, 0, 0]]  # row 2: only items 7, 8 remain, 7 skipped
    assert stats["positives_filtered_frac"] == pytest.approx((2 / 4 + 4 / 4) / 2)
    assert stats["mean_rank"] == pytest.approx((3 + 5 + 6 + 8) / 4)
    assert stats["queries"] == 2


def test_the_task_mines_per_user_negatives_outside_their_training_items(
    data: tuple[Dataset, Split],
) -> None:
    ds, split = data
    model = TwoTower.from_dataset(
        TwoTowerConfig(
            n_items=ds.n_items,
            max_len=20,
            dim=16,
            hidden=32,
            hard_ratio=0.3,
            hard_pool=8,
            hard_skip=2,
            hard_start=1,
            refresh_every=2,
        ),
        ds,
    )
    task = TwoTowerTask(model, split, TrainConfig(windows=0))
    assert task.start_epoch(model, 0) == {}  # before hard_start
    stats = task.start_epoch(model, 1)["hard_negatives"]
    assert stats["queries"] == sum(len(s) >= 2 for s in split.train)
    assert 0 <= stats["positives_filtered_frac"] <= 1
    assert stats["mean_rank"] > 2
    for user, seq in enumerate(split.train):
        mined = set(task.pool[user].tolist()) - {0}
        assert len(seq) < 2 or len(mined) == 8
        assert not mined & set(seq.tolist())
    assert task.start_epoch(model, 2) == {}  # refresh_every = 2
    fresh = TwoTowerTask(model, split, TrainConfig(windows=0))
    fresh.load_state_dict(task.state_dict())
    assert torch.equal(fresh.pool, task.pool)
    assert fresh.mined
    batch = next(task.batches(16, 1, torch.device("cpu")))
    loss, count = task.loss(model, batch)
    assert torch.isfinite(loss)
    assert count == int((batch["targets"] != 0).sum())


def test_prefix_queries_read_only_earlier_items_and_the_query_is_the_last() -> None:
    model = tiny()
    h = histories()
    before = model(h)
    for column in range(4, h.shape[1]):
        changed = h.clone()
        changed[:, column] = 17
        after = model(changed)
        torch.testing.assert_close(after[:, :column], before[:, :column], rtol=0, atol=1e-6)
        assert (after[:, column:] - before[:, column:]).abs().max() > 1e-4
    torch.testing.assert_close(model.query(h), before[:, -1], rtol=0, atol=1e-6)


@pytest.mark.parametrize("pooling", ["mean+attention+last", "mean", "attention"])
def test_query_does_not_depend_on_left_padding(pooling: str) -> None:
    model = tiny(pooling=pooling)
    items = torch.tensor([3, 7, 9, 2, 11])
    rows = [torch.cat([torch.zeros(pad, dtype=torch.long), items]) for pad in (0, 1, 4, 7)]
    queries = [model.query(r[None, :])[0] for r in rows]
    attentions = [model.last_attention(r[None, :])[0, -len(items) :] for r in rows]
    for q, a in zip(queries[1:], attentions[1:], strict=True):
        torch.testing.assert_close(q, queries[0], rtol=0, atol=1e-5)
        torch.testing.assert_close(a, attentions[0], rtol=0, atol=1e-5)
    weights = model.last_attention(histories())
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(2))
    assert torch.equal(weights[0, :4], torch.zeros(4))


def test_queries_and_item_vectors_are_unit_length_and_padding_is_zero() -> None:
    model = tiny()
    torch.testing.assert_close(model.query(histories()).norm(dim=1), torch.ones(2))
    items = model.item_embeddings()
    assert items.shape == (N_ITEMS + 1, 16)
    assert torch.equal(items[0], torch.zeros(16))
    torch.testing.assert_close(items[1:].norm(dim=1), torch.ones(N_ITEMS))


def test_user_features_feed_training_and_serving_uses_unknown(
    data: tuple[Dataset, Split],
) -> None:
    ds, split = data
    codes, _cards, names = user_feature_codes(ds)
    assert names == ["age", "gender", "occupation"]  # zip: too many distinct values
    assert codes.shape == (ds.n_users, 3)
    assert codes.min() >= 1
    config = TwoTowerConfig(n_items=ds.n_items, max_len=20, dim=16, hidden=32, dropout=0.0)
    torch.manual_seed(0)
    model = TwoTower.from_dataset(config, ds).eval()
    with torch.no_grad():
        for emb in model.user_embs:
            emb.weight.normal_()  # distinct, non-trivial embeddings per code
    assert model.n_user_features == 3
    assert model.item_feats.shape[1] > 0
    h = torch.from_numpy(left_pad(split.valid.histories[:4], 20))
    known = model(h, torch.from_numpy(codes[:4]))[:, -1]
    unknown = model(h, torch.zeros(4, 3, dtype=torch.long))[:, -1]
    assert (known - unknown).abs().max() > 1e-3
    torch.testing.assert_close(model.query(h), unknown, rtol=0, atol=1e-6)
    task = TwoTowerTask(model, split, TrainConfig(windows=0))
    torch.manual_seed(0)
    batch = next(task.batches(64, 1, torch.device("cpu")))
    hidden = (batch["features"] == 0).all(dim=1)
    assert 0 < int(hidden.sum()) < 64  # feature_dropout = 0.5
    want = torch.from_numpy(codes)[batch["users"][~hidden]]
    assert torch.equal(batch["features"][~hidden], want)
    plain = TwoTower.from_dataset(dataclasses.replace(config, user_features=False), ds)
    assert plain.n_user_features == 0


def test_a_tiny_model_tells_its_users_items_from_the_others_on_a_tiny_batch() -> None:
    torch.manual_seed(0)
    model = TwoTower(TwoTowerConfig(n_items=N_ITEMS, max_len=8, dim=32, hidden=64, dropout=0.0))
    seqs = torch.tensor(
        [
            [0, 0, 1, 2, 3, 4, 5, 6, 7],
            [0, 8, 9, 10, 11, 12, 13, 14, 15],
            [20, 19, 18, 17, 16, 21, 22, 23, 24],
        ]
    )
    inputs, targets = seqs[:, :-1], seqs[:, 1:]
    mask = inputs != 0
    targets = targets.masked_fill(~mask, 0)
    counts = np.bincount(seqs.flatten().numpy(), minlength=N_ITEMS + 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(120):
        loss = in_batch_softmax(model(inputs), targets, model.item_vectors, log_q(counts), 0.1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    scores = model(inputs)[mask] @ model.item_embeddings().T
    scores[:, 0] = -torch.inf
    # a position's negatives are the other users' items (its own user's are no negatives), so
    # every query's best item over the whole catalogue is one of its own user's next items
    rows = mask.nonzero()[:, 0]
    best = scores.argmax(dim=1)
    assert all(int(i) in targets[r].tolist() for i, r in zip(best, rows, strict=True))


def test_export_bundle_serves_two_tower_with_onnx_parity(
    tmp_path: Path, data: tuple[Dataset, Split]
) -> None:
    ds, split = data
    torch.manual_seed(0)
    config = TwoTowerConfig(n_items=ds.n_items, max_len=20, dim=16, hidden=32)
    model = TwoTower.from_dataset(config, ds).eval()
    bundle = export_bundle(model, ds, split, tmp_path, {}, kind="two_tower", n_parity=64)
    meta = json.loads((bundle / "bundle.json").read_text())
    assert meta["model"]["kind"] == "two_tower"
    assert meta["model"]["dim"] == 16
    items = np.load(bundle / "item_embeddings.npy")
    np.testing.assert_allclose(items, model.item_embeddings().detach().numpy(), atol=1e-6)
    batch = left_pad(pick_histories(split.valid.histories, 32), 20)
    sess = ort.InferenceSession(str(bundle / "encoder.onnx"), providers=["CPUExecutionProvider"])
    query, attention = sess.run(None, {"history": batch})
    with torch.no_grad():
        want_q, want_a = model.encode(torch.from_numpy(batch))
    assert np.abs(query - want_q.numpy()).max() <= 1e-4
    assert np.abs(attention - want_a.numpy()).max() <= 1e-4
    assert meta["parity"]["int8_top10_overlap"] >= 0.9


def test_cold_query_is_the_query_of_an_empty_history(data: tuple[Dataset, Split]) -> None:
    ds, _split = data
    model = featured(ds, max_len=12)
    with torch.no_grad():
        codes = torch.from_numpy(user_feature_codes(ds)[0][:5])
        empty = torch.zeros(5, 12, dtype=torch.long)
        torch.testing.assert_close(model.cold_query(codes), model.encode(empty, codes)[0])
        unknown = model.cold_query(torch.zeros(5, 3, dtype=torch.long))
        assert (model.cold_query(codes) - unknown).abs().max() > 1e-3


def test_the_cold_loss_adds_a_weighted_term_that_trains_the_feature_embeddings(
    data: tuple[Dataset, Split],
) -> None:
    ds, split = data
    losses = {}
    for weight in (0.0, 0.5):
        config = TwoTowerConfig(
            n_items=ds.n_items, max_len=20, dim=16, hidden=32, dropout=0.0, cold_weight=weight
        )
        torch.manual_seed(0)
        model = TwoTower.from_dataset(config, ds)
        task = TwoTowerTask(model, split, TrainConfig(windows=0))
        torch.manual_seed(1)
        batch = next(task.batches(64, 1, torch.device("cpu")))
        loss, _ = task.loss(model, batch)
        loss.backward()  # type: ignore[no-untyped-call]
        losses[weight] = float(loss.detach())
        if weight:  # hidden features (code 0) train the 'unknown' row too
            assert all(float(e.weight.grad.abs().sum()) > 0 for e in model.user_embs)
    assert losses[0.5] > losses[0.0]


def test_export_tabulates_the_feature_only_query_for_every_code_combination(
    tmp_path: Path, data: tuple[Dataset, Split]
) -> None:
    ds, split = data
    model = featured(ds)
    bundle = export_bundle(model, ds, split, tmp_path, {}, kind="two_tower", n_parity=64)
    spec = json.loads((bundle / "user_features.json").read_text())
    table = np.load(bundle / "feature_queries.npy", allow_pickle=False)
    assert [c["name"] for c in spec["columns"]] == ["age", "gender", "occupation"]
    assert [c["kind"] for c in spec["columns"]] == ["bucket", "category", "category"]
    assert spec["columns"][1]["values"] == ["F", "M"]
    cards = [c["codes"] for c in spec["columns"]]
    assert cards == model.feature_cardinalities()
    assert table.shape == (math.prod(cards), 16) == (spec["rows"], 16)
    codes = user_feature_codes(ds)[0]
    rows = (codes[:, 0] * cards[1] + codes[:, 1]) * cards[2] + codes[:, 2]  # mixed radix
    with torch.no_grad():
        want = model.cold_query(torch.from_numpy(codes)).numpy()
        unknown = model.cold_query(torch.zeros(1, 3, dtype=torch.long)).numpy()
    np.testing.assert_allclose(table[rows], want, atol=1e-6)
    assert np.array_equal(feature_rows(codes, cards), rows)
    assert np.array_equal(feature_rows(all_codes(cards), cards), np.arange(spec["rows"]))
    unseen = codes[:1].copy()
    unseen[0, 2] = cards[2]  # an occupation code the model never saw counts as unknown (0)
    assert feature_rows(unseen, cards)[0] == rows[0] - codes[0, 2]
    np.testing.assert_allclose(table[0], unknown[0], atol=1e-6)
    meta = json.loads((bundle / "bundle.json").read_text())
    assert meta["parity"]["feature_queries"]["rows"] == spec["rows"]


def test_a_model_without_user_features_exports_no_feature_queries(
    tmp_path: Path, data: tuple[Dataset, Split]
) -> None:
    ds, split = data
    torch.manual_seed(0)
    config = TwoTowerConfig(n_items=ds.n_items, max_len=20, dim=16, hidden=32, user_features=False)
    model = TwoTower.from_dataset(config, ds).eval()
    bundle = export_bundle(model, ds, split, tmp_path, {}, kind="two_tower", n_parity=64)
    assert not (bundle / "user_features.json").exists()
    assert not (bundle / "feature_queries.npy").exists()


def test_a_rows_own_items_are_no_negatives_for_it() -> None:
    """One user whose window targets items 2, 3, 4: without other users in the batch there is
    nothing to push down, so the loss is 0 (it was 1.5 when the user's own items counted)."""
    torch.manual_seed(0)
    table = torch.randn(6, 4)
    queries = torch.randn(1, 3, 4)
    loss = in_batch_softmax(queries, torch.tensor([[2, 3, 4]]), lambda ids: table[ids], None, 1.0)
    assert float(loss) == pytest.approx(0.0, abs=1e-6)


def test_log_q_is_the_chance_of_being_among_the_batch_targets() -> None:
    """1 - (1 - p)^N, not N * p: a popular item is a candidate in almost every batch."""
    shares = torch.tensor([0.5, 0.01, 1e-6], dtype=torch.float64)
    got = inclusion_log_q(shares.log().float(), 100).double().exp()
    want = 1 - (1 - shares) ** 100
    assert torch.allclose(got, want, rtol=1e-4)
    assert float(got[0]) == pytest.approx(1.0)  # N * p would be 50
