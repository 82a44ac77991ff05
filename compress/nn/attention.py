"""Multi-head attention: softmax (SASRec) or linear attention (LinRec, as DNS-Rec uses it).

Linear attention follows LinRec's released computation, q̂ = elu(Q)/‖elu(Q)‖₂ and
k̂ = elu(K)/‖elu(K)‖₂ per token over the head dimension, out = q̂ (k̂ᵀV)/√d_head, but made causal
(position t sees k̂_j v_jᵀ for j ≤ t only) and blind to padding, which the released code is not.
The causal sum is computed in chunks: quadratic inside a chunk, a running d_head × d_head state
across chunks, so the cost is O(N·(C + d_head)·d_head) instead of O(N²·d_head). Bidirectional
models (BERT4Rec) use the plain form over the real positions, O(N·d_head²).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from compress.nn.width import head_block, linear

NORM_EPS = 1e-6
MAX_CHUNK = 64


def chunk_size(n: int) -> int:
    """Chunk length for an N-long sequence: at most 64, chosen so that N pads by as little as possible."""
    chunks = math.ceil(n / MAX_CHUNK)
    return math.ceil(n / chunks)


def linear_feature(x: torch.Tensor) -> torch.Tensor:
    """elu(x) scaled to unit L2 norm over the last (head) dimension; ε keeps all-zero rows at zero."""
    x = F.elu(x)
    return x / (x.norm(dim=-1, keepdim=True) + NORM_EPS)


def causal_linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                            valid: Optional[torch.Tensor] = None) -> torch.Tensor:
    """q, k, v: (B, H, N, dh) raw projections; valid: (B, N) bool, False at padding. Returns (B, H, N, dh)."""
    b, h, n, dh = q.shape
    q, k = linear_feature(q), linear_feature(k)
    if valid is not None:
        keep = valid[:, None, :, None].to(k.dtype)
        k, v = k * keep, v * keep  # padding contributes nothing to any state
    c = chunk_size(n)
    pad = (-n) % c
    if pad:
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
    m = (n + pad) // c
    q, k, v = (t.reshape(b, h, m, c, dh) for t in (q, k, v))  # (B, H, M, C, dh)
    scores = (q @ k.transpose(-1, -2)).tril()  # (B, H, M, C, C), causal inside the chunk
    intra = scores @ v
    if m == 1:  # N ≤ 64: one chunk, no earlier chunk whose state it would add (the quadratic form alone)
        return (intra / math.sqrt(dh)).reshape(b, h, c, dh)[:, :, :n]
    kv = k.transpose(-1, -2) @ v  # (B, H, M, dh, dh), one state per chunk
    # exclusive prefix (chunks strictly before) by shifting, not cumsum − kv: the subtraction's rounding
    # would let a chunk's own (future) keys leak into its state and cancel badly when they are large
    state = F.pad(kv.cumsum(dim=2)[:, :, :-1], (0, 0, 0, 0, 1, 0))
    out = (intra + q @ state) / math.sqrt(dh)
    return out.reshape(b, h, m * c, dh)[:, :, :n]


def bidirectional_linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                   valid: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Every position sees every real position: q̂ (k̂ᵀV)/√d_head. q, k, v: (B, H, N, dh)."""
    q, k = linear_feature(q), linear_feature(k)
    if valid is not None:
        keep = valid[:, None, :, None].to(k.dtype)
        k, v = k * keep, v * keep
    state = k.transpose(-1, -2) @ v  # (B, H, dh, dh)
    return (q @ state) / math.sqrt(q.shape[-1])


def softmax_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, valid: Optional[torch.Tensor],
                      causal: bool, dropout: float) -> torch.Tensor:
    """Scaled dot-product attention; each query also sees itself so no row is fully masked."""
    n = q.shape[-2]
    mask = None
    if causal or valid is not None:
        mask = torch.ones(n, n, dtype=torch.bool, device=q.device)
        if causal:
            mask = mask.tril()
        if valid is not None:
            pos = torch.arange(n, device=q.device)
            eye = pos[:, None] == pos  # not torch.eye: its ONNX form (EyeLike) has no bool kernel in onnxruntime
            mask = (mask & valid[:, None, None, :]) | eye  # (B, 1, N, N)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)


class MultiHeadAttention(nn.Module):
    """q/k/v/out projections around softmax or linear attention; ``head_dim`` is the full head width."""

    def __init__(self, hidden: int, heads: int, kind: str, dropout: float, causal: bool = True) -> None:
        super().__init__()
        self.head_dim = hidden // heads
        self.kind, self.dropout, self.causal = kind, dropout, causal
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor, valid: Optional[torch.Tensor],
                kinds: Optional[Sequence[Tuple[Optional[torch.Tensor], str]]] = None,
                heads: Optional[int] = None) -> torch.Tensor:
        """x: (B, N, d_k), the kept width; returns (B, N, d_k).

        ``heads`` (a supernet's width candidate): that many heads of d_k / heads dimensions, the leading
        ones of each full head; None: whole heads of head_dim (d_k a multiple of it), the leading ones.
        ``kinds`` (a supernet's attention choice): pairs (weight, kind) whose weighted sum of attention
        outputs passes the output projection, one shared set of projections for every kind; a weight of
        None is a one-hot choice (computed alone, no multiply). None: this layer's own kind."""
        b, n, d = x.shape
        heads = heads or d // self.head_dim
        dh = d // heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, n, heads, dh).transpose(1, 2)  # (B, h, N, dh)

        q, k, v = (split(self.project(p, x, heads, dh)) for p in (self.query, self.key, self.value))
        y = None
        for weight, kind in kinds or ((None, self.kind),):
            y_kind = self.attend(kind, q, k, v, valid)  # (B, h, N, dh)
            y_kind = y_kind if weight is None else weight * y_kind
            y = y_kind if y is None else y + y_kind
        y = y.transpose(1, 2).reshape(b, n, d)  # (B, N, d_k)
        if dh == self.head_dim:
            return linear(self.out, y, d)
        return F.linear(y, head_block(self.out.weight, 1, self.head_dim, heads, dh)[:d], self.out.bias[:d])

    def project(self, layer: nn.Linear, x: torch.Tensor, heads: int, dh: int) -> torch.Tensor:
        """Query, key or value of x (B, N, d_k) for ``heads`` heads of ``dh`` dims -> (B, N, heads·dh)."""
        d = x.shape[-1]
        if dh == self.head_dim:  # whole heads: the leading rows
            return linear(layer, x, d)
        return F.linear(x, head_block(layer.weight, 0, self.head_dim, heads, dh)[:, :d],
                        head_block(layer.bias, 0, self.head_dim, heads, dh))

    def attend(self, kind: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               valid: Optional[torch.Tensor]) -> torch.Tensor:
        if kind == "linear":
            return (causal_linear_attention if self.causal else bidirectional_linear_attention)(q, k, v, valid)
        return softmax_attention(q, k, v, valid, self.causal, self.dropout if self.training else 0.0)


