"""Evaluation from the hidden state (chunked full ranking, gathered sampled scores) against the
(B, n_items + 1) ``predict`` path: the same metrics, ties included, without the score matrix."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from synthetic import walking_dataset
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import compress
from compress.arch import ArchSpec
from compress.backbones.sasrec import SASRec
from compress.data import SequenceDataset
from compress.errors import ConfigError
from compress.measure import evaluation
from compress.measure.evaluation import PROTOCOLS, evaluate, full_ranks
from compress.measure.metrics import target_ranks

SEQ_LEN = 20


@pytest.fixture(scope="module")
def dataset():
    """200 users walking upward through 40 items (8-25 interactions each): real sequential signal."""
    return walking_dataset()


def sasrec(n_items: int, hidden: int = 16, seed: int = 0) -> SASRec:
    torch.manual_seed(seed)
    return SASRec(ArchSpec(hidden=hidden, inner=2 * hidden, heads=2, layers=2), n_items, SEQ_LEN)


MODELS = {"sasrec": sasrec, "supernet": lambda n_items: compress.wrap(sasrec(n_items))}


class PredictOnly(nn.Module):
    """The model seen through ``predict`` alone, so ``evaluate`` takes the (B, n_items + 1) path."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.max_len, self.n_items = model, model.max_len, model.n_items

    def predict(self, items: torch.Tensor) -> torch.Tensor:
        return self.model.predict(items)


def coarse(model: nn.Module) -> nn.Module:
    """Every 5th item shares an embedding row, rows and hidden states are multiples of 1/4: each dot
    product is exact in float32 whatever the summation order, and every target ties with 7 items."""
    gen = torch.Generator().manual_seed(1)
    table = model.item_table()  # (n_items + 1, d), a view of the embedding
    base = torch.randint(-4, 5, (5, table.shape[1]), generator=gen) / 4  # (5, d)
    with torch.no_grad():
        table[1:] = base[torch.arange(table.shape[0] - 1) % 5]
    query_hidden = model.query_hidden
    model.query_hidden = lambda items, *selection: torch.round(query_hidden(items, *selection) * 4) / 4
    return model


def metrics(model: nn.Module, data: SequenceDataset, protocol: str, **kw) -> dict:
    out = {}
    for k in (10, data.n_items):  # k = n_items: every rank moves some metric
        m = evaluate(model, data, "test", protocol, k=k, batch_size=64, **kw)
        m.pop("eval_seconds")
        out.update(m)
    return out


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("kind", sorted(MODELS))
def test_chunked_whole_and_predict_paths_agree(dataset, kind, protocol):
    model = MODELS[kind](dataset.n_items)
    chunked = metrics(model, dataset, protocol, item_chunk=7)
    assert chunked == metrics(model, dataset, protocol, item_chunk=dataset.n_items + 1)
    assert chunked == metrics(PredictOnly(model), dataset, protocol)
    assert chunked["recall@40"] > 0


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("kind", sorted(MODELS))
def test_ties_count_against_the_target_on_every_path(dataset, kind, protocol):
    model = coarse(MODELS[kind](dataset.n_items))
    chunked = metrics(model, dataset, protocol, item_chunk=7)
    assert chunked == metrics(model, dataset, protocol, item_chunk=dataset.n_items + 1)
    assert chunked == metrics(PredictOnly(model), dataset, protocol)
    if protocol == "full":  # pessimistic ties: a target shares its score with 7 other items, so never ranks < 7
        assert evaluate(model, dataset, "test", protocol, k=7, item_chunk=7)["recall@7"] == 0.0
        assert evaluate(model, dataset, "test", protocol, k=8, item_chunk=7)["recall@8"] > 0.0


def test_full_ranks_count_exactly_what_target_ranks_counts():
    """Duplicated rows with random hidden states: the duplicates' scores come out of the matmul within a
    rounding error of the target's, so only the target's exact score from its own column decides."""
    gen = torch.Generator().manual_seed(0)
    table = torch.randn(50, 24, generator=gen)[torch.randint(0, 50, (3001,), generator=gen)]  # (V, d)
    h = torch.randn(64, 24, generator=gen)  # (B, d)
    targets = torch.randint(1, 3001, (64,), generator=gen)
    scores = h @ table.T  # (B, V), the same matmul full_ranks does for a single chunk
    scores[:, 0] = float("-inf")
    expected = target_ranks(scores, scores.gather(1, targets[:, None])[:, 0])
    assert torch.equal(full_ranks(h, table, targets, 3001), expected)


def reference_ranks(h: torch.Tensor, table: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """target_ranks over the whole score matrix as ``evaluation.chunk_scores`` computes it (one chunk)."""
    scores = evaluation.chunk_scores(h, table, 0, table.shape[0])
    return target_ranks(scores, scores.gather(1, targets[:, None])[:, 0])


CHUNK_SCORES = evaluation.chunk_scores


def float64_sums(h: torch.Tensor, table: torch.Tensor, lo: int, chunk: int) -> torch.Tensor:
    """``chunk_scores`` summed in float64, then rounded: a BLAS whose summation order differs from h · e's."""
    return CHUNK_SCORES(h.double(), table.double(), lo, chunk).float()


def test_scores_near_float32_overflow_are_ranked_exactly(monkeypatch):
    """A damaged model whose dot products reach float32's overflow: the estimate h · e_target can be inf
    where the matmul's score is finite (another summation order), so its bounds are NaN and used to
    count nothing, ranking the target first among items that score higher (rank 0 instead of 2)."""
    monkeypatch.setattr(evaluation, "chunk_scores", float64_sums)
    h = torch.ones(1, 4)
    table = torch.tensor([[0.0, 0, 0, 0], [2e38, 2e38, -3e38, 0],  # item 1, the target: (h * e).sum() is inf
                          [3e38, 0, 0, 0], [2e38, 0, 0, 0], [1.0, 0, 0, 0]])  # two items score higher, one lower
    targets = torch.tensor([1])
    assert (h * table[1]).sum().isinf()
    expected = reference_ranks(h, table, targets)
    assert expected.tolist() == [2]
    for chunk in (1, 2, 5):
        assert torch.equal(full_ranks(h, table, targets, chunk), expected)


def tf32(x: torch.Tensor) -> torch.Tensor:
    """``x`` rounded to the nearest TF32 value (10 mantissa bits), as a GPU's TF32 matmul reads it."""
    bits = x.contiguous().view(torch.int32)
    return ((bits + 0x1000) & ~0x1FFF).view(torch.float32)


@pytest.mark.parametrize("precision", ["high", "medium"])
def test_ties_count_against_the_target_when_matmuls_round_their_operands(monkeypatch, precision):
    """Users who allow TF32 (or bfloat16) matmuls for speed: the chunk matmul then rounds its operands,
    far more than float32's rounding, so the estimate's slack has to widen with it. Every item has the
    same embedding, so every target ties with all items and ranks last; with float32's slack, TF32's
    scores fell outside it and the model earned recall@10 0.55 (a dead model)."""
    monkeypatch.setattr(evaluation, "chunk_scores", lambda h, table, lo, chunk: CHUNK_SCORES(tf32(h), tf32(table), lo,
                                                                                           chunk))
    gen = torch.Generator().manual_seed(0)
    table = torch.randn(1, 32, generator=gen).repeat(42, 1)  # (n_items + 1, d): 41 identical items
    h = torch.randn(64, 32, generator=gen)
    targets = torch.randint(1, 42, (64,), generator=gen)
    expected = reference_ranks(h, table, targets)
    assert expected.tolist() == [40] * 64
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(precision)
    try:  # one chunk: a BLAS may round a column differently at another place in a chunk (see full_ranks)
        assert torch.equal(full_ranks(h, table, targets, 42), expected)
    finally:
        torch.set_float32_matmul_precision(previous)


def test_item_chunk_must_be_positive(dataset):
    with pytest.raises(ConfigError, match="item_chunk must be >= 1"):
        evaluate(sasrec(dataset.n_items), dataset, item_chunk=0)


class LargestTensor(TorchDispatchMode):
    """Records the largest tensor any op returns."""

    def __init__(self) -> None:
        super().__init__()
        self.numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.numel = max(self.numel, t.numel())
        return out


def test_a_large_catalog_is_ranked_without_the_score_matrix():
    n_items, users = 200_000, 64
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 12, users)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    data = SequenceDataset(rng.integers(1, n_items + 1, offsets[-1]).astype(np.int64), offsets,
                           [str(i) for i in range(1, n_items + 1)], [str(u) for u in range(users)])
    model = sasrec(n_items, hidden=8)

    def refuse(*args):
        raise AssertionError("the chunked path must not build (B, n_items + 1) scores")

    model.score = model.predict = refuse
    watch = LargestTensor()
    with watch:
        m = evaluate(model, data, "valid", "full", batch_size=users, item_chunk=4096)
    assert 0.0 <= m["ndcg@10"] <= 1.0
    # nothing larger than the item table (200k x 8) itself, 8x smaller than the score matrix (64 x 200k)
    assert watch.numel <= model.item_table().numel() < users * (n_items + 1)
