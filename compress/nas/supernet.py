"""The DNS-Rec supernet: one full-size backbone shared by every candidate.

A candidate is a width k, an exit depth l (one of the space's depths), an attention kind a and a gate
depth g, each picked by its controller: α (width, one for all layers), β (exit depth), and the attention and gate
controllers, whose choices the search weighs by their FLOPs like the others. Candidate width k
keeps the leading ``widths[k]`` dimensions (zero-masks on the trailing ones, computed by slicing).
Each layer's output mixes the widths, 𝒯^(l) = Σ_k p_k T_k^(l), and the output is
Y = Σ_l q_l 𝒯^(l) (Eq. 10). Inside a layer the attention output mixes the kinds, Σ_a r_a Attn_a,
through one set of projections, and the gate scores mix the depths, δ = Σ_g s_g δ_g with δ_0 = 1
(no gate); a shallower gate is a prefix of the deepest. The embedding is mixed like the layers (each
width normalises its own kept dimensions), so with one-hot choices the supernet computes exactly
the sliced dense model.
"""
from __future__ import annotations

from dataclasses import replace
from itertools import product
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from compress.adapters.base import Adapter
from compress.arch import ArchSpec, Width
from compress.backbones.objectives import at, query
from compress.bounds import whole
from compress.errors import ConfigError
from compress.measure.flops import analytic_flops
from compress.nas.config import FLOPS_REFERENCES
from compress.nas.controllers import Controller, one_hot
from compress.nas.reorder import couplings
from compress.nas.space import SearchSpace
from compress.nn.width import head_block, zero_pad

Weights = Union[int, torch.Tensor]  # a choice index (one-hot) or soft weights over the choices


def choice(index, count: int, what: str) -> int:
    """``index`` as one of ``count`` choices: a decision read from a file may name one that is not there."""
    index = whole(f"{what} choice", index, minimum=0)
    if index >= count:
        raise ConfigError(f"{what} choice {index} is not one of this supernet's {count} (0 to {count - 1})")
    return index


class Supernet(nn.Module):
    def __init__(self, backbone: nn.Module, adapter: Adapter, space: SearchSpace,
                 input_arch: Optional[ArchSpec] = None) -> None:
        super().__init__()
        self.backbone, self.adapter, self.space = backbone, adapter, space
        self.full: ArchSpec = backbone.arch
        if max(space.gate_layers) > self.full.gate_layers:
            raise ConfigError(f"the search space's gate depths {list(space.gate_layers)} exceed the supernet's "
                              f"gates (L_d = {self.full.gate_layers})")
        self.widths: List[Width] = space.widths(self.full)
        self.kinds: Tuple[str, ...] = space.attention
        self.gate_depths: Tuple[int, ...] = space.gate_layers
        self.depths: Tuple[int, ...] = space.exits(self.full)  # layer counts β picks from, shallowest first
        self.input_arch = input_arch or self.full  # the model that was wrapped: what budgets may refer to
        self.alpha = Controller(len(self.widths))  # transformer controller, shared by all layers
        self.beta = Controller(len(self.depths))  # depth controller: exit after depths[l] layers
        self.attention_choice = Controller(len(self.kinds))  # attention kind, shared by all layers
        self.gate_choice = Controller(len(self.gate_depths))  # gate depth L_d, shared by all layers
        self.max_len, self.n_items, self.style = backbone.max_len, backbone.n_items, backbone.style
        self.tau = 1.0
        self.eval_selection = "soft"  # what predict() uses: "soft" (softmax(logits/τ)) or "hard" (argmax)
        self.recompute = False  # recompute each width's layer in the backward pass rather than keep its activations
        self.register_buffer("exit_depths", torch.tensor(self.depths), persistent=False)  # (L',) for the penalty
        shape = (len(self.widths), len(self.depths), len(self.kinds), len(self.gate_depths))
        flops = torch.zeros(shape, dtype=torch.float64)
        for index in product(*(range(n) for n in shape)):
            flops[index] = analytic_flops(self.arch_for(*index), self.max_len, self.n_items, backbone.causal)["total"]
        self.register_buffer("flops", flops, persistent=False)  # (K, L', A, G)
        self.input_flops = float(analytic_flops(self.input_arch, self.max_len, self.n_items, backbone.causal)["total"])

    @property
    def vocabulary(self):
        """The item vocabulary of the wrapped model (what every slice carries)."""
        return self.backbone.vocabulary

    @property
    def controllers(self) -> Tuple[Controller, Controller, Controller, Controller]:
        """Width (α), exit depth (β), attention kind, gate depth: the order of every choice tuple."""
        return self.alpha, self.beta, self.attention_choice, self.gate_choice

    def only(self, index: Optional[int], controller: Controller, what: str) -> int:
        """``index``, or the single choice of a fixed ``what``; a searched one must be named."""
        if index is not None:
            return index
        if controller.logits.numel() != 1:
            raise ConfigError(f"this supernet searches the {what}: pass its choice")
        return 0

    def arch_for(self, k: int, l: int, a: Optional[int] = None, g: Optional[int] = None) -> ArchSpec:
        """Dense architecture of width ``k`` exiting at depth choice ``l`` (``depths[l]`` layers), attention
        kind ``a`` and gate depth ``g`` (indices; optional where the space fixes them)."""
        a = choice(self.only(a, self.attention_choice, "attention kind"), len(self.kinds), "attention kind")
        g = choice(self.only(g, self.gate_choice, "gate depth"), len(self.gate_depths), "gate depth")
        width = self.widths[choice(k, len(self.widths), "width")]
        narrow = self.full.narrowed(width.hidden, width.inner, self.depths[choice(l, len(self.depths), "depth")],
                                    width.heads)
        return replace(narrow, attention=self.kinds[a], gate_layers=self.gate_depths[g])

    def architecture_parameters(self) -> List[nn.Parameter]:
        return [c.logits for c in self.controllers]

    def weight_parameters(self) -> List[nn.Parameter]:
        return list(self.backbone.parameters())

    def mixture(self, w: Weights, n: int) -> Tuple[torch.Tensor, List[int]]:
        """(weights (n,), the choices to compute) of ``w``: an int is a one-hot choice; a tensor mixes,
        computing only its non-zero entries where the host sees them for free (the CPU), every entry on
        an accelerator (0 · x adds nothing, and reading the weights would make the host wait)."""
        if isinstance(w, int):
            return one_hot(w, n, self.alpha.logits.device), [w]
        if w.device.type == "cpu":
            return w, [i for i, v in enumerate(w.tolist()) if v != 0]
        return w, list(range(n))

    def pairs(self, w: Optional[Weights], choices: Sequence, controller: Controller, what: str):
        """``w`` as the (weight, choice) pairs a layer mixes; a one-hot choice has weight None (no multiply)."""
        if w is None or isinstance(w, int):
            return ((None, choices[self.only(w, controller, what)]),)
        w, active = self.mixture(w, len(choices))
        return tuple((w[i], choices[i]) for i in active)

    def forward(self, items: torch.Tensor, p: Weights, q: Weights, r: Optional[Weights] = None,
                s: Optional[Weights] = None) -> torch.Tensor:
        """items (B, N); p (K,) width weights or a width index; q (L',) exit weights or an exit index;
        r (A,) attention-kind and s (G,) gate-depth weights or indices (optional where fixed) -> Y (B, N, d)."""
        d, backbone = self.full.hidden, self.backbone
        valid = items > 0
        p, active = self.mixture(p, len(self.widths))  # a one-hot p computes one candidate
        q, exits = self.mixture(q, len(self.depths))
        at_exit = {self.depths[e] - 1: e for e in exits}  # layer index -> the exit choice that leaves after it
        kinds = self.pairs(r, self.kinds, self.attention_choice, "attention kind")
        gates = self.pairs(s, self.gate_depths, self.gate_choice, "gate depth")
        emb = {k: backbone.embed(items, self.widths[k].hidden) for k in active}
        x = sum(p[k] * zero_pad(emb[k], d) for k in active)  # (B, N, d)
        y = None
        for l in range(max(at_exit) + 1):  # layers after the last exit are not needed
            outs = {k: self.layer(l, x, valid, emb[k], self.widths[k], kinds, gates) for k in active}
            x = sum(p[k] * zero_pad(outs[k], d) for k in active)  # (B, N, d)
            if l in at_exit:
                # each candidate's exit gets its own final LN (pre-LN models), as its dense model would
                out = x if not self.style.final_norm else \
                    sum(p[k] * zero_pad(backbone.finish(outs[k]), d) for k in active)
                e = at_exit[l]
                y = q[e] * out if y is None else y + q[e] * out
        return y

    def layer(self, l: int, x: torch.Tensor, valid: torch.Tensor, emb: torch.Tensor, width: Width, kinds,
              gates) -> torch.Tensor:
        """Layer ``l`` at ``width`` on the mixed input x (B, N, d) -> (B, N, width.hidden). A soft step keeps
        the activations of every weighted width, so a large space's memory grows with its widths; with
        ``recompute`` they are recomputed in the backward pass (the RNG state kept, so dropout draws the
        same masks) and only the layer's inputs are kept, for about one more forward pass of compute."""
        block = self.backbone.layers[l]
        if self.recompute and torch.is_grad_enabled():
            return checkpoint(block, x, valid, emb, width, kinds, gates, use_reentrant=False)
        return block(x, valid, emb, width, kinds, gates)

    def score(self, h: torch.Tensor) -> torch.Tensor:
        return self.backbone.score(h)

    def selection(self) -> Tuple[Weights, ...]:
        """The weights predict() uses (p, q, r, s): tempered softmax without noise, or the current hard
        decision."""
        if self.eval_selection == "hard":
            return tuple(c.choice() for c in self.controllers)
        return tuple(torch.softmax(c.logits / self.tau, 0) for c in self.controllers)

    def item_table(self, hidden: Optional[int] = None) -> torch.Tensor:
        return self.backbone.item_table(hidden)

    def query_hidden(self, items: torch.Tensor, p: Optional[Weights] = None, q: Optional[Weights] = None,
                     r: Optional[Weights] = None, s: Optional[Weights] = None) -> torch.Tensor:
        """(B, N) histories -> (B, d) hidden state that scores their next item, under weights p, q, r, s
        (default: ``selection()``)."""
        if p is None or q is None:
            p, q, r, s = self.selection()
        inputs, index = query(self, items)
        return at(self(inputs, p, q, r, s), index)

    def predict(self, items: torch.Tensor, p: Optional[Weights] = None, q: Optional[Weights] = None,
                r: Optional[Weights] = None, s: Optional[Weights] = None) -> torch.Tensor:
        """Next-item logits (B, n_items + 1) under weights p, q, r, s (default: ``selection()``)."""
        return self.score(self.query_hidden(items, p, q, r, s))

    def reference_flops(self, reference: str = "supernet") -> float:
        """What budgets and the penalty are relative to: the full supernet (widest, deepest, its most
        costly attention and gates) or the ``input`` model that was wrapped (what a user compares with)."""
        if reference not in FLOPS_REFERENCES:
            raise ConfigError(f"unknown `flops_reference` {reference!r}; choose {' or '.join(FLOPS_REFERENCES)}")
        return self.input_flops if reference == "input" else float(self.flops.max())

    def expected_flops(self, p: torch.Tensor, q: torch.Tensor, r: Optional[torch.Tensor] = None,
                       s: Optional[torch.Tensor] = None, reference: str = "supernet") -> torch.Tensor:
        """Σ p_k q_l r_a s_g FLOPs(k, l, a, g) / FLOPs(reference): differentiable in every weight; r and s
        default to the single choice of a fixed space."""
        r = r if r is not None else one_hot(self.only(None, self.attention_choice, "attention kind"), 1, p.device)
        s = s if s is not None else one_hot(self.only(None, self.gate_choice, "gate depth"), 1, p.device)
        table = self.flops.to(p.device, p.dtype)  # the weights may be a host copy for the epoch record
        return torch.einsum("k,l,a,g,klag->", p, q, r.to(p.dtype), s.to(p.dtype), table) / \
            self.reference_flops(reference)

    def flops_of(self, k: int, l: int, a: Optional[int] = None, g: Optional[int] = None) -> float:
        return float(self.flops[k, l, self.only(a, self.attention_choice, "attention kind"),
                                self.only(g, self.gate_choice, "gate depth")])

    def candidates(self) -> List[Dict]:
        out = []
        for k, l, a, g in product(range(len(self.widths)), range(len(self.depths)), range(len(self.kinds)),
                                  range(len(self.gate_depths))):
            arch = self.arch_for(k, l, a, g)
            out.append({"width": k, "hidden": arch.hidden, "inner": arch.inner, "heads": arch.heads,
                        "layers": arch.layers, "attention": arch.attention, "gate_layers": arch.gate_layers,
                        "label": arch.label(), "flops": self.flops_of(k, l, a, g),
                        "params": self.params_of(k, l, a, g)})
        return out

    def params_of(self, k: int, l: int, a: Optional[int] = None, g: Optional[int] = None) -> int:
        arch = self.arch_for(k, l, a, g)
        with torch.device("meta"):  # shapes only
            return sum(p.numel() for p in self.backbone.rebuilt(arch).parameters())

    def slice(self, k: int, l: int, a: Optional[int] = None, g: Optional[int] = None) -> nn.Module:
        """The dense model of candidate (k, l, a, g) holding the leading slices of the shared weights
        (a shallower gate keeps the first hidden layers and the scoring layer of the deepest; narrowed
        heads keep the leading dimensions of every head), in the supernet's train or eval mode, with its
        frozen weights (requires_grad False) frozen."""
        arch = self.arch_for(k, l, a, g)
        dense = self.backbone.rebuilt(arch)
        source = self.backbone.state_dict()
        head_axes = {name: [axis for axis, group in axes.items() if group[0] == "heads"]
                     for name, axes in couplings(self.backbone).items()}
        with torch.no_grad():  # same parameter names, smaller shapes: each tensor is the leading block of its source
            for name, t in dense.state_dict().items():
                s = source[name]
                for axis in head_axes.get(name, ()):  # query/key/value rows, output columns: per head
                    s = head_block(s, axis, self.full.head_dim, arch.heads, arch.head_dim)
                t.copy_(s[tuple(slice(0, n) for n in t.shape)])
        frozen = {name for name, p in self.backbone.named_parameters() if not p.requires_grad}
        for name, p in dense.named_parameters():  # a weight frozen in the supernet stays frozen in its slices
            p.requires_grad_(name not in frozen)
        return dense.to(self.alpha.logits.device).train(self.training)  # in the supernet's mode
