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

from compress.data.dataset import SequenceDataset
from compress.errors import ConfigError, SearchError
from compress.evaluation import evaluate
from compress.objectives import training_batch, training_data
from compress.progress import NullReporter, Reporter


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

    def __post_init__(self) -> None:
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


def over_budget(start: float, max_minutes: Optional[float]) -> bool:
    return max_minutes is not None and time.perf_counter() - start > 60.0 * max_minutes


def next_item_loss(h: torch.Tensor, targets: torch.Tensor, score: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Mean CE over every real position. h: (B, N, d); targets: (B, N), 0 = padding."""
    real = targets > 0
    return F.cross_entropy(score(h[real]), targets[real])  # score: (M, d) -> (M, n_items + 1)


def batches(inputs: torch.Tensor, targets: torch.Tensor, batch_size: int,
            gen: torch.Generator) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
    order = torch.randperm(len(inputs), generator=gen)
    for lo in range(0, len(order), batch_size):
        idx = order[lo:lo + batch_size]
        yield inputs[idx], targets[idx]


def fit(model: nn.Module, dataset: SequenceDataset, cfg: TrainConfig, device: torch.device,
        reporter: Optional[Reporter] = None) -> TrainResult:
    """Train ``model`` in place; on return it holds the weights of the best validation epoch."""
    reporter = reporter or NullReporter()
    torch.manual_seed(cfg.seed)
    model.to(device)
    inputs, targets = training_data(model, dataset.train_sequences())
    if len(inputs) == 0:
        raise ConfigError("no training pairs: every user has fewer than 4 interactions")
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    key = f"ndcg@{cfg.k}"
    best, best_epoch, best_state, history = -1.0, 0, None, []
    start = time.perf_counter()
    steps_per_epoch = math.ceil(len(inputs) / cfg.batch_size)
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        gen = torch.Generator().manual_seed(cfg.seed + epoch)
        reporter.epoch_start(epoch, cfg.epochs, steps_per_epoch)
        t0, total, seen = time.perf_counter(), 0.0, 0
        for items, tgt in batches(inputs, targets, cfg.batch_size, gen):
            items, tgt = (t.to(device) for t in training_batch(model, items, tgt, gen))
            loss = next_item_loss(model(items), tgt, model.score)
            if not torch.isfinite(loss):
                raise SearchError(f"loss became {loss.item()} at epoch {epoch}; lower --lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(items)
            seen += len(items)
            reporter.step(loss.item(), len(items))
            if over_budget(start, cfg.max_minutes):
                break  # the budget is spent: validate this partial epoch and stop
        train_s = time.perf_counter() - t0
        valid = evaluate(model, dataset, "valid", "full", cfg.k, cfg.eval_batch_size, cfg.seed, device)
        row = {"epoch": epoch, "loss": total / seen, "seqs_per_s": seen / train_s, "train_seconds": train_s,
               **{f"valid_{m}": v for m, v in valid.items()}}
        history.append(row)
        improved = valid[key] > best
        if improved:
            best, best_epoch = valid[key], epoch
            best_state = copy.deepcopy(model.state_dict())
        reporter.epoch_end(row, improved)
        if epoch - best_epoch >= cfg.patience or over_budget(start, cfg.max_minutes):
            break
    model.load_state_dict(best_state)
    best_row = history[best_epoch - 1]
    best_valid = {m[len("valid_"):]: v for m, v in best_row.items() if m.startswith("valid_")}
    return TrainResult(best_epoch, best_valid, history, time.perf_counter() - start)
