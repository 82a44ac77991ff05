"""The DNS-Rec supernet: one full-size backbone shared by every width candidate and exit depth.

Candidate k keeps the leading ``widths[k]`` dimensions (zero-masks on the trailing ones, computed
by slicing). Each layer's output mixes the candidates, 𝒯^(l) = Σ_k p_k T_k^(l), and the output is
Y = Σ_l q_l 𝒯^(l) (Eq. 10). The embedding is mixed the same way (each candidate normalises its own
kept dimensions), so with one-hot p and q the supernet computes exactly the sliced dense model.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple, Union

import torch
from torch import nn

from compress.adapters.base import Adapter
from compress.arch import ArchSpec, Width
from compress.backbones.objectives import at, query
from compress.measure.flops import analytic_flops
from compress.nas.controllers import Controller, one_hot
from compress.nas.space import SearchSpace
from compress.nn.width import zero_pad


class Supernet(nn.Module):
    def __init__(self, backbone: nn.Module, adapter: Adapter, space: SearchSpace) -> None:
        super().__init__()
        self.backbone, self.adapter, self.space = backbone, adapter, space
        self.full: ArchSpec = backbone.arch
        self.widths: List[Width] = space.widths(self.full)
        self.alpha = Controller(len(self.widths))  # transformer controller, shared by all layers
        self.beta = Controller(self.full.layers)  # depth controller: exit after layer l
        self.max_len, self.n_items, self.style = backbone.max_len, backbone.n_items, backbone.style
        self.tau = 1.0
        self.eval_selection = "soft"  # what predict() uses: "soft" (softmax(logits/τ)) or "hard" (argmax)
        flops = [[analytic_flops(self.arch_for(k, l), self.max_len, self.n_items, backbone.causal)["total"]
                  for l in range(self.full.layers)] for k in range(len(self.widths))]
        self.register_buffer("flops", torch.tensor(flops, dtype=torch.float64), persistent=False)  # (K, L)

    @property
    def vocabulary(self):
        """The item vocabulary of the wrapped model (what every slice carries)."""
        return self.backbone.vocabulary

    def arch_for(self, k: int, l: int) -> ArchSpec:
        """Dense architecture of width candidate ``k`` exiting after layer ``l`` (0-based)."""
        return self.full.narrowed(self.widths[k].hidden, self.widths[k].inner, l + 1)

    def architecture_parameters(self) -> List[nn.Parameter]:
        return [self.alpha.logits, self.beta.logits]

    def weight_parameters(self) -> List[nn.Parameter]:
        return list(self.backbone.parameters())

    def mixture(self, w: Union[int, torch.Tensor], n: int) -> Tuple[torch.Tensor, List[int]]:
        """(weights (n,), the choices to compute) of ``w``: an int is a one-hot choice; a tensor mixes,
        computing only its non-zero entries where the host sees them for free (the CPU), every entry on
        an accelerator (0 · x adds nothing, and reading the weights would make the host wait)."""
        if isinstance(w, int):
            return one_hot(w, n, self.alpha.logits.device), [w]
        if w.device.type == "cpu":
            return w, [i for i, v in enumerate(w.tolist()) if v != 0]
        return w, list(range(n))

    def forward(self, items: torch.Tensor, p: Union[int, torch.Tensor], q: Union[int, torch.Tensor]) -> torch.Tensor:
        """items (B, N); p (K,) width weights or a width index; q (L,) exit weights or an exit index
        -> Y (B, N, d)."""
        d, backbone = self.full.hidden, self.backbone
        valid = items > 0
        p, active = self.mixture(p, len(self.widths))  # a one-hot p computes one candidate
        q, exits = self.mixture(q, self.full.layers)
        emb = {k: backbone.embed(items, self.widths[k].hidden) for k in active}
        x = sum(p[k] * zero_pad(emb[k], d) for k in active)  # (B, N, d)
        y = None
        for l in range(max(exits) + 1):  # layers after the last exit are not needed
            outs = {k: backbone.layers[l](x, valid, emb[k], self.widths[k]) for k in active}
            x = sum(p[k] * zero_pad(outs[k], d) for k in active)  # (B, N, d)
            if l in exits:
                # each candidate's exit gets its own final LN (pre-LN models), as its dense model would
                out = x if not self.style.final_norm else \
                    sum(p[k] * zero_pad(backbone.finish(outs[k]), d) for k in active)
                y = q[l] * out if y is None else y + q[l] * out
        return y

    def score(self, h: torch.Tensor) -> torch.Tensor:
        return self.backbone.score(h)

    def selection(self) -> Tuple[Union[int, torch.Tensor], Union[int, torch.Tensor]]:
        """The weights predict() uses: tempered softmax without noise, or the current hard decision."""
        if self.eval_selection == "hard":
            return self.alpha.choice(), self.beta.choice()
        return (torch.softmax(self.alpha.logits / self.tau, 0), torch.softmax(self.beta.logits / self.tau, 0))

    def item_table(self, hidden: Optional[int] = None) -> torch.Tensor:
        return self.backbone.item_table(hidden)

    def query_hidden(self, items: torch.Tensor, p: Optional[torch.Tensor] = None,
                     q: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B, N) histories -> (B, d) hidden state that scores their next item, under weights p, q
        (default: ``selection()``)."""
        if p is None or q is None:
            p, q = self.selection()
        inputs, index = query(self, items)
        return at(self(inputs, p, q), index)

    def predict(self, items: torch.Tensor, p: Optional[torch.Tensor] = None,
                q: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Next-item logits (B, n_items + 1) under weights p, q (default: ``selection()``)."""
        return self.score(self.query_hidden(items, p, q))

    def expected_flops(self, p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """Σ_l q_l Σ_k p_k FLOPs(k, l) / FLOPs(full): differentiable in p and q, 1.0 for the full model."""
        table = self.flops.to(p.device, p.dtype)  # p, q may be a host copy for the epoch record
        return p @ table @ q / table[0, -1]

    def flops_of(self, k: int, l: int) -> float:
        return float(self.flops[k, l])

    def candidates(self) -> List[Dict]:
        out = []
        for k, w in enumerate(self.widths):
            for l in range(self.full.layers):
                out.append({"width": k, "hidden": w.hidden, "inner": w.inner, "layers": l + 1,
                            "flops": self.flops_of(k, l), "params": self.params_of(k, l)})
        return out

    def params_of(self, k: int, l: int) -> int:
        arch = self.arch_for(k, l)
        with torch.device("meta"):  # shapes only
            return sum(p.numel() for p in self.backbone.rebuilt(arch).parameters())

    def slice(self, k: int, l: int) -> nn.Module:
        """The dense model of candidate (k, l) holding the leading slices of the shared weights."""
        dense = self.backbone.rebuilt(self.arch_for(k, l))
        source = self.backbone.state_dict()
        with torch.no_grad():  # same parameter names, smaller shapes: each tensor is the leading block of its source
            for name, t in dense.state_dict().items():
                t.copy_(source[name][tuple(slice(0, s) for s in t.shape)])
        return dense.to(self.alpha.logits.device)
