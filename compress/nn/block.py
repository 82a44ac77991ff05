"""The transformer layer of SASRec / BERT4Rec (post-LN, RecBole semantics) and GPT-2 (pre-LN),
sliceable by width.

post-LN:  h = LN(x + Dropout(Attn(x)));   y = LN(h + Dropout(FFN(h)))
pre-LN:   h = x + Dropout(Attn(LN(x)));   y = h + Dropout(FFN(LN(h)))
FFN(h) = W2·act(W1·h), the gates scaling W1/W2 inputs or outputs.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from compress.arch import ArchSpec, Width
from compress.nn.attention import MultiHeadAttention
from compress.nn.gates import GatePair
from compress.nn.width import layer_norm, linear

NORMS = ("post", "pre")
# The roles of a layer's parts, and where each lives in a TransformerLayer: the contract every
# adapter (declared, Hugging Face, RecBole), importance reordering and the pruning baseline read.
LAYER_PARTS = {"query": "attention.query", "key": "attention.key", "value": "attention.value",
               "output": "attention.out", "attention_norm": "attn_norm", "ffn_in": "ffn_in", "ffn_out": "ffn_out",
               "ffn_norm": "ffn_norm", "gates": "gates"}
Mix = Sequence[Tuple[Optional[torch.Tensor], Any]]  # (weight or None for a one-hot choice, the choice)
ACTIVATIONS = {"gelu": F.gelu, "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"), "relu": F.relu}


class TransformerLayer(nn.Module):
    def __init__(self, arch: ArchSpec, dropout: float, eps: float, causal: bool = True, norm: str = "post",
                 activation: str = "gelu") -> None:
        super().__init__()
        self.norm, self.act = norm, ACTIVATIONS[activation]
        self.attention = MultiHeadAttention(arch.hidden, arch.heads, arch.attention, dropout, causal)
        self.attn_norm = nn.LayerNorm(arch.hidden, eps=eps)
        self.ffn_in = nn.Linear(arch.hidden, arch.inner)
        self.ffn_out = nn.Linear(arch.inner, arch.hidden)
        self.ffn_norm = nn.LayerNorm(arch.hidden, eps=eps)
        self.gates = GatePair(arch.hidden, arch.inner, arch.gate_layers, arch.gate_placement) \
            if arch.gate_layers > 0 else None
        self.drop = nn.Dropout(dropout)
        self.full = Width(arch.hidden, arch.inner)

    def forward(self, x: torch.Tensor, valid: Optional[torch.Tensor], e: Optional[torch.Tensor] = None,
                width: Optional[Width] = None, kinds: Optional[Mix] = None, gates: Optional[Mix] = None) -> torch.Tensor:
        """x: (B, N, d_k) kept dims of the layer input; e: (B, N, d_k) embedding output for the gates.
        A supernet passes its choices: ``kinds`` of attention, ``gates`` depths (0: none), as (weight,
        choice) pairs (weight None: a one-hot choice); None is this layer's own design."""
        width = width or self.full
        x = x[..., :width.hidden]
        pre = self.norm == "pre"
        a = self.attention(layer_norm(self.attn_norm, x) if pre else x, valid, kinds, width.heads)
        h = x + self.drop(a) if pre else layer_norm(self.attn_norm, x + self.drop(a))  # (B, N, d_k)
        u = layer_norm(self.ffn_norm, h) if pre else h
        d1, d2 = self.gate_scores(e, width, gates)
        code = self.gates is None or self.gates.placement == "code"
        f = linear(self.ffn_in, u if code or d1 is None else d1 * u, width.inner)  # (B, N, D_k)
        if code and d1 is not None:
            f = d1 * f
        f = self.act(f)
        y = linear(self.ffn_out, f if code or d2 is None else d2 * f, width.hidden)  # (B, N, d_k)
        if code and d2 is not None:
            y = d2 * y
        return h + self.drop(y) if pre else layer_norm(self.ffn_norm, h + self.drop(y))

    def gate_scores(self, e: Optional[torch.Tensor], width: Width, gates: Optional[Mix]):
        """(δ1, δ2), or (None, None) for no gates; a mix of depths mixes the scores, depth 0 scoring 1."""
        if gates is None:
            gates = ((None, self.gates.depth if self.gates is not None else 0),)
        if len(gates) == 1 and gates[0][0] is None:
            depth = gates[0][1]
            return self.gates(e[..., :width.hidden], width, depth) if depth else (None, None)
        d1 = d2 = 0.0
        for weight, depth in gates:
            g1, g2 = self.gates(e[..., :width.hidden], width, depth) if depth else (1.0, 1.0)
            d1, d2 = d1 + weight * g1, d2 + weight * g2
        return d1, d2
