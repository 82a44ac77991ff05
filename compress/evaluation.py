"""Leave-one-out evaluation under three protocols.

- ``full``: the target is ranked against every item (the honest default).
- ``pop100``: against 100 negatives drawn with replacement with probability proportional to item
  popularity over all interactions, only the target excluded (RecBole's ``pop100``, the paper's
  protocol).
- ``uni100``: the same with uniform sampling.

Sampling is seeded, so two runs (or two models) see the same negatives.
"""
from __future__ import annotations

import time
from typing import Dict, Optional

import torch

from compress.batching import pad_right
from compress.data.dataset import SequenceDataset
from compress.errors import ConfigError
from compress.metrics import metrics_from_ranks, target_ranks

PROTOCOLS = ("full", "pop100", "uni100")
N_NEGATIVES = 100


def sample_negatives(targets: torch.Tensor, weights: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """(B, n) items drawn with replacement ∝ ``weights`` (index 0 = padding, weight 0), never the target."""
    if (weights.sum() - weights[targets] <= 0).any():  # rejection below would never terminate
        raise ConfigError("no negative items to sample: every item with non-zero weight is a target; "
                          "the dataset needs at least 2 items for a sampled protocol")
    neg = torch.multinomial(weights.expand(len(targets), -1), n, replacement=True, generator=gen)
    clash = neg == targets[:, None]
    while clash.any():  # rejection keeps the distribution exactly "weights without the target"
        neg[clash] = torch.multinomial(weights, int(clash.sum()), replacement=True, generator=gen)
        clash = neg == targets[:, None]
    return neg


def negative_weights(dataset: SequenceDataset, protocol: str) -> Optional[torch.Tensor]:
    if protocol == "full":
        return None
    if protocol == "pop100":
        return torch.from_numpy(dataset.item_popularity())
    w = torch.ones(dataset.n_items + 1, dtype=torch.float64)
    w[0] = 0.0
    return w


@torch.no_grad()
def evaluate(model: torch.nn.Module, dataset: SequenceDataset, split: str = "valid", protocol: str = "full",
             k: int = 10, batch_size: int = 512, seed: int = 0, device: Optional[str] = None) -> Dict[str, float]:
    """Recall/MRR/NDCG@k of ``model.predict`` on the leave-one-out ``split``."""
    if protocol not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    if k < 1:
        raise ConfigError(f"k must be >= 1, got {k}")
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    histories, targets = dataset.eval_pairs(split)
    targets = torch.from_numpy(targets)
    weights = negative_weights(dataset, protocol)
    gen = torch.Generator().manual_seed(seed)
    ranks = []
    start = time.perf_counter()
    for lo in range(0, len(targets), batch_size):
        items = pad_right(histories[lo:lo + batch_size], model.max_len).to(device)
        tgt = targets[lo:lo + batch_size]
        scores = model.predict(items).float().cpu()  # (B, n_items + 1)
        t_scores = scores.gather(1, tgt[:, None])[:, 0]
        if weights is None:
            scores[:, 0] = float("-inf")  # padding is never a candidate, whatever logit the model gives it
        else:
            scores = scores.gather(1, sample_negatives(tgt, weights, N_NEGATIVES, gen))
            scores = torch.cat([scores, t_scores[:, None]], 1)
        ranks.append(target_ranks(scores, t_scores))
    model.train(was_training)
    out = metrics_from_ranks(torch.cat(ranks), k)
    out["eval_seconds"] = round(time.perf_counter() - start, 3)
    return out

