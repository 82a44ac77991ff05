"""Adapter for the built-in SASRec: its modules are already sliceable, so each part delegates."""
from __future__ import annotations

import torch
from torch import nn

from compress.adapters.base import Adapter, register_adapter
from compress.arch import ArchSpec
from compress.backbones.sasrec import SASRec
from compress.nn.width import Width


@register_adapter
class SASRecAdapter(Adapter):
    name = "sasrec"

    def matches(self, model: nn.Module) -> bool:
        return isinstance(model, SASRec)

    def arch(self, model: SASRec) -> ArchSpec:
        return model.arch

    def embed(self, model: SASRec, items: torch.Tensor, hidden: int) -> torch.Tensor:
        return model.embed(items, hidden)

    def layer(self, model: SASRec, index: int, x, valid, e, width: Width) -> torch.Tensor:
        return model.layers[index](x, valid, e, width)

    def score(self, model: SASRec, h: torch.Tensor) -> torch.Tensor:
        return model.score(h)

    def build(self, model: SASRec, arch: ArchSpec) -> SASRec:
        return type(model)(arch, model.n_items, model.max_len, model.dropout, model.layer_norm_eps, model.init_std)

    @torch.no_grad()
    def slice_into(self, model: SASRec, dense: SASRec) -> None:
        """Same parameter names, smaller shapes: every tensor is the leading block of its source."""
        source = model.state_dict()
        for name, t in dense.state_dict().items():
            t.copy_(source[name][tuple(slice(0, s) for s in t.shape)])
