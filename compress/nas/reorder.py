"""Channel-importance reordering before width search.

A narrower candidate keeps the *leading* hidden dims, heads and FFN inner dims of every weight
(compress/nn/width.py), so before searching we permute channels so that the important ones come
first. Every permutation is applied to all the parameter slices coupled to it, which leaves the
full-width model's scores unchanged:

- one residual-stream permutation of d, shared by the embeddings, every norm and every layer's
  input and output (LayerNorm is invariant under a joint permutation of its input and weight/bias;
  the scoring head is tied to the item embedding, so permuting its columns permutes h consistently);
- per layer, a permutation of whole heads (blocks of ``head_dim`` rows of query/key/value, columns
  of out): a narrower hidden size keeps the leading heads, so heads are ordered per layer on their own;
  where heads are narrowed instead (``head_pruning="dims"``), every head keeps its place and its own
  dimensions are ordered (one permutation per head for its query, key and value rows and output
  columns, so q·k and the value path are unchanged);
- per layer, a permutation of the FFN inner dim D (rows of ffn_in, columns of ffn_out, gate outputs of size D).

Importance follows Torch-Pruning's group criteria (``tp.importance.GroupMagnitudeImportance`` with
p=2 and ``tp.importance.GroupTaylorImportance``): a channel's score is summed over every parameter
slice coupled to it. The coupling is read from the parameter names alone (``_RULES``), so a model
with other names fails loudly instead of being permuted half-way.
"""
from __future__ import annotations

import re
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from compress.arch import HEAD_PRUNING
from compress.backbones.objectives import check_histories
from compress.backbones.transformer import MODEL_PARTS
from compress.bounds import instance
from compress.engine.losses import next_item_loss
from compress.errors import ConfigError
from compress.nn.block import LAYER_PARTS

CRITERIA = ("magnitude", "taylor")
Group = Tuple[str, Optional[int]]  # ("hidden", None) | ("heads", layer) | ("inner", layer)
HIDDEN: Group = ("hidden", None)

def _part(role: str, tail: str) -> str:
    """The pattern of the parameters ``tail`` of a layer's part ``role`` (compress.nn.block.LAYER_PARTS)."""
    return rf"layers\.\d+\.{re.escape(LAYER_PARTS[role])}\.{tail}"


def _model_parts(*roles: str) -> str:
    return "(" + "|".join(re.escape(MODEL_PARTS[r]) for r in roles) + ")"


_GATES = _part("gates", r"\w+")
_RULES = (  # (parameter name, {axis: channel group}); the first full match wins
    (_model_parts("item_embedding", "position_embedding") + r"\.weight", {1: "hidden"}),
    (_model_parts("embedding_norm", "final_norm") + r"\.(weight|bias)", {0: "hidden"}),
    ("|".join(_part(n, r"(weight|bias)") for n in ("attention_norm", "ffn_norm")), {0: "hidden"}),
    ("|".join(_part(q, "weight") for q in ("query", "key", "value")), {0: "heads", 1: "hidden"}),
    ("|".join(_part(q, "bias") for q in ("query", "key", "value")), {0: "heads"}),
    (_part("output", "weight"), {0: "hidden", 1: "heads"}),
    (_part("output", "bias"), {0: "hidden"}),
    (_part("ffn_in", "weight"), {0: "inner", 1: "hidden"}),
    (_part("ffn_in", "bias"), {0: "inner"}),
    (_part("ffn_out", "weight"), {0: "hidden", 1: "inner"}),
    (_part("ffn_out", "bias"), {0: "hidden"}),
    (_GATES + r"\.hidden_layers\.0\.weight", {1: "hidden"}),  # the gates read E
    (_GATES + r"\.hidden_layers\.\d+\.(weight|bias)", {}),  # gate-internal outputs stay in place
    (_GATES + r"\.score\.weight", {0: "gate_out", 1: "gate_in"}),
    (_GATES + r"\.score\.bias", {0: "gate_out"}),
)


def _group(tag: str, name: str, names: List[str], placement: str) -> Optional[Group]:
    """The channel group behind ``tag`` for parameter ``name``; None where the axis is gate-internal."""
    parts = name.split(".")  # layers.{i}.gates.{first|second}.score.weight for the gate tags
    if tag == "gate_out":  # δ1 has size D under "code", δ2 under "paper" (compress/nn/gates.py)
        tag = "inner" if (parts[3] == "first") == (placement == "code") else "hidden"
    elif tag == "gate_in":  # the score layer reads E only when its gate has no hidden layers
        if ".".join(parts[:4] + ["hidden_layers", "0", "weight"]) in names:
            return None
        tag = "hidden"
    return HIDDEN if tag == "hidden" else (tag, int(parts[1]))


def couplings(model: nn.Module) -> Dict[str, Dict[int, Group]]:
    """For every parameter, which of its axes runs over which channel group."""
    names = [name for name, _ in model.named_parameters()]
    out = {}
    for name in names:
        rule = next((axes for pattern, axes in _RULES if re.fullmatch(pattern, name)), None)
        if rule is None:
            raise ConfigError(f"cannot tell which channels parameter {name!r} couples to; "
                              "reorder knows SASRec-style parameter names only")
        groups = {axis: _group(tag, name, names, model.arch.gate_placement) for axis, tag in rule.items()}
        out[name] = {axis: g for axis, g in groups.items() if g is not None}
    return out


def _saliency(model: nn.Module, criterion: str, batch) -> Dict[str, torch.Tensor]:
    """Per-element score of every parameter, in float64 so that sums taken in a permuted order
    round alike and a second reordering sorts exactly as the first left things."""
    params = dict(model.named_parameters())
    if criterion == "magnitude":
        return {name: p.detach().double() ** 2 for name, p in params.items()}
    if criterion != "taylor":
        raise ConfigError(f"unknown importance criterion {criterion!r}; choose one of {', '.join(CRITERIA)}")
    items, targets = _taylor_batch(model, batch)  # (B, N) right-padded histories and next items, 0 = padding
    loss = next_item_loss(model(items), targets, model.score)
    grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    return {name: (p.detach().double() * (torch.zeros_like(p) if g is None else g).double()).abs()
            for (name, p), g in zip(params.items(), grads)}


def _taylor_batch(model: nn.Module, batch) -> Tuple[torch.Tensor, torch.Tensor]:
    """``batch`` as (items, targets) once each is checked: a gradient of indices out of range or of another
    shape would fail deep in the loss, or silently score the wrong rows."""
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise ConfigError("the taylor criterion needs gradients: pass batch=(items, targets), two (B, N) tensors "
                          "of item indices, targets[b, t] the item after items[b, :t + 1] (0: none)")
    items, targets = batch
    check_histories(model, items, model.item_embedding.num_embeddings - 1)  # a cloze batch masks items
    if not isinstance(targets, torch.Tensor) or targets.shape != items.shape or targets.dtype != items.dtype:
        got = f"{targets.dtype} {tuple(targets.shape)}" if isinstance(targets, torch.Tensor) else type(targets).__name__
        raise ConfigError(f"the taylor batch's targets must be item indices of the items' shape {tuple(items.shape)} "
                          f"and dtype {items.dtype}, got {got}")
    outside = (targets < 0) | (targets > model.n_items)
    if bool(outside.any()):
        raise ConfigError(f"the taylor batch's targets must be item indices in 0..{model.n_items} (0: none), got "
                          f"{int(targets[outside][0])}")
    return items, targets


def channel_importance(model: nn.Module, criterion: str = "magnitude",
                       batch: Optional[Tuple[torch.Tensor, torch.Tensor]] = None) -> dict:
    """Group importance of every channel, summed over all parameter slices coupled to it.

    ``magnitude`` sums squared weights; ``taylor`` sums |w·∂L/∂w| with L the next-item loss on
    ``batch`` = (items, targets) in the model's current mode (eval mode gives a dropout-free gradient).
    Returns float64 tensors {"hidden": (d,), "heads": [(H,) per layer], "head_dims": [(H, head_dim) per
    layer], "inner": [(D,) per layer]}.
    """
    instance("the model", model, nn.Module, "one whose parameters are named as compress's transformer names them; "
             "or pass reorder= to compress.wrap, which converts it first")
    saliency = _saliency(model, criterion, batch)
    sums: Dict[Group, torch.Tensor] = {}
    for name, axes in couplings(model).items():
        s = saliency[name]
        for axis, group in axes.items():
            per_channel = s.movedim(axis, 0).reshape(s.shape[axis], -1).sum(1)  # (channels,)
            sums[group] = sums[group] + per_channel if group in sums else per_channel
    layers, head_dim = model.arch.layers, model.arch.head_dim
    head_dims = [sums[("heads", i)].view(-1, head_dim) for i in range(layers)]  # (H, head_dim)
    return {"hidden": sums[HIDDEN], "heads": [h.sum(1) for h in head_dims], "head_dims": head_dims,
            "inner": [sums[("inner", i)] for i in range(layers)]}


def _descending(importance: torch.Tensor) -> torch.Tensor:
    """Most important first; stable, so ties keep their order and a sorted group maps to the identity."""
    return torch.sort(importance, descending=True, stable=True).indices


def reorder(model: nn.Module, criterion: str = "magnitude",
            batch: Optional[Tuple[torch.Tensor, torch.Tensor]] = None, head_pruning: str = "whole") -> dict:
    """Permute ``model``'s channels in place, most important first, leaving its scores unchanged.
    ``model`` has a SequenceTransformer's parameter names, and its ``n_items`` and ``max_len`` bound
    the Taylor ``batch``.

    Run it before building the supernet so that every narrower candidate keeps the channels that
    matter most; ``head_pruning`` is the search space's (whole: heads are ordered; dims: each head's
    dimensions are). Returns the permutations applied (new position -> old index): {"hidden": (d,),
    "heads": [(H,) per layer], "head_dims": [(H, head_dim) per layer], "inner": [(D,) per layer]}.
    """
    if head_pruning not in HEAD_PRUNING:
        raise ConfigError(f"unknown head pruning {head_pruning!r}; choose one of {', '.join(HEAD_PRUNING)}")
    importance = channel_importance(model, criterion, batch)
    head_dim = model.arch.head_dim
    whole = head_pruning == "whole"  # heads ordered, their dimensions in place; or the reverse
    perms = {"hidden": _descending(importance["hidden"]),
             "heads": [_descending(h) if whole else torch.arange(len(h), device=h.device) for h in importance["heads"]],
             "head_dims": [torch.arange(head_dim, device=h.device).expand_as(h) if whole else _descending(h)
                           for h in importance["head_dims"]],
             "inner": [_descending(d) for d in importance["inner"]]}
    index: Dict[Group, torch.Tensor] = {HIDDEN: perms["hidden"]}
    for i, (heads, dims, inner) in enumerate(zip(perms["heads"], perms["head_dims"], perms["inner"])):
        rows = heads[:, None] * head_dim + dims[heads]  # (H, head_dim): head j's rows, its dims in order
        index[("heads", i)] = rows.reshape(-1)  # (H·head_dim,)
        index[("inner", i)] = inner
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, axes in couplings(model).items():
            t = params[name].detach()
            for axis, group in axes.items():
                t = t.index_select(axis, index[group])
            params[name].copy_(t)
    return perms
