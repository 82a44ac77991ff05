"""Top-k metrics from the 0-based rank of the single held-out target (Recall@k == Hit@k)."""
from __future__ import annotations

from typing import Dict

import torch

MISS = 2 ** 62  # the rank of a target that is never a hit, whatever k: past every candidate of any catalogue


def target_ranks(scores: torch.Tensor, target_scores: torch.Tensor) -> torch.Tensor:
    """Rank of each target among its candidates; ties count against the target (pessimistic), so a
    model that scores everything alike earns nothing, and so does a NaN candidate; a non-finite target
    score ranks ``MISS``, so a diverged model earns nothing either, even at a k that reaches every
    candidate. scores: (B, C) incl. the target; target_scores: (B,)."""
    t = target_scores[:, None]
    ranks = (scores > t).sum(1) + (scores == t).sum(1) + scores.isnan().sum(1) - 1
    return torch.where(target_scores.isfinite(), ranks, MISS)


def metrics_from_ranks(ranks: torch.Tensor, k: int) -> Dict[str, float]:
    """Mean Recall@k, MRR@k and NDCG@k over users."""
    ranks = ranks.double()
    hit = ranks < k
    return {f"recall@{k}": hit.double().mean().item(),
            f"mrr@{k}": torch.where(hit, 1.0 / (ranks + 1), 0.0).mean().item(),
            f"ndcg@{k}": torch.where(hit, 1.0 / torch.log2(ranks + 2), 0.0).mean().item()}
