"""Sampled next-item losses: hand-computed cases, logQ, accidental hits, gradients, memory, and a
small SASRec that learns with each of them."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from synthetic import walking_dataset
from test_evaluation_chunked import LargestTensor

from compress.arch import ArchSpec
from compress.backbones.objectives import training_data
from compress.backbones.sasrec import SASRec
from compress.data import SequenceDataset
from compress.engine.batches import TrainingBatches
from compress.engine.config import LOSSES
from compress.engine.losses import (
    inbatch_negatives,
    item_log_frequency,
    next_item_loss,
    sampled_softmax_loss,
    training_loss,
)
from compress.errors import ConfigError
from compress.measure.evaluation import evaluate

SEQ_LEN = 20


@pytest.fixture(scope="module")
def dataset():
    """200 users walking upward through 40 items (8-25 interactions each): real sequential signal."""
    return walking_dataset()


def sasrec(n_items: int, seed: int = 0) -> SASRec:
    torch.manual_seed(seed)
    return SASRec(ArchSpec(hidden=32, inner=64, heads=2, layers=2), n_items, SEQ_LEN, dropout=0.1)


def a_batch(dataset, n: int = 16):
    inputs, targets = training_data(sasrec(dataset.n_items), dataset.train_sequences())
    return inputs[:n], targets[:n]  # (n, N) each, targets 0 at padding


def test_full_is_next_item_loss_exactly(dataset):
    model = sasrec(dataset.n_items)
    items, targets = a_batch(dataset)
    h = model(items)  # (B, N, d)
    assert torch.equal(training_loss(model, h, targets, "full"), next_item_loss(h, targets, model.score))


def test_bad_settings_are_one_line_errors():
    h, targets, table = torch.zeros(2, 4), torch.tensor([1, 2]), torch.zeros(3, 4)
    with pytest.raises(ConfigError, match="choose one of full, uniform, inbatch"):
        training_loss(None, h[None], targets[None], "sampled")
    for kind in LOSSES[1:]:
        with pytest.raises(ConfigError, match="n_negatives must be >= 1, got 0"):
            sampled_softmax_loss(h, targets, table, kind, 0, log_q=torch.zeros(3))
    with pytest.raises(ConfigError, match="inbatch loss needs log_q"):
        sampled_softmax_loss(h, targets, table, "inbatch", 10)


def test_uniform_masks_accidental_hits():
    """Two items, eight draws: the target is drawn among the negatives and must add nothing."""
    table = torch.tensor([[0.0, 0.0], [1.0, 0.5], [-0.5, 2.0]])  # (3, d), row 0 = padding
    h, targets = torch.tensor([[0.3, -1.2]]), torch.tensor([2])
    negatives = torch.randint(1, 3, (8,), generator=torch.Generator().manual_seed(5))
    assert (negatives == 2).any() and (negatives == 1).any()
    loss = sampled_softmax_loss(h, targets, table, "uniform", 8, torch.Generator().manual_seed(5))
    pos, neg = float(h[0] @ table[2]), float(h[0] @ table[1])
    hits_of_item_1 = int((negatives == 1).sum())  # log Q is the same for every item and cancels
    expected = -pos + math.log(math.exp(pos) + hits_of_item_1 * math.exp(neg))
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_inbatch_by_hand_with_log_q_and_a_shared_target():
    """Rows 1 and 2 share target 2: the negatives are items {1, 2}, each row's own target masked."""
    table = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [5.0, 5.0]])  # item 3 is no batch target
    h = torch.tensor([[2.0, 1.0], [0.5, -1.0], [-1.0, 3.0]])
    targets = torch.tensor([1, 2, 2])
    log_q = torch.log(torch.tensor([1.0, 0.2, 0.7, 0.1]))
    lq1, lq2 = math.log(0.2), math.log(0.7)

    def ce(own: float, other: float) -> float:  # the target, and the one other in-batch item
        return -own + math.log(math.exp(own) + math.exp(other))

    rows = [ce(2.0 - lq1, 1.0 - lq2), ce(-1.0 - lq2, 0.5 - lq1), ce(3.0 - lq2, -1.0 - lq1)]
    loss = sampled_softmax_loss(h, targets, table, "inbatch", 10, log_q=log_q)
    assert loss.item() == pytest.approx(sum(rows) / 3, rel=1e-6)
    uncorrected = sampled_softmax_loss(h, targets, table, "inbatch", 10, log_q=torch.zeros(4))
    assert uncorrected.item() == pytest.approx((ce(2.0, 1.0) + ce(-1.0, 0.5) + ce(3.0, -1.0)) / 3, rel=1e-6)


def test_inbatch_negatives_are_capped_by_n_negatives():
    targets = torch.arange(1, 101).repeat(3)  # 100 distinct items
    assert torch.equal(inbatch_negatives(targets, 100), torch.arange(1, 101))
    few = inbatch_negatives(targets, 10, torch.Generator().manual_seed(0))
    assert 1 <= len(few) <= 10 and len(few.unique()) == len(few) and bool(torch.isin(few, targets).all())


def test_item_log_frequency_counts_training_items_only():
    # user 0: 1 2 1 | 3 4 (validation, test); user 1: 2 | 1 4
    data = SequenceDataset(np.array([1, 2, 1, 3, 4, 2, 1, 4]), np.array([0, 5, 8]), ["a", "b", "c", "d"], ["u", "v"])
    counts = np.array([2, 2, 0, 0]) + 1.0
    log_q = item_log_frequency(data)
    assert log_q[0] == float("-inf")
    assert torch.allclose(log_q[1:], torch.log(torch.from_numpy(counts / counts.sum())).float())


@pytest.mark.parametrize("kind", LOSSES[1:])
def test_gradients_reach_h_and_only_the_scored_item_rows(kind):
    gen = torch.Generator().manual_seed(0)
    table = torch.randn(1001, 8, generator=gen).requires_grad_()
    h = torch.randn(30, 8, generator=gen).requires_grad_()
    targets = torch.randint(1, 1001, (30,), generator=gen)
    loss = sampled_softmax_loss(h, targets, table, kind, 5, torch.Generator().manual_seed(1), log_q=torch.zeros(1001))
    loss.backward()
    assert h.grad.abs().sum(1).gt(0).all()
    touched = table.grad.abs().sum(1) > 0  # (n_items + 1,)
    assert touched[targets].all() and int(touched.sum()) <= 30 + 5


@pytest.mark.parametrize("kind", LOSSES[1:])
def test_no_logits_over_the_catalog(kind):
    n_items, m = 100_000, 64
    gen = torch.Generator().manual_seed(0)
    table = torch.randn(n_items + 1, 4, generator=gen).requires_grad_()
    h = torch.randn(m, 4, generator=gen).requires_grad_()
    targets = torch.randint(1, n_items + 1, (m,), generator=gen)
    watch = LargestTensor()
    with watch:
        sampled_softmax_loss(h, targets, table, kind, 100, gen, log_q=torch.zeros(n_items + 1)).backward()
    # the embedding gradient is table-sized; (M, n_items + 1) logits would be 16x that
    assert watch.numel <= table.numel() < m * (n_items + 1)


def fit_briefly(model: SASRec, dataset, kind: str, epochs: int = 4) -> None:
    """Adam over all-position windows with ``training_loss``: the loop a trainer runs, minus the rest."""
    data = TrainingBatches(model, dataset, 32, 0, torch.device("cpu"))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    log_q = item_log_frequency(dataset)
    model.train()
    for epoch in range(epochs):
        for _, items, tgt in data.epoch(epoch):
            loss = training_loss(model, model(items), tgt, kind, n_negatives=10, gen=gen, log_q=log_q)
            opt.zero_grad()
            loss.backward()
            opt.step()


@pytest.mark.parametrize("kind", LOSSES[1:])
def test_sampled_losses_train_a_sasrec(dataset, kind):
    model = sasrec(dataset.n_items)
    before = evaluate(model, dataset, "valid")["ndcg@10"]
    fit_briefly(model, dataset, kind)
    after = evaluate(model, dataset, "valid")["ndcg@10"]
    assert after > before + 0.1, (before, after)
