"""Training a dense backbone: Adam, all-position next-item CE, early stopping on validation NDCG@k."""
from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from compress.runtime import distributed
from compress.engine.checkpoint import Checkpointer, resume_point, rng_state, set_rng_state
from compress.data.dataset import SequenceDataset
from compress.errors import ConfigError, SearchError
from compress.measure.evaluation import evaluate
from compress.engine.losses import StepLoss, check_loss, next_item_loss
from compress.engine.precision import Precision, check_precision
from compress.backbones.objectives import training_batch, training_data
from compress.engine.progress import NullReporter, Reporter


@dataclass
class TrainConfig:
    epochs: int = 200
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 10  # epochs without validation gain before stopping
    seed: int = 2024
    k: int = 10
    eval_batch_size: int = 512
    max_minutes: Optional[float] = None  # wall-clock budget: stop at the step that exceeds it, after validating
    loss: str = "full"  # full softmax over all items, or sampled: "uniform" / "inbatch" (compress.engine.losses)
    negatives: int = 100  # negatives per step of a sampled loss
    precision: str = "fp32"  # fp32, bf16 (CPU/CUDA) or fp16 (CUDA) autocast of the forward pass

    def __post_init__(self) -> None:
        check_loss(self.loss, self.negatives)
        check_precision(self.precision)
        for name in ("epochs", "batch_size", "patience", "k", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")


@dataclass
class TrainResult:
    best_epoch: int
    best_valid: Dict[str, float]
    history: List[Dict] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> Dict:
        return asdict(self)


def past(start: float, max_minutes: Optional[float]) -> bool:
    return max_minutes is not None and time.perf_counter() - start > 60.0 * max_minutes


def over_budget(start: float, max_minutes: Optional[float]) -> bool:
    """Whether the wall-clock budget is spent on any rank (their clocks differ: all must agree)."""
    return distributed.sum_floats(past(start, max_minutes))[0] > 0


def batches(inputs: torch.Tensor, targets: torch.Tensor, batch_size: int,
            gen: torch.Generator) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
    order = torch.randperm(len(inputs), generator=gen)
    for lo in range(0, len(order), batch_size):
        idx = order[lo:lo + batch_size]
        yield inputs[idx], targets[idx]


def epoch_batches(model, inputs: torch.Tensor, targets: torch.Tensor, batch_size: int, gen: torch.Generator,
                  device, skip: int = 0) -> Iterator[Tuple[int, torch.Tensor, torch.Tensor]]:
    """(index, items, targets) of an epoch's training batches on ``device``, from batch ``skip`` on.
    Skipped batches are still drawn (cloze masking consumes ``gen``), so a resumed epoch sees exactly
    the batches the uninterrupted one would have."""
    device = torch.device(device)
    for i, (items, tgt) in enumerate(batches(inputs, targets, batch_size, gen)):
        items, tgt = training_batch(model, items, tgt, gen)
        if i >= skip:
            if device.type == "cuda":  # page-locked host copies let the transfer run asynchronously to the host
                yield i, items.pin_memory().to(device, non_blocking=True), tgt.pin_memory().to(device, non_blocking=True)
            else:
                yield i, items.to(device), tgt.to(device)


def shard_loss(step_loss: StepLoss, model: nn.Module, forward: Callable[[torch.Tensor], torch.Tensor],
               items: torch.Tensor, tgt: torch.Tensor, step: int) -> Tuple[Optional[torch.Tensor], float]:
    """This rank's share of a global batch: the loss to back-propagate, weighted by the share's
    fraction of the batch's targets so that gradients summed over the ranks are the global mean's
    (None when the share holds no target), and that loss times the global batch's sequences, for the log."""
    total, rows = int((tgt > 0).sum()), len(items)
    part = distributed.shard(rows)
    items, tgt = items[part], tgt[part]  # (B_r, N)
    local = int((tgt > 0).sum())
    if local == 0:
        return None, 0.0
    loss = step_loss(model, forward(items), tgt, step) * distributed.share(local, total)
    return loss, loss.item() * rows  # summed over the ranks: the global batch's mean loss times its rows


def step_flags(loss: Optional[torch.Tensor], loss_sum: float, checkpoint: Optional[Checkpointer], start: float,
               max_minutes: Optional[float]) -> Tuple[float, bool]:
    """(loss sum over the ranks, budget spent), agreed by every rank in one collective together with a
    stop request (set on the checkpointer); raises on a non-finite loss on any rank, before any rank
    steps on it."""
    finite = loss is None or bool(torch.isfinite(loss))
    stop = checkpoint is not None and checkpoint.stop_requested
    total, bad, stop, late = distributed.sum_floats(loss_sum, not finite, stop, past(start, max_minutes))
    if bad:
        raise SearchError(f"loss became {loss.item() if not finite else 'non-finite on another rank'}")
    if checkpoint is not None:  # every rank saves and stops at this step: a signal arriving later waits
        checkpoint.stopping = bool(stop)
    return total, bool(late)


def fit(model: nn.Module, dataset: SequenceDataset, cfg: TrainConfig, device: torch.device,
        reporter: Optional[Reporter] = None, checkpoint: Optional[Checkpointer] = None) -> TrainResult:
    """Train ``model`` in place; on return it holds the weights of the best validation epoch. With a
    ``checkpoint``, state is saved after every epoch (and every ``checkpoint.every`` steps) and a
    saved state is resumed from, batch for batch, so a killed run ends as an uninterrupted one would."""
    reporter = reporter or NullReporter()
    torch.manual_seed(cfg.seed + distributed.rank())  # dropout differs per rank, as on different rows it should
    model.to(device)
    inputs, targets = training_data(model, dataset.train_sequences())
    if len(inputs) == 0:
        raise ConfigError("no training pairs: every user has fewer than 4 interactions")
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    step_loss = StepLoss(cfg.loss, cfg.negatives, cfg.seed, dataset)
    amp = Precision(cfg.precision, torch.device(device))
    key = f"ndcg@{cfg.k}"
    best, best_epoch, best_state, history = -1.0, 0, None, []
    sums = {"loss": 0.0, "seen": 0, "step": 0}
    saved = checkpoint.load() if checkpoint else None
    if saved:
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        amp.scaler.load_state_dict(saved["scaler"])
        best, best_epoch, best_state, history, sums = (saved["best"], saved["best_epoch"], saved["best_state"],
                                                       saved["history"], saved["sums"])
        set_rng_state(saved["rng"])  # nothing draws from the global RNG before the next step: dropout continues
    first_epoch, done = resume_point(saved)
    if saved and saved["stopped"]:
        first_epoch = cfg.epochs + 1  # the saved run had already stopped: only restore its best weights
    start = time.perf_counter()
    steps_per_epoch = math.ceil(len(inputs) / cfg.batch_size)

    def state(epoch: int, batch: int, stopped: bool = False) -> Dict:
        return {"epoch": epoch, "batch": batch, "stopped": stopped, "model": model.state_dict(),
                "optimizer": opt.state_dict(), "scaler": amp.scaler.state_dict(), "best": best,
                "best_epoch": best_epoch, "best_state": best_state, "history": history, "sums": sums,
                "rng": rng_state()}

    for epoch in range(first_epoch, cfg.epochs + 1):
        model.train()
        gen = torch.Generator().manual_seed(cfg.seed + epoch)
        reporter.epoch_start(epoch, cfg.epochs, steps_per_epoch)
        t0 = time.perf_counter()
        if not done:
            sums.update(loss=0.0, seen=0)
        for i, items, tgt in epoch_batches(model, inputs, targets, cfg.batch_size, gen, device, done):
            with amp.autocast():
                loss, loss_sum = shard_loss(step_loss, model, model, items, tgt, sums["step"])
            try:
                loss_sum, late = step_flags(loss, loss_sum, checkpoint, start, cfg.max_minutes)
            except SearchError as exc:
                raise SearchError(f"{exc} at epoch {epoch}; lower --lr") from None
            amp.step(loss, opt)
            sums["loss"] += loss_sum
            sums["seen"] += len(items)
            sums["step"] += 1
            reporter.step(loss_sum / len(items), len(items))
            if checkpoint and checkpoint.due(sums["step"]):
                checkpoint.save(state(epoch, i + 1))
            if late:
                break  # the budget is spent: validate this partial epoch and stop
        done = 0
        train_s = time.perf_counter() - t0
        valid = evaluate(model, dataset, "valid", "full", cfg.k, cfg.eval_batch_size, cfg.seed, device)
        row = {"epoch": epoch, "loss": sums["loss"] / sums["seen"], "seqs_per_s": sums["seen"] / train_s,
               "train_seconds": train_s, **{f"valid_{m}": v for m, v in valid.items()}}
        history.append(row)
        improved = valid[key] > best
        if improved:
            best, best_epoch = valid[key], epoch
            best_state = copy.deepcopy(model.state_dict())
        reporter.epoch_end(row, improved)
        stop = epoch - best_epoch >= cfg.patience or over_budget(start, cfg.max_minutes)
        if checkpoint:
            checkpoint.save(state(epoch + 1, 0, stop))
        if stop:
            break
    model.load_state_dict(best_state)
    best_row = history[best_epoch - 1]
    best_valid = {m[len("valid_"):]: v for m, v in best_row.items() if m.startswith("valid_")}
    return TrainResult(best_epoch, best_valid, history, time.perf_counter() - start)
