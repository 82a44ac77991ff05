"""Leave-one-out evaluation under three protocols.

- ``full``: the target is ranked against every item (the honest default).
- ``pop100``: against 100 negatives drawn with replacement with probability proportional to item
  popularity over all interactions, only the target excluded (RecBole's ``pop100``, the paper's
  protocol).
- ``uni100``: the same with uniform sampling.

Sampling is seeded and done on the host (inverse CDF over the item weights, the target rejected and
redrawn), so two runs, two models, or one model on two devices see the same negatives.

Everything else runs where the model lives: a split's histories, targets and negatives are moved to
the device once (``EvalSet``), and ranks stay there until the metrics are computed. Models with
``query_hidden`` and ``item_table`` (all of ours) are scored from their hidden state without ever
building the (B, n_items + 1) score matrix, which is 2 GB for 512 users and a million items: ``full``
ranks in chunks of ``item_chunk`` items, the sampled protocols score only the target and its
negatives. Other models go through ``predict`` and are ranked on the scores it returns (cast to
float32, which is exact from a lower precision, so a bfloat16 model's ties stay ties). Both paths rank
by ``target_ranks``' rule: ties count against the target, and a non-finite target score is never a hit
(a diverged model scores zero, not one, at any k). The chunked full ranking counts exactly over the chunk
matmuls' scores, which are the whole matmul's wherever the BLAS computes a column the same way in a
chunk (MKL does at the default chunk); the sampled protocols take their 101 dot products directly,
which may differ from the matmul's in the last bit, so only a negative within float32 rounding of
the target can move a rank.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Union

import torch

from compress.bounds import MAX_SEED, instance, whole
from compress.data.batching import pad_right
from compress.data.dataset import SAMPLED, SequenceDataset
from compress.data.vocabulary import check_same
from compress.errors import ConfigError
from compress.measure.metrics import MISS, metrics_from_ranks, target_ranks
from compress.nn.modes import evaluating
from compress.runtime import distributed
from compress.runtime.devices import as_device, model_device

PROTOCOLS = ("full", *SAMPLED)  # full ranking, and the sampled ones with where they draw negatives
N_NEGATIVES = 100
log = logging.getLogger(__name__)
EVAL_SEED = 2024  # the negatives' seed when none is given: the CLI's, the API's and the loops' alike


def sample_negatives(targets: torch.Tensor, weights: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """(B, n) items drawn with replacement ∝ ``weights`` (index 0 = padding, weight 0), never the target."""
    if (weights.sum() - weights[targets] <= 0).any():  # rejection below would never terminate
        raise ConfigError("no negative items to sample: every item with non-zero weight is a target; "
                          "the dataset needs at least 2 items for a sampled protocol")
    cdf = weights.double().cumsum(0)
    cdf = cdf / cdf[-1]  # the last entry is exactly 1

    def draw(count: int) -> torch.Tensor:  # the first item whose cumulative weight exceeds a uniform draw
        u = torch.rand(count, generator=gen, dtype=torch.float64)
        return torch.searchsorted(cdf, u, right=True).clamp_(max=len(weights) - 1)

    neg = draw(len(targets) * n).view(len(targets), n)
    clash = neg == targets[:, None]
    while clash.any():  # rejection keeps the distribution exactly "weights without the target"
        neg[clash] = draw(int(clash.sum()))
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


@dataclass
class EvalSet:
    """A split ready to score on a device: right-padded histories (U, N), targets (U,), and for a
    sampled protocol the negatives (U, 100)."""

    histories: torch.Tensor
    targets: torch.Tensor
    negatives: Optional[torch.Tensor]
    protocol: str

    def __len__(self) -> int:
        return len(self.targets)


def eval_set(dataset: SequenceDataset, split: str, protocol: str, max_len: int, seed: int = EVAL_SEED,
             device=None) -> EvalSet:
    """``split`` of ``dataset`` under ``protocol``, histories cut to the last ``max_len`` items."""
    if protocol not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    histories, targets = dataset.eval_pairs(split)
    targets = torch.from_numpy(targets)
    weights = negative_weights(dataset, protocol)
    # every process draws every user's negatives, so a sharded evaluation sees a single process's
    negatives = None if weights is None else \
        sample_negatives(targets, weights, N_NEGATIVES, torch.Generator().manual_seed(seed)).to(device)
    return EvalSet(pad_right(histories, max_len).to(device), targets.to(device), negatives, protocol)


@torch.no_grad()
def evaluate(model: torch.nn.Module, dataset: SequenceDataset, split: str = "valid", protocol: str = "full",
             k: int = 10, batch_size: int = 512, seed: int = EVAL_SEED, device: Union[None, str, torch.device] = None,
             item_chunk: int = 65536) -> Dict[str, float]:
    """Recall/MRR/NDCG@k of ``model`` on the leave-one-out ``split``; ``item_chunk`` bounds the
    (batch_size, item_chunk) scores held at once by a full ranking from the hidden state. The model and
    the data must number their items alike (``model.vocabulary``, where the model has one)."""
    check_sizes(k, batch_size, item_chunk)
    whole("seed", seed, 0, MAX_SEED)
    check_model_and_data(model, dataset)
    device = as_device(device, model_device(model))
    candidates = dataset.n_items if protocol == "full" else N_NEGATIVES + 1
    if k >= candidates:  # a correct number, but not one that says anything about the model
        log.warning("k=%d reaches every one of the %d candidates %s ranks a target among: recall@%d is 1 for "
                    "any model whose scores are finite", k, candidates, protocol, k)
    return score_set(model, eval_set(dataset, split, protocol, model.max_len, seed, device), k, batch_size, item_chunk)


def check_model_and_data(model: torch.nn.Module, dataset: SequenceDataset) -> None:
    """A model compress can score (``predict``, ``max_len``, ``n_items``) whose items are the data's."""
    instance("the data", dataset, SequenceDataset, "load it with compress.load_dataset")
    missing = [a for a in ("predict", "max_len", "n_items") if not hasattr(model, a)]
    if missing:
        raise ConfigError(f"a {type(model).__name__} has no {', '.join(missing)}: evaluate a compress model, "
                          "e.g. compress.wrap(your_model).slice(0, layers - 1) or a model from compress.load")
    check_same(getattr(model, "vocabulary", None), dataset.vocabulary(), "the model")
    if model.n_items != dataset.n_items:
        raise ConfigError(f"the model scores {model.n_items} items but the data has {dataset.n_items}")


def check_sizes(k: int, batch_size: int, item_chunk: int) -> None:
    for name, value in (("k", k), ("batch_size", batch_size), ("item_chunk", item_chunk)):
        whole(name, value)


@torch.no_grad()
def score_set(model: torch.nn.Module, data: EvalSet, k: int = 10, batch_size: int = 512,
              item_chunk: int = 65536) -> Dict[str, float]:
    """Metrics @k of ``model`` on a prepared ``EvalSet`` (what a training loop validates on each epoch), in
    float32 even inside a caller's autocast region: half-precision scores tie and reorder the ranks."""
    check_sizes(k, batch_size, item_chunk)
    from_hidden = hasattr(model, "query_hidden") and hasattr(model, "item_table")
    starts = list(range(0, len(data), batch_size))
    mine = distributed.shard(len(starts))  # this rank's contiguous block of batches
    ranks = []
    start = time.perf_counter()
    with evaluating(model), torch.autocast(data.targets.device.type, enabled=False):
        for lo in starts[mine]:
            items, tgt = data.histories[lo:lo + batch_size], data.targets[lo:lo + batch_size]
            negatives = None if data.negatives is None else data.negatives[lo:lo + batch_size]
            if from_hidden:
                ranks.append(hidden_ranks(model, items, tgt, negatives, item_chunk))
            else:
                ranks.append(logit_ranks(model.predict(items).float(), tgt, negatives))  # (B, n_items + 1)
    local = torch.cat(ranks).cpu() if ranks else torch.zeros(0, dtype=torch.long)  # one host read
    out = metrics_from_ranks(distributed.gather_rows(local, shard_sizes(len(data), batch_size)), k)
    out["eval_seconds"] = round(time.perf_counter() - start, 3)
    return out


def shard_sizes(n: int, batch_size: int) -> List[int]:
    """Users evaluated by each rank when ``distributed.shard`` splits the ``batch_size`` batches of ``n``."""
    n_batches = -(-n // batch_size)
    bounds = [distributed.shard_of(n_batches, r) for r in range(distributed.world_size())]
    return [min(n, b.stop * batch_size) - min(n, b.start * batch_size) for b in bounds]


def logit_ranks(scores: torch.Tensor, tgt: torch.Tensor, negatives: Optional[torch.Tensor]) -> torch.Tensor:
    """(B,) target ranks from the full score matrix (B, n_items + 1), for models with ``predict`` only;
    against every item, or against ``negatives`` (B, N_NEGATIVES) for a sampled protocol. ``scores`` is
    read, never written: it may be a broadcast view, or a tensor the model keeps."""
    t_scores = scores.gather(1, tgt[:, None])[:, 0]
    if negatives is None:
        candidates = scores[:, 1:]  # padding is never a candidate, whatever logit the model gives it
    else:
        candidates = torch.cat([scores.gather(1, negatives), t_scores[:, None]], 1)
    return target_ranks(candidates, t_scores)


def hidden_ranks(model: torch.nn.Module, items: torch.Tensor, tgt: torch.Tensor, negatives: Optional[torch.Tensor],
                 item_chunk: int) -> torch.Tensor:
    """(B,) target ranks from the hidden state and the tied item table, on the model's device; against
    every item, or against the ``negatives`` ``logit_ranks`` would use."""
    h = model.query_hidden(items).float()  # (B, d)
    table = model.item_table(h.shape[-1])  # (n_items + 1, d); rows are cast to float32 as they are read
    if negatives is None:
        return full_ranks(h, table, tgt, item_chunk)
    candidates = torch.cat([negatives, tgt[:, None]], 1)
    scores = (table[candidates].float() * h[:, None, :]).sum(-1)  # (B, N_NEGATIVES + 1), the target last
    return target_ranks(scores, scores[:, -1])


ROUNDING = {"tf32": 2.0 ** -11, "bf16": 2.0 ** -8}  # unit rounding of a float32 operand in these formats


def operand_rounding() -> float:
    """The unit rounding float32 matmul operands may get under the user's precision settings: 0 in IEEE
    float32, 2^-11 where TF32 is allowed (``torch.set_float32_matmul_precision("high")``, ``allow_tf32``),
    2^-8 where bfloat16 is (``"medium"`` on the CPU). The loosest of the backends' settings counts."""
    backends = (torch.backends, torch.backends.cuda.matmul, getattr(torch.backends.mkldnn, "matmul", None))
    settings = [getattr(b, "fp32_precision", None) for b in backends]
    try:
        settings.append({"high": "tf32", "medium": "bf16"}.get(torch.get_float32_matmul_precision()))
    except RuntimeError:  # the legacy and the per-backend settings mixed: the latter, read above, say it
        pass
    return max(ROUNDING.get(s, 0.0) for s in settings)


def chunk_scores(h: torch.Tensor, table: torch.Tensor, lo: int, item_chunk: int) -> torch.Tensor:
    """(B, C) float32 scores of table rows lo .. lo + item_chunk - 1; padding (row 0) at -inf."""
    scores = h @ table[lo:lo + item_chunk].to(h.dtype).T
    if lo == 0:
        scores[:, 0] = float("-inf")  # padding is never a candidate
    return scores


def target_scores(h: torch.Tensor, table: torch.Tensor, targets: torch.Tensor, item_chunk: int) -> torch.Tensor:
    """(B,) each target's own score as its chunk's matmul computes it (one pass over the table)."""
    exact = torch.empty_like(h[:, 0])
    for lo in range(0, table.shape[0], item_chunk):
        own = ((targets >= lo) & (targets < lo + item_chunk)).nonzero()[:, 0]
        exact[own] = chunk_scores(h, table, lo, item_chunk)[own, targets[own] - lo]
    return exact


def full_ranks(h: torch.Tensor, table: torch.Tensor, targets: torch.Tensor, item_chunk: int) -> torch.Tensor:
    """(B,) rank of each target among items 1..n_items, scoring ``item_chunk`` table rows at a time.

    ``target_ranks`` over the full matrix with column 0 at -inf counts the items scoring >= the target
    besides its own column; this counts the same items among the same float32 scores h @ table.T, the
    target's own score included, as each chunk's matmul computes them. That exact target score is
    only known once its chunk is reached, so every chunk is first compared with an estimate
    t~ = h · e_target: items beyond the distance that rounding could put between t~ and the exact score
    are decided on the spot, and the few within it are kept and compared with the exact score at the
    end. (Bound: a float32 dot product of length d is within γ_d Σ|h_i e_i| of the true value,
    γ_d ≈ d·2^-24, whatever the summation order; operands rounded to TF32 or bfloat16 add twice their
    unit rounding.) Where the estimate or its bound overflows, the exact target scores are taken first,
    in a pass of their own. A NaN score counts against the target, and a non-finite target score is
    never a hit (``MISS``).
    """
    e_target = table[targets].float()  # (B, d)
    estimate = (h * e_target).sum(-1)  # (B,)
    relative = 2.02 * h.shape[-1] * 2.0 ** -24 + 2.01 * operand_rounding()
    slack = relative * (h.abs() * e_target.abs()).sum(-1)  # (B,)
    low, high = estimate - slack, estimate + slack
    unsure = ~(low.isfinite() & high.isfinite())
    if bool(unsure.any()):  # scores near float32's overflow (a damaged model): the estimate bounds nothing
        exact = target_scores(h, table, targets, item_chunk)
        low, high = torch.where(unsure, exact, low), torch.where(unsure, exact, high)
    low, high = low[:, None], high[:, None]  # (B, 1)
    exact = estimate.clone()
    above = torch.zeros_like(targets)
    near_rows, near_scores = [], []
    for lo in range(0, table.shape[0], item_chunk):
        scores = chunk_scores(h, table, lo, item_chunk)  # (B, C)
        own = ((targets >= lo) & (targets < lo + scores.shape[1])).nonzero()[:, 0]
        column = targets[own] - lo
        exact[own] = scores[own, column]
        scores[own, column] = float("-inf")  # the target's own column: the tie target_ranks takes off again
        above += ((scores > high) | scores.isnan()).sum(1)
        rows, cols = ((scores >= low) & (scores <= high)).nonzero(as_tuple=True)
        near_rows.append(rows)
        near_scores.append(scores[rows, cols])
    rows, scores = torch.cat(near_rows), torch.cat(near_scores)
    ranks = above.index_add_(0, rows, (scores >= exact[rows]).long())
    return torch.where(exact.isfinite(), ranks, MISS)


def split_metrics(model: torch.nn.Module, dataset: SequenceDataset, k: int = 10, seed: int = EVAL_SEED,
                  device=None, batch_size: int = 512) -> Dict[str, Dict[str, float]]:
    """Validation and test metrics under the full and pop100 protocols, keyed ``valid/full``,
    ``valid/pop100``, ``test/full``, ``test/pop100``: what every run records."""
    return {f"{split}/{proto}": evaluate(model, dataset, split, proto, k, batch_size, seed, device)
            for split in ("valid", "test") for proto in ("full", "pop100")}
