"""The training configuration, free of torch so that options and ``--help`` load without it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from compress.errors import ConfigError

LOSSES = ("full", "uniform", "inbatch")
PRECISIONS = ("fp32", "bf16", "fp16")
KEEPS = ("best", "last")  # the epoch whose state a loop returns: the best validation epoch's, or the last one's


def check_loss(kind: str, n_negatives: int) -> None:
    """A loss name and negative count a training configuration may hold."""
    if kind not in LOSSES:
        raise ConfigError(f"unknown loss {kind!r}; choose one of {', '.join(LOSSES)}")
    if n_negatives < 1:
        raise ConfigError(f"negatives must be >= 1, got {n_negatives}")


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")


@dataclass
class TrainConfig:
    epochs: int = 50
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
    compile: bool = False  # torch.compile the training forward (pays on GPUs for long runs)
    distill: float = 0.0  # w: (1 − w)·CE + w·T²·KL(teacher ‖ model), the teacher given to ``fit``
    distill_temperature: float = 1.0  # T of the distillation's softened distributions

    def __post_init__(self) -> None:
        check_loss(self.loss, self.negatives)
        check_precision(self.precision)
        if not 0.0 <= self.distill <= 1.0:
            raise ConfigError(f"distill must be in [0, 1] (the distillation's share of the loss), got {self.distill}")
        if not 0.0 < self.distill_temperature < float("inf"):
            raise ConfigError(f"distill_temperature must be a positive number, got {self.distill_temperature}")
        if self.distill > 0 and self.loss != "full":
            raise ConfigError(f"distill compares the scores of every item with the teacher's, which loss "
                              f"{self.loss!r} never computes; use loss full, or distill 0")
        for name in ("epochs", "batch_size", "patience", "k", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
