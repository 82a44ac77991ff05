"""Structured pruning of a trained dense model with Torch-Pruning, to a FLOPs target.

This is the classic baseline DNS-Rec is compared with: take the trained dense model, remove the
least important channels with one uniform ratio in every layer (depth is kept), then fine-tune.

Torch-Pruning's ``DependencyGraph`` cannot trace ``SequenceTransformer`` itself: its layers call
``F.linear`` on slices of their weights (that is what makes width search and exact slicing
possible), so the graph sees no module calls and finds nothing to prune. We therefore hand
Torch-Pruning a plain mirror with the same parameter names that calls its ``nn.Linear``,
``nn.LayerNorm`` and ``nn.Embedding`` modules directly (and scores with the tied item embedding),
let ``tp.pruner.MetaPruner`` with ``GroupMagnitudeImportance(p=2)`` prune it (residual channels,
per-head dimensions and FFN channels, coupled as its graph finds them), and load the pruned
tensors into a rebuilt ``SequenceTransformer`` of the pruned shape, strictly, by name.

Attention can shrink two ways. By default (``heads="keep"``, Torch-Pruning's default) every head
keeps its place and loses dimensions; with ``heads="prune"`` whole heads go and the kept ones keep
their width, which is how DNS-Rec's width choices slice attention, so the baseline can stand at the
very shape (and FLOPs) of a decision: the softmax's elementwise work grows with the head count.
These are the search space's ``head_pruning`` "dims" and "whole" (compress/nas/space.py), under the
names the suite's cell keys were first written with.
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Dict, List, Tuple

import torch
from torch import nn

from compress.arch import ArchSpec
from compress.backbones.transformer import MODEL_PARTS
from compress.errors import ConfigError
from compress.measure.flops import analytic_flops
from compress.nn.attention import softmax_attention
from compress.nn.block import ACTIVATIONS, LAYER_PARTS

ROUND_TO = 8
HEAD_MODES = ("keep", "prune")  # per-head dimensions pruned, or whole heads


def _torch_pruning():
    try:
        import torch_pruning as tp
    except ImportError:
        raise ConfigError("the Torch-Pruning baseline needs torch-pruning: pip install torch-pruning") from None
    return tp


def _put(root: nn.Module, path: str, module: nn.Module) -> None:
    """Place ``module`` at dotted ``path`` under ``root``, creating plain containers on the way."""
    *parents, name = path.split(".")
    for part in parents:
        if not hasattr(root, part):
            root.add_module(part, nn.Module())
        root = getattr(root, part)
    root.add_module(name, module)


class _PlainLayer(nn.Module):
    """A post-LN transformer layer calling its modules directly, so Torch-Pruning can trace it; its
    parts sit where a TransformerLayer keeps them (``LAYER_PARTS``), so the parameter names match."""

    def __init__(self, arch: ArchSpec, eps: float, causal: bool, activation: str) -> None:
        super().__init__()
        self.heads, self.causal, self.act = arch.heads, causal, ACTIVATIONS[activation]
        d, inner = arch.hidden, arch.inner
        for role, module in (("query", nn.Linear(d, d)), ("key", nn.Linear(d, d)), ("value", nn.Linear(d, d)),
                             ("output", nn.Linear(d, d)), ("attention_norm", nn.LayerNorm(d, eps=eps)),
                             ("ffn_in", nn.Linear(d, inner)), ("ffn_out", nn.Linear(inner, d)),
                             ("ffn_norm", nn.LayerNorm(d, eps=eps))):
            _put(self, LAYER_PARTS[role], module)

    def part(self, role: str) -> nn.Module:
        return self.get_submodule(LAYER_PARTS[role])

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = (self.part(r)(x).view(b, n, self.heads, -1).transpose(1, 2) for r in ("query", "key", "value"))
        y = softmax_attention(q, k, v, valid, self.causal, 0.0).transpose(1, 2).reshape(b, n, -1)  # (B, N, d)
        h = self.part("attention_norm")(x + self.part("output")(y))
        return self.part("ffn_norm")(h + self.part("ffn_out")(self.act(self.part("ffn_in")(h))))


class _PlainMirror(nn.Module):
    """The same computation as a softmax, gate-free, post-LN ``SequenceTransformer`` (eval mode),
    with the same parameter names."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        arch, style = model.arch, model.style
        if arch.attention != "softmax" or arch.gate_layers or style.norm != "post" or style.final_norm \
                or not style.embedding_norm:
            raise ConfigError("Torch-Pruning baseline: prune a dense post-LN model with softmax attention and "
                              f"no gates (SASRec, BERT4Rec); got {arch.attention} attention, "
                              f"{arch.gate_layers} gate layers, {style.norm}-LN")
        for role, module in (("item_embedding", nn.Embedding(*model.item_embedding.weight.shape, padding_idx=0)),
                             ("position_embedding", nn.Embedding(*model.position_embedding.weight.shape)),
                             ("embedding_norm", nn.LayerNorm(arch.hidden, eps=model.layer_norm_eps)),
                             ("layers", nn.ModuleList(_PlainLayer(arch, model.layer_norm_eps, style.causal,
                                                                  style.activation) for _ in range(arch.layers)))):
            _put(self, MODEL_PARTS[role], module)
        self.load_state_dict(model.state_dict(), strict=True)

    def part(self, role: str) -> nn.Module:
        return self.get_submodule(MODEL_PARTS[role])

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        """items (B, N) -> hidden states (B, N, d)."""
        pos = torch.arange(items.shape[1], device=items.device)
        x = self.part("embedding_norm")(self.part("item_embedding")(items) + self.part("position_embedding")(pos))
        valid = items > 0
        for layer in self.part("layers"):
            x = layer(x, valid)
        return x

    def scores(self, items: torch.Tensor) -> torch.Tensor:
        """Last-position logits through the tied item embedding, so the graph couples the head too."""
        return self(items)[:, -1] @ self.part("item_embedding").weight.T


def _ratio(model: nn.Module, hidden: int) -> float:
    """The uniform ratio at which Torch-Pruning keeps exactly ``hidden`` residual channels, ``hidden /
    heads`` dims per head and ``inner · hidden / d`` FFN channels: it keeps ``int(n · (1 − ratio))``
    of n channels, so the kept share is nudged up by a hair that truncation then removes."""
    return 1.0 - (hidden + 1e-6) / model.arch.hidden


def _check_heads(heads: str) -> None:
    if heads not in HEAD_MODES:
        raise ConfigError(f"unknown head pruning {heads!r}; choose one of {', '.join(HEAD_MODES)}")


def pruned_arch(model: nn.Module, hidden: int, heads: str = "keep") -> ArchSpec:
    """The shape Torch-Pruning gives ``model`` at the uniform ratio that keeps ``hidden`` channels:
    as many heads of fewer dimensions (``heads="keep"``) or fewer heads of as many (``"prune"``)."""
    inner = int(model.arch.inner * (1.0 - _ratio(model, hidden)))
    n_heads = model.arch.heads if heads == "keep" else hidden // model.arch.head_dim
    return replace(model.arch, hidden=hidden, inner=max(inner, 1), heads=n_heads)


def hidden_choices(model: nn.Module, heads: str = "keep") -> List[int]:
    """Kept residual widths a uniform ratio may give, smallest first: multiples of 8 and of the head
    count (so every head keeps as many dims), or with whole heads pruned, of the head width."""
    _check_heads(heads)
    step = math.lcm(ROUND_TO, model.arch.heads if heads == "keep" else model.arch.head_dim)
    return list(range(step, model.arch.hidden + 1, step))


def _head_options(model: nn.Module, hidden: int, heads: str) -> Dict[str, object]:
    """MetaPruner's attention arguments: head dims pruned at the uniform ratio, or whole heads at the
    share that keeps ``hidden // head_dim`` of them (nudged down a hair: Torch-Pruning removes
    ``ceil(ratio · heads)`` heads)."""
    if heads == "keep":
        return {}
    drop = model.arch.heads - hidden // model.arch.head_dim
    return {"prune_num_heads": True, "prune_head_dims": False, "head_pruning_ratio": (drop - 1e-6) / model.arch.heads}


def tp_prune(model: nn.Module, hidden: int, heads: str = "keep") -> nn.Module:
    """A copy of ``model`` pruned by Torch-Pruning at the uniform ratio that keeps ``hidden`` residual
    channels: magnitude group importance (p=2), the same ratio for residual channels, attention (per-head
    dimensions, or whole heads with ``heads="prune"``) and FFN channels, depth kept. ``model`` itself is
    not modified."""
    tp = _torch_pruning()
    if hidden not in hidden_choices(model, heads):
        raise ConfigError(f"cannot keep {hidden} hidden channels of {model.arch.hidden}; "
                          f"choose one of {hidden_choices(model, heads)}")
    device = next(model.parameters()).device
    mirror = _PlainMirror(model).to(device).eval()
    layers = mirror.part("layers")
    qkv = {layer.part(role): model.arch.heads for layer in layers for role in ("query", "key", "value")}
    example = torch.randint(1, model.n_items + 1, (2, model.max_len), device=device)
    ratio = _ratio(model, hidden)
    if ratio > 0:
        tp.pruner.MetaPruner(mirror, example, importance=tp.importance.GroupMagnitudeImportance(p=2),
                             pruning_ratio=ratio, num_heads=qkv, forward_fn=lambda m, x: m.scores(x),
                             **_head_options(model, hidden, heads)).step()
    arch = pruned_arch(model, hidden, heads)
    got = {(layer.part("query").out_features, layer.part("ffn_in").out_features) for layer in layers}
    kept = mirror.part("embedding_norm").normalized_shape[0]
    if kept != arch.hidden or got != {(arch.hidden, arch.inner)}:
        raise ConfigError(f"Torch-Pruning kept {kept} hidden channels and "
                          f"(attention, FFN) widths {sorted(got)}, not {arch.hidden} / {arch.inner}; "
                          "this torch-pruning version counts channels differently")
    pruned = model.rebuilt(arch).to(device)
    pruned.load_state_dict(mirror.state_dict(), strict=True)
    return pruned


def prune_to_flops(model: nn.Module, target_flops: float, floor: bool = False,
                   heads: str = "keep") -> Tuple[nn.Module, float]:
    """(pruned copy, ratio): the smallest uniform ratio whose pruned model's analytic FLOPs
    (``compress.measure.flops``) are at most ``target_flops``, found by bisection over the kept widths.
    Width pruning keeps the depth, so a target below the narrowest model is out of its reach: an error,
    or with ``floor`` the narrowest model (a comparison then shows the baseline where it can stand).
    ``heads`` says how attention shrinks (``tp_prune``)."""
    def fits(hidden: int) -> bool:
        arch = pruned_arch(model, hidden, heads)
        return analytic_flops(arch, model.max_len, model.n_items, model.causal)["total"] <= target_flops

    choices = hidden_choices(model, heads)
    if not fits(choices[0]):
        if floor:
            return tp_prune(model, choices[0], heads), max(0.0, _ratio(model, choices[0]))
        raise ConfigError(f"cannot prune to {target_flops:,.0f} FLOPs: even {choices[0]} hidden channels cost more")
    low, high = 0, len(choices) - 1  # choices[low] fits; find the widest that does
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if fits(choices[mid]) else (low, mid - 1)
    return tp_prune(model, choices[low], heads), max(0.0, _ratio(model, choices[low]))
