"""Data-aware gates (DNS-Rec §2.5): G(X) = γ·sigmoid(MLP(X)), X = the embedding output E.

Each transformer layer owns one pair of gates; their scores δ1, δ2 multiply into the feed-forward
network. ``placement="code"`` (the official code, default) scales the output of FFN dense-1 before
GELU (δ1, size D) and the output of dense-2 (δ2, size d); ``placement="paper"`` (Eq. 8) scales the
inputs of dense-1 (δ1, size d) and dense-2 (δ2, size D). ``depth`` is the paper's number of gate
layers L_d: L_d − 1 hidden ReLU layers of width d, then the scoring layer.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from compress.arch import Width
from compress.nn.width import linear

GAMMA = 2.0


class Gate(nn.Module):
    def __init__(self, hidden: int, out: int, depth: int) -> None:
        super().__init__()
        self.hidden_layers = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(depth - 1))
        self.score = nn.Linear(hidden, out)

    def forward(self, x: torch.Tensor, out: int, depth: Optional[int] = None) -> torch.Tensor:
        """x: (B, N, d_k) kept embedding dims; returns δ: (B, N, out) in (0, γ). ``depth`` (default: all)
        uses the first depth − 1 hidden layers, so a shallower gate is a prefix of a deeper one."""
        for layer in self.hidden_layers[:None if depth is None else depth - 1]:
            x = torch.relu(linear(layer, x, x.shape[-1]))
        return GAMMA * torch.sigmoid(linear(self.score, x, out))


class GatePair(nn.Module):
    """δ1 and δ2 of one layer, sized for ``placement``."""

    def __init__(self, hidden: int, inner: int, depth: int, placement: str) -> None:
        super().__init__()
        self.placement, self.depth = placement, depth
        sizes = (inner, hidden) if placement == "code" else (hidden, inner)
        self.first = Gate(hidden, sizes[0], depth)
        self.second = Gate(hidden, sizes[1], depth)

    def forward(self, e: torch.Tensor, width: Width, depth: Optional[int] = None):
        sizes = (width.inner, width.hidden) if self.placement == "code" else (width.hidden, width.inner)
        return self.first(e, sizes[0], depth), self.second(e, sizes[1], depth)
