"""Adapter for the built-in backbones (SASRec, BERT4Rec): they are already sliceable transformers."""
from __future__ import annotations

from torch import nn

from compress.adapters.base import Adapter, register_adapter
from compress.backbones.transformer import SequenceTransformer


@register_adapter
class BuiltinAdapter(Adapter):
    name = "builtin"

    def matches(self, model: nn.Module) -> bool:
        return isinstance(model, SequenceTransformer)

    def convert(self, model: SequenceTransformer) -> SequenceTransformer:
        return model
