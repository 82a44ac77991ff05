"""The adapter protocol: the one place that knows where a user's model keeps its parts.

An adapter does three things: it tells whether it fits a model (``matches``), converts the model into
the intermediate form every search runs on, the sliceable ``SequenceTransformer``, carrying every
weight over (``convert``), and, where the user's class can express a decision, writes the smaller
dense result back as that class (``native``). Everything after ``convert`` (supernet, search,
slicing, export) works on the intermediate form alone, so a new model family needs a new adapter
and nothing else.
"""
from __future__ import annotations

from itertools import chain
from typing import Any, Dict, List, Optional, Type

from torch import nn

from compress.arch import ArchSpec
from compress.backbones.transformer import SequenceTransformer
from compress.errors import ConfigError


class Adapter:
    name: str = ""
    has_native = False  # True where ``native`` can write the user's own class

    def matches(self, model: nn.Module) -> bool:
        raise NotImplementedError

    def convert(self, model: nn.Module) -> SequenceTransformer:
        """``model`` as a sliceable ``SequenceTransformer`` computing the same scores; a model this adapter
        does not fit (one it was named for by hand) is a ConfigError saying why, never a raw attribute error."""
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
    if not isinstance(model, nn.Module):
        raise ConfigError(f"the model must be a torch.nn.Module, got {type(model).__name__}")
    check_materialized(model)
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


def check_materialized(model: nn.Module) -> None:
    """Refuse a model built on the meta device (shapes without values): every adapter copies weights and
    the finiteness check reads them, which meta tensors cannot do."""
    meta = next((name for name, t in chain(model.named_parameters(), model.named_buffers()) if t.is_meta), None)
    if meta is not None:
        raise ConfigError(f"the model's weights are on the meta device ({meta} has no values); materialize the "
                          "weights first, e.g. load them (from_pretrained, load_state_dict(..., assign=True))")
