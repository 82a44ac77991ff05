"""The zero-mask helpers around a ``Width`` (the kept leading dimensions of a candidate)."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


def linear(layer: nn.Linear, x: torch.Tensor, out: Optional[int] = None) -> torch.Tensor:
    """``layer`` restricted to its leading ``x.shape[-1]`` inputs and ``out`` outputs."""
    d_in = x.shape[-1]
    w = layer.weight[:out, :d_in] if (out is not None or d_in != layer.in_features) else layer.weight
    b = layer.bias[:out] if (layer.bias is not None and out is not None) else layer.bias
    return F.linear(x, w, b)


def layer_norm(ln: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    """LayerNorm whose statistics cover only the kept (leading ``x.shape[-1]``) dimensions."""
    d = x.shape[-1]
    if d == ln.normalized_shape[0]:  # full width: the plain op (which ONNX export traces cleanly)
        return F.layer_norm(x, ln.normalized_shape, ln.weight, ln.bias, ln.eps)
    return F.layer_norm(x, (d,), ln.weight[:d], ln.bias[:d], ln.eps)


def zero_pad(x: torch.Tensor, size: int) -> torch.Tensor:
    """Place the kept dimensions back into a ``size``-wide tensor, zeros on the trailing ones."""
    return x if x.shape[-1] == size else F.pad(x, (0, size - x.shape[-1]))


def head_block(t: torch.Tensor, axis: int, head_dim: int, heads: int, kept: int) -> torch.Tensor:
    """Along ``axis`` (blocks of ``head_dim``, one per head), the leading ``kept`` entries of each of the
    leading ``heads`` heads: a candidate's query/key/value rows or output-projection columns. With
    ``kept == head_dim`` that is the leading ``heads · head_dim`` entries (whole heads)."""
    blocks = t.unflatten(axis, (-1, head_dim))  # (..., H, head_dim, ...)
    return blocks.narrow(axis, 0, heads).narrow(axis + 1, 0, kept).flatten(axis, axis + 1)
