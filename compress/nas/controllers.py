"""Bilevel controllers: α over width candidates (one for all layers) and β over exit depths.

Selection turns logits into weights: Gumbel-softmax (paper Eq. 9) or tempered softmax without noise
(official code). The temperature follows τ_t = max(τ_min, 1 − rate·t).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from compress.errors import ConfigError
from compress.nas.config import SELECTIONS


class Controller(nn.Module):
    """Architecture logits over ``n`` choices; zero init = uniform preference."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(n))

    def sample(self, tau: float, selection: str, generator: Optional[torch.Generator] = None,
               uniforms: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Soft selection weights (n,) summing to 1; Gumbel noise only under ``selection='gumbel'``, from
        ``uniforms`` (n,) drawn already (on the logits' device), or drawn on the host with ``generator``."""
        if selection not in SELECTIONS:
            raise ConfigError(f"unknown selection {selection!r}; choose gumbel or softmax")
        logits = self.logits
        if selection == "gumbel":
            u = uniforms if uniforms is not None else torch.rand(logits.shape, generator=generator)
            u = u.to(logits.device).clamp(1e-10, 1.0 - 1e-10)
            logits = logits - torch.log(-torch.log(u))
        return F.softmax(logits / tau, dim=0)

    def probs(self) -> torch.Tensor:
        return F.softmax(self.logits.detach(), dim=0)

    def choice(self) -> int:
        return int(self.logits.detach().argmax())


def one_hot(index: int, n: int, device=None) -> torch.Tensor:
    w = torch.zeros(n, device=device)
    w[index] = 1.0
    return w
