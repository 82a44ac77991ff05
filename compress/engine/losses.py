"""Next-item losses that scale to large catalogs.

The full softmax scores every position against every item: (B·N, n_items + 1) logits per step,
13 GB of float32 for 64 sequences of 50 items over a million items, and as much again for the
gradient. The sampled losses score each position against its target and a few negatives only:

- ``uniform``: ``n_negatives`` items drawn uniformly from 1..n_items, shared by the whole batch.
- ``inbatch``: the batch's own targets (distinct items) are the negatives, so popular items are
  sampled more often, in proportion to their frequency; the logQ correction of Yi et al. 2019
  ("Sampling-bias-corrected neural modeling for large corpus item recommendations") subtracts each
  candidate's log sampling probability from its logit so that popular items are not over-penalised.

Both subtract log Q (for ``uniform`` a constant, which cancels; it is kept so both kinds compute
the same formula) and mask accidental hits: a negative that is the row's own target gets -inf, so it
cannot count against the target. Memory is O(M · (1 + n_negatives)) for M scored positions.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from compress.data.dataset import SequenceDataset
from compress.engine.config import LOSSES, check_loss
from compress.errors import ConfigError

REDUCTIONS = ("mean", "sum")


def scored_positions(h: torch.Tensor, targets: torch.Tensor):
    """(hidden states (M, d), targets (M,)) of the positions a loss scores. On the CPU only the real
    ones; on an accelerator every position, padding keeping target 0 for the loss to skip, so shapes do
    not depend on the data and the device never waits for the host to count the real positions."""
    if h.device.type == "cpu":
        real = targets > 0
        return h[real], targets[real]
    return h.reshape(-1, h.shape[-1]), targets.reshape(-1)


def next_item_loss(h: torch.Tensor, targets: torch.Tensor, score: Callable[[torch.Tensor], torch.Tensor],
                   reduction: str = "mean") -> torch.Tensor:
    """CE over every real position, their mean or sum. h: (B, N, d); targets: (B, N), 0 = padding."""
    h, targets = scored_positions(h, targets)
    return F.cross_entropy(score(h), targets, ignore_index=0, reduction=reduction)  # score: (M, n_items + 1)


def sampled_softmax_loss(h: torch.Tensor, targets: torch.Tensor, table: torch.Tensor, kind: str,
                         n_negatives: int, gen: Optional[torch.Generator] = None,
                         log_q: Optional[torch.Tensor] = None, negatives: Optional[torch.Tensor] = None,
                         reduction: str = "mean") -> torch.Tensor:
    """CE of each target against sampled negatives (the target is class 0), their mean or sum;
    rows with target 0 (padding) count for nothing.

    h: (M, d) hidden states; targets: (M,) item ids, 0 for a padding row; table: (n_items + 1, d) the
    tied item embedding. ``uniform`` takes its ``negatives`` (K,) drawn already, or draws them with
    ``gen``; ``inbatch`` uses ``gen`` when the batch holds more than ``n_negatives`` distinct targets.
    ``log_q`` (``inbatch`` only): (n_items + 1,) log sampling probability of each item, see
    ``item_log_frequency``.
    """
    if kind not in LOSSES[1:]:
        raise ConfigError(f"unknown sampled loss {kind!r}; choose one of {', '.join(LOSSES[1:])}")
    if n_negatives < 1:
        raise ConfigError(f"n_negatives must be >= 1, got {n_negatives}")
    real = targets > 0
    safe = targets.clamp(min=1)  # a padding row scores item 1, then counts for nothing: no inf, no NaN
    if kind == "uniform":
        n_items = table.shape[0] - 1
        neg = negatives if negatives is not None else uniform_negatives(n_items, n_negatives, gen)
        neg = neg.to(targets.device)
        pos_log_q = neg_log_q = -math.log(n_items)  # every draw is any item with probability 1/n_items
    else:
        if log_q is None:
            raise ConfigError("the inbatch loss needs log_q, the items' log sampling probabilities "
                              "(compress.engine.losses.item_log_frequency(dataset))")
        neg = inbatch_negatives(targets, n_negatives, gen)
        log_q = log_q.to(h.device, h.dtype)
        pos_log_q, neg_log_q = log_q[safe], log_q[neg]  # (M,), (K,)
    pos = (h * table[safe]).sum(-1) - pos_log_q  # (M,)
    negs = h @ table[neg].T - neg_log_q  # (M, K)
    negs = negs.masked_fill(neg[None, :] == safe[:, None], float("-inf"))  # accidental hits
    logits = torch.cat([pos[:, None], negs], 1)  # (M, 1 + K)
    ce = torch.where(real, F.cross_entropy(logits, torch.zeros_like(safe), reduction="none"), 0.0)  # (M,)
    return ce.sum() if reduction == "sum" else ce.sum() / real.sum()


def uniform_negatives(n_items: int, n_negatives: int, gen: Optional[torch.Generator] = None) -> torch.Tensor:
    """(n_negatives,) items drawn uniformly from 1..n_items, on the generator's device."""
    return torch.randint(1, n_items + 1, (n_negatives,), generator=gen,
                         device=gen.device if gen is not None else "cpu")


def inbatch_negatives(targets: torch.Tensor, n_negatives: int, gen: Optional[torch.Generator] = None) -> torch.Tensor:
    """The distinct items among ``targets``; when there are more than ``n_negatives``, the distinct
    items of ``n_negatives`` positions drawn without replacement, so that an item is still picked
    about in proportion to its count in the batch (the frequency ``log_q`` corrects for)."""
    items = targets.unique()
    items = items[items > 0]  # padding rows (target 0) are no item
    if len(items) <= n_negatives:
        return items
    real = targets[targets > 0]
    pick = torch.randperm(len(real), generator=gen, device=gen.device if gen is not None else "cpu")
    return real[pick[:n_negatives].to(targets.device)].unique()


def item_log_frequency(dataset: SequenceDataset) -> torch.Tensor:
    """(n_items + 1,) float32 log Q for ``inbatch``: log of each item's share of the training
    interactions, counts + 1 so that items never seen in training keep a finite value; index 0
    (padding, never a target) is -inf.

    ``dataset.item_popularity()`` is not used: it also counts each user's validation and test items,
    which would leak the held-out targets into training.
    """
    lengths = np.diff(dataset.offsets)  # (U,)
    position = np.arange(dataset.n_interactions) - np.repeat(dataset.offsets[:-1], lengths)  # (R,)
    train = position < np.repeat(lengths, lengths) - 2  # every item but each user's last two
    counts = np.bincount(dataset.items[train], minlength=dataset.n_items + 1)[1:] + 1.0  # (n_items,)
    out = np.full(dataset.n_items + 1, -np.inf)
    out[1:] = np.log(counts / counts.sum())
    return torch.from_numpy(out).float()


def training_loss(model: nn.Module, h: torch.Tensor, targets: torch.Tensor, kind: str = "full",
                  n_negatives: int = 100, gen: Optional[torch.Generator] = None,
                  log_q: Optional[torch.Tensor] = None, negatives: Optional[torch.Tensor] = None,
                  reduction: str = "mean") -> torch.Tensor:
    """The training loss of ``kind`` over every position with a target (mean or sum); a drop-in for
    ``next_item_loss(h, targets, model.score)``. h: (B, N, d); targets: (B, N), 0 = no target."""
    if kind not in LOSSES:
        raise ConfigError(f"unknown loss {kind!r}; choose one of {', '.join(LOSSES)}")
    if reduction not in REDUCTIONS:
        raise ConfigError(f"unknown reduction {reduction!r}; choose mean or sum")
    if kind == "full":
        return next_item_loss(h, targets, model.score, reduction)
    h, targets = scored_positions(h, targets)  # (M, d), (M,)
    return sampled_softmax_loss(h, targets, model.item_table(h.shape[-1]), kind, n_negatives, gen, log_q,
                                negatives, reduction)


class StepLoss:
    """The training loss a loop calls once per step: ``kind`` with its negatives drawn from a generator
    seeded by the step number, so a resumed run draws exactly the negatives an uninterrupted one would.
    Uniform negatives are drawn on the host a block of steps at a time and moved to the device once."""

    BLOCK = 256  # steps of uniform negatives drawn at once

    def __init__(self, kind: str, n_negatives: int, seed: int, dataset: SequenceDataset) -> None:
        check_loss(kind, n_negatives)
        if kind == "uniform" and n_negatives >= dataset.n_items:  # and a block of steps would hold BLOCK x K ids
            raise ConfigError(f"`loss` uniform draws {n_negatives:,} negatives from a catalogue of "
                              f"{dataset.n_items:,} items; ask for fewer `negatives`, or use `loss` full, which "
                              "scores every item")
        self.kind, self.n_negatives, self.seed, self.n_items = kind, n_negatives, seed, dataset.n_items
        self.log_q = item_log_frequency(dataset) if kind == "inbatch" else None
        self.block: Tuple[Optional[int], Optional[torch.Tensor]] = (None, None)  # (first step, (BLOCK, K))

    def generator(self, step: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1_000_003 + step)

    def __call__(self, model: nn.Module, h: torch.Tensor, targets: torch.Tensor, step: int,
                 reduction: str = "mean") -> torch.Tensor:
        if self.kind == "full":
            return training_loss(model, h, targets, reduction=reduction)
        if self.log_q is not None and self.log_q.device != h.device:
            self.log_q = self.log_q.to(h.device)
        negatives = self.uniform_block(step, h.device) if self.kind == "uniform" else None
        return training_loss(model, h, targets, self.kind, self.n_negatives, self.generator(step), self.log_q,
                             negatives, reduction)

    def uniform_block(self, step: int, device: torch.device) -> torch.Tensor:
        """This step's (K,) uniform negatives, from the block of steps drawn with it."""
        first, block = self.block
        if first != step - step % self.BLOCK or block.device != device:
            first = step - step % self.BLOCK
            block = torch.stack([uniform_negatives(self.n_items, self.n_negatives, self.generator(s))
                                 for s in range(first, first + self.BLOCK)]).to(device)
            self.block = (first, block)
        return block[step - first]


Scorer = Callable[[torch.Tensor], torch.Tensor]  # hidden states (M, d) -> logits (M, n_items + 1)


def distillation_loss(h: torch.Tensor, teacher_h: torch.Tensor, targets: torch.Tensor, score: Scorer,
                      teacher_score: Scorer, temperature: float = 1.0, reduction: str = "mean") -> torch.Tensor:
    """Knowledge distillation (Hinton et al. 2015) at every position with a target: T²·KL(p_teacher ‖
    p_model), p = softmax over the items of logits / T (column 0, padding, left out), their mean or sum.
    T² keeps the gradients' scale as T grows. h: (B, N, d); teacher_h: (B, N, d_teacher); targets: (B, N)."""
    if reduction not in REDUCTIONS:
        raise ConfigError(f"unknown reduction {reduction!r}; choose mean or sum")
    h, scored = scored_positions(h, targets)  # (M, d), (M,)
    teacher_h, _ = scored_positions(teacher_h, targets)
    student = F.log_softmax(score(h)[:, 1:].float() / temperature, dim=-1)  # (M, n_items)
    teacher = F.log_softmax(teacher_score(teacher_h)[:, 1:].float() / temperature, dim=-1)
    kl = F.kl_div(student, teacher, reduction="none", log_target=True).sum(-1) * temperature ** 2  # (M,)
    kl = kl.masked_fill(scored == 0, 0.0)  # padding rows, kept on an accelerator
    return kl.sum() if reduction == "sum" else kl.sum() / (scored > 0).sum().clamp(min=1)


class Distillation:
    """A step loss with a teacher: (1 − w)·``step_loss`` + w·``distillation_loss`` against the frozen
    ``teacher`` on the same rows. ``forward`` pairs the model's hidden states with the teacher's, so the
    rows a distributed run shards stay paired. The teacher scores the same items: the model it was
    pruned from, or the one a search started from."""

    def __init__(self, step_loss: StepLoss, model: nn.Module, teacher: nn.Module, weight: float,
                 temperature: float) -> None:
        if teacher.n_items != model.n_items or teacher.style.objective != model.style.objective:
            raise ConfigError(f"the teacher ({teacher.n_items} items, {teacher.style.objective} objective) must score "
                              f"the items the model scores ({model.n_items}, {model.style.objective}); distill from "
                              "the model it was pruned or searched from")
        self.step_loss, self.teacher, self.weight, self.temperature = step_loss, teacher, weight, temperature
        teacher.eval().requires_grad_(False)  # no dropout: the same targets at every step, and on resume

    def forward(self, student: Callable[[torch.Tensor], torch.Tensor]):
        """items (B, N) -> (the model's hidden states, the teacher's)."""
        def paired(items: torch.Tensor):
            with torch.no_grad():
                teacher_h = self.teacher(items)
            return student(items), teacher_h
        return paired

    def __call__(self, model: nn.Module, hidden, targets: torch.Tensor, step: int,
                 reduction: str = "mean") -> torch.Tensor:
        h, teacher_h = hidden
        kd = distillation_loss(h, teacher_h, targets, model.score, self.teacher.score, self.temperature, reduction)
        return (1.0 - self.weight) * self.step_loss(model, h, targets, step, reduction) + self.weight * kd
