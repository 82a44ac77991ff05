"""Adapter for the built-in backbones (SASRec, BERT4Rec): they are already sliceable transformers."""
from __future__ import annotations

from torch import nn

from compress.adapters.base import Adapter, register_adapter
from compress.backbones.transformer import SequenceTransformer
from compress.errors import ConfigError


@register_adapter
class BuiltinAdapter(Adapter):
    name = "builtin"

    def matches(self, model: nn.Module) -> bool:
        return isinstance(model, SequenceTransformer)

    def convert(self, model: nn.Module) -> SequenceTransformer:
        if not self.matches(model):
            raise ConfigError(f"{type(model).__name__} is not a compress backbone (SASRec, BERT4Rec), which the "
                              "builtin adapter wraps; leave adapter unset to find the one that fits, or name it")
        return model
