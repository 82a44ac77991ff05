"""Top-k metrics against hand-computed values."""
from __future__ import annotations

import math

import pytest
import torch

from compress.measure.metrics import metrics_from_ranks, target_ranks


def test_metrics_from_ranks_by_hand():
    m = metrics_from_ranks(torch.tensor([0, 1, 5, 20]), k=10)
    # hits at ranks 0, 1, 5; rank 20 is outside the top 10
    assert m["recall@10"] == pytest.approx(3 / 4)
    assert m["mrr@10"] == pytest.approx((1 + 1 / 2 + 1 / 6 + 0) / 4)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(7) + 0) / 4)


def test_k_boundary_is_exclusive():
    # rank 9 is the 10th place (inside @10), rank 10 the 11th (outside)
    assert metrics_from_ranks(torch.tensor([9]), 10)["recall@10"] == 1.0
    assert metrics_from_ranks(torch.tensor([10]), 10) == {"recall@10": 0.0, "mrr@10": 0.0, "ndcg@10": 0.0}
    m = metrics_from_ranks(torch.tensor([0, 3]), 1)
    assert m == {"recall@1": 0.5, "mrr@1": 0.5, "ndcg@1": 0.5}


def test_perfect_ranking():
    perfect = metrics_from_ranks(torch.zeros(7, dtype=torch.long), 5)
    assert perfect == {"recall@5": 1.0, "mrr@5": 1.0, "ndcg@5": 1.0}


def test_target_ranks_counts_strictly_better_candidates():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.3],
                           [0.8, 0.2, 0.4, 0.6]])
    assert target_ranks(scores, scores[:, 2]).tolist() == [1, 2]
    assert target_ranks(scores, scores[:, 1]).tolist() == [0, 3]


def test_ties_are_pessimistic():
    scores = torch.tensor([[1.0, 2.0, 2.0, 2.0, 0.0]])
    # the target (score 2) ties with two others: it is placed after both
    assert target_ranks(scores, torch.tensor([2.0])).tolist() == [2]


def test_constant_scores_earn_nothing():
    scores = torch.full((6, 500), 0.25)
    ranks = target_ranks(scores, scores[:, 7])
    assert ranks.tolist() == [499] * 6
    assert metrics_from_ranks(ranks, 10) == {"recall@10": 0.0, "mrr@10": 0.0, "ndcg@10": 0.0}
