"""Backbone adapters; ``get_adapter(model)`` finds the one that fits."""
from compress.adapters.base import Adapter, adapter_class, get_adapter, list_adapters, register_adapter
from compress.adapters import builtin  # noqa: F401  (registers "builtin")

__all__ = ["Adapter", "adapter_class", "get_adapter", "list_adapters", "register_adapter"]
