"""Evaluation protocols with a stub model whose scores we control."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from compress.data import SequenceDataset, build_dataset
from compress.data.readers import Interactions
from compress.errors import ConfigError, DataError
from compress.measure.evaluation import N_NEGATIVES, evaluate, negative_weights, sample_negatives

N_ITEMS = 30


class TableModel(nn.Module):
    """Scores are ``table[last item of the history]``: each user's ranking is fixed by the test."""

    def __init__(self, table: torch.Tensor, max_len: int = 8) -> None:
        super().__init__()
        self.table = nn.Parameter(table.clone(), requires_grad=False)
        self.max_len, self.n_items = max_len, table.shape[1] - 1
        self.seen = []

    def predict(self, items: torch.Tensor) -> torch.Tensor:  # (B, N) right-padded -> (B, n_items + 1)
        assert items.shape[1] == self.max_len
        self.seen.append(items.clone())
        last = items.gather(1, ((items > 0).sum(1) - 1).clamp(min=0)[:, None])[:, 0]
        return self.table[last]


def dataset(seqs) -> SequenceDataset:
    users = [str(u) for u, s in enumerate(seqs) for _ in s]
    items = [str(i) for s in seqs for i in s]
    order = [float(t) for s in seqs for t in range(len(s))]
    return build_dataset(Interactions(np.array(users), np.array(items), np.array(order), True, "t"))


@pytest.fixture
def ranked():
    """Four users whose test targets sit at full-protocol ranks 0, 1, 5 and 20 by construction."""
    # items are numbered 1..30 in first-appearance order: user 0 brings 1..30 in a row
    seqs = [list(range(1, N_ITEMS + 1)), [5, 6, 7, 8], [9, 10, 11, 12], [13, 14, 15, 16]]
    ds = dataset(seqs)
    assert ds.item_tokens[:N_ITEMS] == [str(i) for i in range(1, N_ITEMS + 1)]
    histories, targets = ds.eval_pairs("test")
    table = torch.zeros(N_ITEMS + 1, N_ITEMS + 1)
    for hist, tgt, rank in zip(histories, targets.tolist(), [0, 1, 5, 20]):
        others = [i for i in range(1, N_ITEMS + 1) if i != tgt]
        order = others[:rank] + [tgt] + others[rank:]  # best first
        for pos, item in enumerate(order):
            table[hist[-1], item] = N_ITEMS - pos
        table[hist[-1], 0] = 1e6  # an unmasked padding logit must not count as a candidate
    return ds, TableModel(table)


def test_full_protocol_exact_ranks(ranked):
    ds, model = ranked
    m = evaluate(model, ds, "test", "full", k=10)
    assert m["recall@10"] == pytest.approx(3 / 4)
    assert m["mrr@10"] == pytest.approx((1 + 1 / 2 + 1 / 6) / 4)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(7)) / 4)
    assert m["eval_seconds"] >= 0
    m5 = evaluate(model, ds, "test", "full", k=5)
    assert m5["recall@5"] == pytest.approx(2 / 4)


def test_a_k_that_reaches_every_candidate_is_said(ranked, caplog):
    """recall@k of a k past the candidates is 1 for any finite model: correct, and said, since it reads as a
    perfect model."""
    ds, model = ranked
    assert evaluate(model, ds, "test", "full", k=ds.n_items)[f"recall@{ds.n_items}"] == 1.0
    assert f"k={ds.n_items} reaches every one of the {ds.n_items} candidates full ranks" in caplog.text
    caplog.clear()
    evaluate(model, ds, "test", "full", k=ds.n_items - 1)
    assert "reaches every one" not in caplog.text


class Popularity(nn.Module):
    """A baseline with no parameters: every user gets the item counts, a broadcast view of one buffer."""

    def __init__(self, counts: torch.Tensor, max_len: int = 8) -> None:
        super().__init__()
        self.register_buffer("counts", counts)
        self.max_len, self.n_items = max_len, len(counts) - 1

    def predict(self, items: torch.Tensor) -> torch.Tensor:
        return self.counts.expand(len(items), -1)  # (B, n_items + 1), one row's memory


def test_a_model_without_parameters_whose_scores_are_a_view_is_evaluated_and_left_as_it_was(ranked):
    """Evaluation once wrote -inf into column 0 of whatever predict returned: a broadcast view failed
    with a raw RuntimeError, a tensor the model keeps was changed. A model with no parameters failed
    with a bare StopIteration looking for its device."""
    ds, _ = ranked
    counts = torch.from_numpy(ds.item_popularity()).float()
    model = Popularity(counts.clone())
    for protocol in ("full", "pop100"):
        metrics = evaluate(model, ds, "test", protocol)
        assert 0.0 <= metrics["ndcg@10"] <= 1.0
    assert torch.equal(model.counts, counts)


def test_a_nan_model_scores_zero_also_when_k_reaches_every_candidate(ranked):
    ds, model = ranked
    broken = TableModel(torch.full_like(model.table, float("nan")))
    assert evaluate(broken, ds, "test", "full", k=ds.n_items)[f"recall@{ds.n_items}"] == 0.0
    assert evaluate(broken, ds, "test", "pop100", k=N_NEGATIVES + 1)[f"recall@{N_NEGATIVES + 1}"] == 0.0


def test_batching_does_not_change_the_result(ranked):
    ds, model = ranked
    a = evaluate(model, ds, "test", "full", batch_size=1)
    b = evaluate(model, ds, "test", "full", batch_size=512)
    a.pop("eval_seconds"), b.pop("eval_seconds")
    assert a == b


def test_histories_are_truncated_right_padded_and_split_aware(ranked):
    ds, model = ranked
    evaluate(model, ds, "valid", "full")
    batch = torch.cat(model.seen)
    # user 0: 30 items, valid history = items 1..28, the last max_len=8 of them, left-aligned
    assert batch[0].tolist() == list(range(21, 29))
    assert batch[1].tolist() == [5, 6, 0, 0, 0, 0, 0, 0]


def test_constant_model_scores_zero():
    ds = dataset([list(range(1, 21)), [3, 4, 5, 6]])
    model = TableModel(torch.ones(ds.n_items + 1, ds.n_items + 1))
    for protocol in ("full", "pop100", "uni100"):
        m = evaluate(model, ds, "test", protocol)
        assert (m["recall@10"], m["mrr@10"], m["ndcg@10"]) == (0.0, 0.0, 0.0), protocol


def test_sampled_protocol_exact_ranks():
    ds = dataset([list(range(1, 21)), [3, 4, 5, 6], [7, 8, 9, 10]])
    histories, targets = ds.eval_pairs("test")
    last = [h[-1] for h in histories]
    assert len(set(last)) == len(last)
    best = torch.zeros(ds.n_items + 1, ds.n_items + 1)
    best[last, targets] = 10.0  # each user's target beats every other item
    worst = -best
    for protocol in ("pop100", "uni100"):
        assert evaluate(TableModel(best), ds, "test", protocol)["mrr@10"] == 1.0
        # the worst target is below all 100 negatives (and nothing ties with it)
        m = evaluate(TableModel(worst), ds, "test", protocol, k=101)
        assert m["recall@101"] == 1.0
        assert m["mrr@101"] == pytest.approx(1 / 101)


def test_model_state_is_restored(ranked):
    ds, model = ranked
    model.train()
    evaluate(model, ds, "test", "full")
    assert model.training


def test_bad_arguments(ranked):
    ds, model = ranked
    with pytest.raises(ConfigError, match="unknown protocol 'pop50'"):
        evaluate(model, ds, "test", "pop50")
    with pytest.raises(ConfigError, match="k must be >= 1"):
        evaluate(model, ds, "test", "full", k=0)
    with pytest.raises(DataError, match="unknown split"):
        evaluate(model, ds, "train", "full")


# ---------------------------------------------------------------- negative sampling


def test_negatives_are_never_the_target_and_follow_popularity():
    weights = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0, 10.0], dtype=torch.float64)
    targets = torch.full((2000,), 5)  # the most popular item: most draws clash and are redrawn
    neg = sample_negatives(targets, weights, N_NEGATIVES, torch.Generator().manual_seed(0))
    assert neg.shape == (2000, N_NEGATIVES)
    assert not (neg == 5).any() and not (neg == 0).any()
    observed = torch.bincount(neg.flatten(), minlength=6)[1:5].double()
    expected = weights[1:5] / weights[1:5].sum() * neg.numel()
    chi2 = ((observed - expected) ** 2 / expected).sum().item()
    assert chi2 < 16.3  # 3 degrees of freedom, p = 0.001


def test_negatives_mixed_targets_exclude_only_their_own_target():
    weights = torch.tensor([0.0, 1.0, 1.0, 1.0], dtype=torch.float64)
    targets = torch.tensor([1, 2, 3] * 300)
    neg = sample_negatives(targets, weights, 50, torch.Generator().manual_seed(1))
    assert not (neg == targets[:, None]).any()
    for t in (1, 2, 3):
        counts = torch.bincount(neg[targets == t].flatten(), minlength=4)
        others = [i for i in (1, 2, 3) if i != t]
        assert counts[t] == 0 and counts[0] == 0
        assert abs(counts[others[0]] - counts[others[1]]) < 0.1 * counts[others].sum()


def test_negatives_are_reproducible():
    weights = torch.arange(50, dtype=torch.float64)
    targets = torch.randint(1, 50, (64,), generator=torch.Generator().manual_seed(3))
    a = sample_negatives(targets, weights, 100, torch.Generator().manual_seed(7))
    b = sample_negatives(targets, weights, 100, torch.Generator().manual_seed(7))
    c = sample_negatives(targets, weights, 100, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_no_possible_negative_is_an_error_not_a_hang():
    weights = torch.tensor([0.0, 0.0, 5.0], dtype=torch.float64)
    with pytest.raises(ConfigError, match="negative"):
        sample_negatives(torch.tensor([2]), weights, 10, torch.Generator().manual_seed(0))


def test_negative_weights_per_protocol():
    ds = dataset([[1, 2, 3, 1], [2, 1, 4]])
    assert negative_weights(ds, "full") is None
    pop = negative_weights(ds, "pop100")
    # item ids: 1->"1", 2->"2", 3->"3", 4->"4"; counts over all interactions (targets included)
    assert pop.tolist() == [0.0, 3.0, 2.0, 1.0, 1.0]
    assert negative_weights(ds, "uni100").tolist() == [0.0, 1.0, 1.0, 1.0, 1.0]


def test_uni100_draws_uniformly():
    weights = torch.tensor([0.0] + [1.0] * 8, dtype=torch.float64)
    neg = sample_negatives(torch.full((1000,), 3), weights, N_NEGATIVES, torch.Generator().manual_seed(0))
    observed = torch.bincount(neg.flatten(), minlength=9)[[1, 2, 4, 5, 6, 7, 8]].double()
    expected = neg.numel() / 7
    assert ((observed - expected) ** 2 / expected).sum().item() < 22.5  # 6 dof, p = 0.001


@pytest.mark.parametrize("protocol", ["pop100", "uni100"])
def test_sampled_evaluation_is_seeded(protocol):
    rng = np.random.default_rng(0)
    seqs = [list(rng.integers(1, 60, size=int(rng.integers(4, 12)))) for _ in range(40)]
    ds = dataset(seqs)
    gen = torch.Generator().manual_seed(0)
    model = TableModel(torch.randn(ds.n_items + 1, ds.n_items + 1, generator=gen))
    a = evaluate(model, ds, "test", protocol, k=20, seed=5)
    b = evaluate(model, ds, "test", protocol, k=20, seed=5)
    c = evaluate(model, ds, "test", protocol, k=20, seed=6)
    for m in (a, b, c):
        m.pop("eval_seconds")
    assert a == b
    assert a != c  # with random scores, other negatives give other ranks
