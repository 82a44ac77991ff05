"""The training configuration, free of torch so that options and ``--help`` load without it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from compress.bounds import MAX_SEED, real, whole
from compress.errors import ConfigError

LOSSES = ("full", "uniform", "inbatch")
PRECISIONS = ("fp32", "bf16", "fp16")
MAX_NEGATIVES = 1_000_000
MAX_K = 10_000
MAX_LR = 10.0  # Adam moves each parameter by about lr a step; logits and weights are O(1)
KEEPS = ("best", "last")  # the epoch whose state a loop returns: the best validation epoch's, or the last one's


def check_loss(kind: str, n_negatives: int) -> None:
    """A loss name and negative count a training configuration may hold."""
    if kind not in LOSSES:
        raise ConfigError(f"unknown loss {kind!r}; choose one of {', '.join(LOSSES)}")
    whole("negatives", n_negatives, maximum=MAX_NEGATIVES)


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
        for name in ("epochs", "batch_size", "patience", "eval_batch_size"):
            whole(name, getattr(self, name))
        whole("k", self.k, maximum=MAX_K)
        whole("seed", self.seed, 0, MAX_SEED)
        real("lr", self.lr, above=0.0, high=MAX_LR)
        real("weight_decay", self.weight_decay, low=0.0, high=1.0)
        if self.max_minutes is not None:
            real("max_minutes", self.max_minutes, above=0.0)
        real("distill", self.distill, low=0.0, high=1.0)
        real("distill_temperature", self.distill_temperature, above=0.0, high=100.0)
        if self.distill > 0 and self.loss != "full":
            raise ConfigError(f"distill compares the scores of every item with the teacher's, which loss "
                              f"{self.loss!r} never computes; use loss full, or distill 0")
