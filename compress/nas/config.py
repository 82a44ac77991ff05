"""The search configuration and the temperature schedule, free of torch so that options and
``--help`` load without it."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple, Union

from compress.bounds import MAX_SEED, real, whole
from compress.engine.config import KEEPS, MAX_K, MAX_LR, check_loss, check_precision
from compress.errors import ConfigError

SELECTIONS = ("gumbel", "softmax")


TAU_SCHEDULES = ("epoch", "step")
FLOPS_REFERENCES = ("input", "supernet")


@dataclass(frozen=True)
class TemperatureSchedule:
    """τ per step (the paper: τ_t = max(τ_min, start − rate·t)) or per epoch: from ``start`` at the first
    epoch down to ``minimum`` at the last, geometrically (τ_e = start·(min/start)^((e−1)/(E−1))), so a
    search of few steps anneals as a long one does."""

    start: float = 1.0
    rate: float = 5e-5
    minimum: float = 0.01
    per: str = "step"
    epochs: int = 1

    def __call__(self, step: int, epoch: int = 1) -> float:
        if self.per == "step":
            return max(self.minimum, self.start - self.rate * step)
        if self.epochs == 1:
            return self.start
        return self.start * (self.minimum / self.start) ** ((min(epoch, self.epochs) - 1) / (self.epochs - 1))


def read_budget(max_flops: Union[float, str], name: str = "max_flops") -> Tuple[float, bool]:
    """A FLOPs budget as (number, whether it is a percentage): "50%" is (50.0, True), 3e6 is (3e6, False).
    NaN, inf, zero and negative budgets are refused here, before any model is built."""
    text = str(max_flops).strip()
    percent = text.endswith("%")
    try:
        number = float(text[:-1] if percent else text) if not isinstance(max_flops, bool) else math.nan
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        shown = repr(max_flops) if len(text) <= 40 else f"{text[:20]}… ({len(text)} characters)"
        raise ConfigError(f"{name} is neither a percentage like 50% nor a finite number of FLOPs: {shown}")
    if number <= 0:
        raise ConfigError(f"{name} must be a positive number of FLOPs or a percentage like 50%, got {text!r}")
    return number, percent


ARCH_BATCHES = ("valid", "train")
DECISIONS = KEEPS  # the search decides at the epoch whose supernet its loop keeps
PENALTIES = ("dnsrec", "budget", "proxyless")
PROXYLESS_EXPONENT = 0.6  # β of ProxylessNAS's CE · (log F / log F_ref)^β
MAX_TAU = 100.0  # far above the logits' spread: τ beyond it mixes every candidate alike
MIN_TAU = 1e-4  # logits / τ stays far from float32's overflow (τ = 1e-38 made the softmax NaN mid-search)
TAU_WHY = "τ divides the controllers' logits; below 1e-4 the selection is already one-hot, and far below it overflows"
MAX_TRADEOFF = 1e6
TRADEOFF_WHY = ("λ weighs the FLOPs penalty, O(1) (a share of the reference model's FLOPs, or the distance from "
                "the budget), against the cross-entropy, about ln(item count): 1e6 already lets the penalty alone "
                "decide, and far larger values overflow the float32 α/β steps, freezing them at the widest candidate")


@dataclass
class SearchConfig:
    epochs: int = 10
    batch_size: int = 256
    lr: float = 1e-3  # weights (paper Table 2)
    arch_lr: float = 1e-2  # α/β: Adam moves logits ≈ lr per step, so 1e-3 barely moves them in 10 epochs
    arch_every: int = 1  # f; one all-position batch holds ~B·N next-item pairs, about as many as 10 of the
    # paper's per-prefix batches, so f=1 here matches the paper's f=10 in α/β steps per training pair
    tradeoff: float = 0.1  # λ (paper); the official code uses 0.01
    selection: str = "gumbel"  # paper; "softmax" = the official code's tempered softmax without noise
    arch_batches: str = "valid"  # paper; "train" = the official code's current training batch
    tau_start: float = 1.0
    tau_rate: float = 5e-5
    tau_min: float = 0.01
    tau_schedule: str = "epoch"  # τ annealed over the epochs; "step": the paper's per-step schedule (tau_rate)
    max_flops: Optional[Union[float, str]] = None  # "50%" of the reference model, or absolute FLOPs
    flops_reference: str = "input"  # what "50%" and the penalty's normalisation refer to: the dense input
    # model (what a user compares with) or the full "supernet" (the paper's normalisation)
    patience: int = 10
    seed: int = 2024
    k: int = 10
    max_minutes: Optional[float] = None  # wall-clock budget: stop at the step that exceeds it, after validating
    loss: str = "full"  # the weight steps' loss: full softmax, or sampled "uniform" / "inbatch"
    negatives: int = 100
    precision: str = "fp32"  # autocast of the weight steps: fp32, bf16 or fp16 (CUDA); α/β steps stay fp32
    penalty: str = "dnsrec"  # CE + λ·L_RC (paper); "budget": CE + λ·|E[F]/B − 1|, pulled to the max_flops
    # budget B from both sides (TuNAS); or "proxyless": CE · (log F / log F_ref)^0.6, F_ref the hard budget
    # when one is given, else the flops_reference model's FLOPs (the input model by default); λ is unused
    # there (ProxylessNAS, Cai et al. 2019)
    compile: bool = False  # torch.compile the supernet's training forward
    recompute: bool = False  # recompute each width's layer activations in the backward pass (memory, not results)
    decide: str = "best"  # whose controllers decide, and whose weights the supernet keeps: the best validation
    # epoch's (paper), or the "last" epoch's, where a pull to the budget has run its course

    def __post_init__(self) -> None:
        check_loss(self.loss, self.negatives)
        check_precision(self.precision)
        if self.selection not in SELECTIONS:
            raise ConfigError(f"unknown selection {self.selection!r}; choose gumbel or softmax")
        if self.penalty not in PENALTIES:
            raise ConfigError(f"unknown penalty {self.penalty!r}; choose dnsrec, budget or proxyless")
        if self.penalty == "budget" and self.max_flops is None:
            raise ConfigError("penalty budget pulls the expected FLOPs to the max_flops budget (--max-flops); "
                              "give one, e.g. 50%, or choose penalty dnsrec")
        if self.decide not in DECISIONS:
            raise ConfigError(f"unknown decide {self.decide!r}; choose best or last")
        if self.arch_batches not in ARCH_BATCHES:
            raise ConfigError(f"unknown arch_batches {self.arch_batches!r}; choose valid or train")
        for name in ("epochs", "batch_size", "arch_every", "patience"):
            whole(name, getattr(self, name))
        whole("k", self.k, maximum=MAX_K)
        whole("seed", self.seed, 0, MAX_SEED)
        real("lr", self.lr, above=0.0, high=MAX_LR)
        real("arch_lr", self.arch_lr, above=0.0, high=MAX_LR)
        real("tradeoff λ", self.tradeoff, low=0.0, high=MAX_TRADEOFF, why=TRADEOFF_WHY)
        real("tau_start", self.tau_start, low=MIN_TAU, high=MAX_TAU, why=TAU_WHY)
        real("tau_rate", self.tau_rate, low=0.0, high=1.0)
        real("tau_min", self.tau_min, low=MIN_TAU, high=MAX_TAU, why=TAU_WHY)
        if self.tau_start < self.tau_min:
            raise ConfigError(f"tau_start {self.tau_start:g} is below tau_min {self.tau_min:g}: τ falls from "
                              "tau_start to tau_min; raise tau_start or lower tau_min")
        if self.max_minutes is not None:
            real("max_minutes", self.max_minutes, above=0.0)
        if self.max_flops is not None:
            read_budget(self.max_flops)
        if self.tau_schedule not in TAU_SCHEDULES:
            raise ConfigError(f"unknown tau_schedule {self.tau_schedule!r}; choose epoch or step")
        if self.flops_reference not in FLOPS_REFERENCES:
            raise ConfigError(f"unknown flops_reference {self.flops_reference!r}; choose input or supernet")

    def schedule(self) -> TemperatureSchedule:
        return TemperatureSchedule(self.tau_start, self.tau_rate, self.tau_min, self.tau_schedule, self.epochs)
