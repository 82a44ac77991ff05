"""FLOPs of a dense model, analytic and measured. One unit everywhere: FLOPs = 2 × multiply-adds.

The analytic count is for scoring one user: all N positions through the layers (attention needs
every position) and the full-item scoring head at the last position. ``matmul`` terms are what
``torch.utils.flop_counter.FlopCounterMode`` counts (matrix products, including both attention
products); ``elementwise`` terms (LayerNorm, activations, residual adds, softmax) are estimated at
a few FLOPs per element and reported separately so the two counts can be compared exactly.
"""
from __future__ import annotations

import math
from typing import Dict

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from compress.arch import ArchSpec
from compress.bounds import whole
from compress.errors import ConfigError
from compress.nn.attention import chunk_size
from compress.nn.modes import evaluating
from compress.runtime.devices import model_device


def attention_matmul_flops(arch: ArchSpec, n: int, causal: bool = True) -> int:
    """Both attention products for all heads: QKᵀ and AV (softmax), or the linear form (chunked when causal)."""
    h, dh = arch.heads, arch.head_dim
    if arch.attention == "softmax":
        return 4 * h * n * n * dh
    if not causal:
        return h * 4 * n * dh * dh  # KᵀV and Q·state
    c = chunk_size(n)
    chunks = math.ceil(n / c)
    state = 4 * dh * dh if chunks > 1 else 0  # per-chunk KᵀV and Q·state; a single chunk carries no state
    return h * chunks * c * (4 * c * dh + state)  # + intra-chunk QKᵀ and AV


def gate_flops(arch: ArchSpec, n: int) -> int:
    if arch.gate_layers == 0:
        return 0
    d, D = arch.hidden, arch.inner
    hidden_layers = 2 * (arch.gate_layers - 1) * 2 * n * d * d  # two gates per layer
    return hidden_layers + 2 * n * d * (D + d)  # scoring layers: one of size D, one of size d


def layer_flops(arch: ArchSpec, n: int, causal: bool = True) -> Dict[str, int]:
    d, D = arch.hidden, arch.inner
    return {"qkvo": 4 * 2 * n * d * d, "attention": attention_matmul_flops(arch, n, causal), "ffn": 2 * 2 * n * d * D,
            "gates": gate_flops(arch, n)}


def elementwise_flops(arch: ArchSpec, n: int, causal: bool = True) -> int:
    """Rough non-matmul cost: 5/element per LayerNorm, 8 per GELU, 1 per residual add, 3 per softmax
    score; linear attention: 4 per element of each feature map (elu, L2 norm, divide) on q and k, 1 per
    element for the padding mask on k and v and for the 1/√d_head scale, 1 per chunk score (the causal
    mask; a bidirectional model forms no such scores);
    gates: 1 per ReLU of their hidden layers, and per score 4 for the sigmoid, 1 for γ and 1 for the
    product that applies it. The attention kind and the gate depth are searched on this total, so no
    choice gets its elementwise work for free."""
    d, D, L = arch.hidden, arch.inner, arch.layers
    per_layer = 2 * 5 * n * d + 8 * n * D + 2 * n * d
    if arch.attention == "softmax":
        per_layer += 3 * arch.heads * n * n
    else:
        per_layer += 11 * n * d + (arch.heads * n * chunk_size(n) if causal else 0)
    if arch.gate_layers:  # two gates: L_d - 1 hidden ReLU layers of width d each, then scores of sizes D and d
        per_layer += 2 * (arch.gate_layers - 1) * n * d + 6 * n * (D + d)
    return 5 * n * d + L * per_layer


def analytic_flops(arch: ArchSpec, n: int, n_items: int, causal: bool = True) -> Dict[str, int]:
    """Breakdown and totals for one sequence of length ``n`` scored against ``n_items`` items."""
    n, n_items = whole("n", n), whole("n_items", n_items)
    per_layer = layer_flops(arch, n, causal)
    out = {k: v * arch.layers for k, v in per_layer.items()}
    out["head"] = 2 * arch.hidden * (n_items + 1)  # last position against every item row (incl. padding)
    out["matmul"] = sum(out.values())
    out["elementwise"] = elementwise_flops(arch, n, causal)
    out["total"] = out["matmul"] + out["elementwise"]
    return out


def _cpu_sdpa_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query.shape, key.shape, value.shape)


# FlopCounterMode knows the CUDA attention kernels but not the CPU flash kernel, which it would count
# as zero; teach it the same formula so CPU and GPU measurements agree.
CUSTOM_FORMULAS = {}
if hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu"):
    _cpu_sdpa_flops._get_raw = True
    CUSTOM_FORMULAS[torch.ops.aten._scaled_dot_product_flash_attention_for_cpu] = _cpu_sdpa_flops


def model_flops(model: torch.nn.Module) -> Dict[str, int]:
    """``analytic_flops`` of a dense backbone at its own N, item count and attention direction."""
    return analytic_flops(model.arch, model.max_len, model.n_items, model.causal)


def measured_flops(model: torch.nn.Module, n: int) -> int:
    """FlopCounterMode's count of ``model.predict`` on one full-length sequence."""
    if whole("n", n) > model.max_len:
        raise ConfigError(f"n {n} exceeds the {model.max_len} positions the model has; give n <= {model.max_len}")
    items = torch.randint(1, model.n_items + 1, (1, n), device=model_device(model))
    with evaluating(model), torch.no_grad(), FlopCounterMode(display=False, custom_mapping=CUSTOM_FORMULAS) as counter:
        model.predict(items)
    return int(counter.get_total_flops())


def params_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
