"""The adapter protocol: the one place that knows where a backbone keeps its parts.

The supernet, the search and the slicer only call these methods, so a new backbone needs a new
adapter and nothing else. Every part works on the *leading* slices of full-size weights.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Type

import torch
from torch import nn

from compress.arch import ArchSpec
from compress.errors import ConfigError
from compress.nn.width import Width


class Adapter:
    name: str = ""

    def matches(self, model: nn.Module) -> bool:
        raise NotImplementedError

    def arch(self, model: nn.Module) -> ArchSpec:
        """The full-size architecture of ``model``."""
        raise NotImplementedError

    def embed(self, model: nn.Module, items: torch.Tensor, hidden: int) -> torch.Tensor:
        """items (B, N) -> embedding output E (B, N, hidden) over the kept leading dims."""
        raise NotImplementedError

    def layer(self, model: nn.Module, index: int, x: torch.Tensor, valid: torch.Tensor, e: torch.Tensor,
              width: Width) -> torch.Tensor:
        """Layer ``index`` at ``width``: x (B, N, ≥hidden) -> (B, N, hidden)."""
        raise NotImplementedError

    def score(self, model: nn.Module, h: torch.Tensor) -> torch.Tensor:
        """h (..., d) -> item logits (..., n_items + 1)."""
        raise NotImplementedError

    def build(self, model: nn.Module, arch: ArchSpec) -> nn.Module:
        """A fresh dense model of the same family at ``arch``."""
        raise NotImplementedError

    def slice_into(self, model: nn.Module, dense: nn.Module) -> None:
        """Copy the leading slices of ``model``'s weights into the smaller ``dense``."""
        raise NotImplementedError


_ADAPTERS: Dict[str, Type[Adapter]] = {}


def register_adapter(cls: Type[Adapter]) -> Type[Adapter]:
    _ADAPTERS[cls.name] = cls
    return cls


def list_adapters() -> List[str]:
    return sorted(_ADAPTERS)


def get_adapter(model: nn.Module, adapter: Optional[object] = None) -> Adapter:
    """An adapter instance: given, by name, or the first registered one that matches ``model``."""
    if isinstance(adapter, Adapter):
        return adapter
    if isinstance(adapter, str):
        if adapter not in _ADAPTERS:
            raise ConfigError(f"unknown adapter {adapter!r}; available: {', '.join(list_adapters())}")
        return _ADAPTERS[adapter]()
    for cls in _ADAPTERS.values():
        if cls().matches(model):
            return cls()
    raise ConfigError(f"no adapter fits {type(model).__name__}; available adapters: {', '.join(list_adapters())}")
