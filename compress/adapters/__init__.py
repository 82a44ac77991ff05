"""Backbone adapters; ``get_adapter(model)`` finds the one that fits."""
from compress.adapters.base import Adapter, get_adapter, list_adapters, register_adapter
from compress.adapters import sasrec  # noqa: F401  (registers "sasrec")

__all__ = ["Adapter", "get_adapter", "list_adapters", "register_adapter"]
