"""The adapter protocol: the one place that knows where a backbone keeps its parts.

An adapter converts a user's model into the sliceable ``SequenceTransformer`` (carrying every weight
over), and, where it can, converts a smaller dense result back into the user's own class. The
supernet, the search and the slicer only call the methods below, so a new model family needs a new
adapter and nothing else. Every part works on the *leading* slices of full-size weights.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Type

import torch
from torch import nn

from compress.arch import ArchSpec
from compress.backbones.transformer import SequenceTransformer
from compress.errors import ConfigError
from compress.nn.width import Width


class Adapter:
    name: str = ""
    has_native = False  # True where ``native`` can write the user's own class

    def matches(self, model: nn.Module) -> bool:
        raise NotImplementedError

    def convert(self, model: nn.Module) -> SequenceTransformer:
        """``model`` as a sliceable ``SequenceTransformer`` computing the same scores."""
        raise NotImplementedError

    def to_dict(self) -> Dict[str, Any]:
        """What this adapter needs to be rebuilt from a saved supernet (e.g. the user model's config)."""
        return {}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Adapter":
        return cls()

    def native(self, dense: SequenceTransformer, directory: str) -> Optional[str]:
        """Write ``dense`` as the user's own model class under ``directory`` when that class can
        express it; return the path written, or None when it cannot (e.g. linear attention)."""
        return None

    def arch(self, model: SequenceTransformer) -> ArchSpec:
        """The full-size architecture of ``model``."""
        return model.arch

    def embed(self, model: SequenceTransformer, items: torch.Tensor, hidden: int) -> torch.Tensor:
        """items (B, N) -> embedding output E (B, N, hidden) over the kept leading dims."""
        return model.embed(items, hidden)

    def layer(self, model: SequenceTransformer, index: int, x: torch.Tensor, valid: torch.Tensor,
              e: torch.Tensor, width: Width) -> torch.Tensor:
        """Layer ``index`` at ``width``: x (B, N, ≥hidden) -> (B, N, hidden)."""
        return model.layers[index](x, valid, e, width)

    def finish(self, model: SequenceTransformer, x: torch.Tensor) -> torch.Tensor:
        """An exit's output (B, N, hidden) -> the model output (the final LN of pre-LN models)."""
        return model.finish(x)

    def score(self, model: SequenceTransformer, h: torch.Tensor) -> torch.Tensor:
        """h (..., d) -> item logits (..., n_items + 1)."""
        return model.score(h)

    def build(self, model: SequenceTransformer, arch: ArchSpec) -> SequenceTransformer:
        """A fresh dense model of the same family at ``arch``."""
        return model.rebuilt(arch)

    @torch.no_grad()
    def slice_into(self, model: SequenceTransformer, dense: SequenceTransformer) -> None:
        """Same parameter names, smaller shapes: every tensor is the leading block of its source."""
        source = model.state_dict()
        for name, t in dense.state_dict().items():
            t.copy_(source[name][tuple(slice(0, s) for s in t.shape)])


def vanilla(arch: ArchSpec) -> bool:
    """Whether a plain transformer class (HF, RecBole) can hold ``arch``: softmax attention, no gates."""
    return arch.attention == "softmax" and arch.gate_layers == 0


_ADAPTERS: Dict[str, Type[Adapter]] = {}


def register_adapter(cls: Type[Adapter]) -> Type[Adapter]:
    _ADAPTERS[cls.name] = cls
    return cls


def list_adapters() -> List[str]:
    return sorted(_ADAPTERS)


def adapter_class(name: str) -> Type[Adapter]:
    if name not in _ADAPTERS:
        raise ConfigError(f"unknown adapter {name!r}; available: {', '.join(list_adapters())}")
    return _ADAPTERS[name]


def get_adapter(model: nn.Module, adapter: Optional[object] = None) -> Adapter:
    """An adapter instance: given, by name, or the first registered one that matches ``model``."""
    if isinstance(adapter, Adapter):
        return adapter
    if isinstance(adapter, str):
        return adapter_class(adapter)()
    if adapter is not None:
        raise ConfigError(f"adapter must be an Adapter or a registered name, got {type(adapter).__name__}")
    for cls in _ADAPTERS.values():
        if cls().matches(model):
            return cls()
    raise ConfigError(f"no adapter fits {type(model).__name__}; describe its modules with the declared adapter "
                      f"(compress.DeclaredAdapter, see README 'Wrap your own model'); "
                      f"registered adapters: {', '.join(list_adapters())}")
