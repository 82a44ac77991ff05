"""Backbone adapters; ``get_adapter(model)`` finds the one that fits."""
from compress.adapters import builtin, declared, hf, recbole  # noqa: F401,E401  (register the adapters)
from compress.adapters.base import Adapter, adapter_class, get_adapter, list_adapters, register_adapter
from compress.adapters.declared import DeclaredAdapter

__all__ = ["Adapter", "DeclaredAdapter", "adapter_class", "get_adapter", "list_adapters", "register_adapter"]
