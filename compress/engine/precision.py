"""Mixed precision for the weight steps: ``fp32`` (default), ``bf16`` (CPU or CUDA autocast) or
``fp16`` (CUDA autocast with a gradient scaler, which fp16's narrow range needs). Parameters,
optimiser states, the α/β steps and evaluation stay in float32."""
from __future__ import annotations

import contextlib
from typing import ContextManager, Optional

import torch

from compress.engine.config import check_precision
from compress.errors import ConfigError
from compress.runtime import distributed


class Precision:
    """The autocast context and gradient scaler of one training loop."""

    def __init__(self, precision: str, device: torch.device) -> None:
        check_precision(precision)
        if precision == "fp16" and device.type != "cuda":
            raise ConfigError("`precision` fp16 needs a CUDA device; use bf16 on CPU")
        self.precision, self.device = precision, device
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")

    def autocast(self) -> ContextManager:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def step(self, loss: Optional[torch.Tensor], opt: torch.optim.Optimizer) -> None:
        """zero_grad, backward (scaled for fp16), the gradients summed over the ranks of a distributed
        run, and the optimiser step. ``loss`` is None on a rank whose share of the batch is empty."""
        opt.zero_grad(set_to_none=True)
        if loss is not None:
            self.scaler.scale(loss).backward()
        distributed.sum_gradients(p for group in opt.param_groups for p in group["params"])
        self.scaler.step(opt)
        self.scaler.update()
