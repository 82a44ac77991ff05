"""SASRec (Kang & McAuley, ICDM 2018) with RecBole's semantics and defaults.

Post-LN layers, GELU, LayerNorm eps 1e-12, N(0, 0.02) init, item embeddings tied to the scoring
head, CE over all items. Sequences are right-padded with 0 (RecBole's layout): position p is the
p-th item of the (truncated) history and the prediction is read at the last real item. Training
uses every position at once under the causal mask, which yields each prefix's next-item loss in
one pass.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch
from torch import nn

from compress.arch import ArchSpec
from compress.backbones.registry import register_backbone
from compress.nn.block import TransformerLayer
from compress.nn.width import Width, layer_norm
from compress.serving import Recommender


@register_backbone("sasrec")
class SASRec(Recommender, nn.Module):
    causal = True

    def __init__(self, arch: ArchSpec, n_items: int, max_len: int, dropout: float = 0.2,
                 layer_norm_eps: float = 1e-12, init_std: float = 0.02) -> None:
        super().__init__()
        self.arch, self.n_items, self.max_len = arch, n_items, max_len
        self.dropout, self.layer_norm_eps, self.init_std = dropout, layer_norm_eps, init_std
        self.item_embedding = nn.Embedding(n_items + 1, arch.hidden, padding_idx=0)
        self.position_embedding = nn.Embedding(max_len, arch.hidden)
        self.emb_norm = nn.LayerNorm(arch.hidden, eps=layer_norm_eps)
        self.emb_drop = nn.Dropout(dropout)
        self.layers = nn.ModuleList(TransformerLayer(arch, dropout, layer_norm_eps, self.causal)
                                    for _ in range(arch.layers))
        self.apply(self._init)

    def _init(self, m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            m.weight.data.normal_(0.0, self.init_std)
        if isinstance(m, nn.Linear) and m.bias is not None:
            m.bias.data.zero_()
        if isinstance(m, nn.LayerNorm):
            m.weight.data.fill_(1.0)
            m.bias.data.zero_()

    def config(self) -> Dict[str, Any]:
        """Everything needed to rebuild this model (``config.json``)."""
        return {"backbone": self.backbone_name, "arch": self.arch.to_dict(), "n_items": self.n_items,
                "max_len": self.max_len, "dropout": self.dropout, "layer_norm_eps": self.layer_norm_eps,
                "init_std": self.init_std}

    @classmethod
    def from_config(cls, cfg: Dict[str, Any]) -> "SASRec":
        return cls(ArchSpec.from_dict(cfg["arch"]), cfg["n_items"], cfg["max_len"], cfg.get("dropout", 0.2),
                   cfg.get("layer_norm_eps", 1e-12), cfg.get("init_std", 0.02))

    def embed(self, items: torch.Tensor, hidden: Optional[int] = None) -> torch.Tensor:
        """items: (B, N) right-padded ids -> E: (B, N, d_k), the kept leading ``hidden`` dims."""
        hidden = hidden or self.arch.hidden
        pos = torch.arange(items.shape[1], device=items.device)
        e = self.item_embedding.weight[items, :hidden] + self.position_embedding.weight[pos, :hidden]
        return self.emb_drop(layer_norm(self.emb_norm, e))

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        """items: (B, N) -> hidden states at every position (B, N, d)."""
        valid = items > 0
        e = self.embed(items)
        x = e
        for layer in self.layers:
            x = layer(x, valid, e)
        return x

    def score(self, h: torch.Tensor) -> torch.Tensor:
        """h: (..., d_k) -> logits over all items (..., n_items + 1); column 0 (padding) is -inf."""
        logits = h @ self.item_embedding.weight[:, :h.shape[-1]].T
        logits[..., 0] = float("-inf")
        return logits

    def predict(self, items: torch.Tensor) -> torch.Tensor:
        """Next-item logits after each right-padded history: (B, N) -> (B, n_items + 1)."""
        return self.score(last_position(self(items), items))

    def width(self) -> Width:
        return Width(self.arch.hidden, self.arch.inner)


def last_position(h: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """h: (B, N, d) -> (B, d) at each row's last real item."""
    last = (items > 0).sum(1).clamp(min=1) - 1
    return h[torch.arange(h.shape[0], device=h.device), last]
