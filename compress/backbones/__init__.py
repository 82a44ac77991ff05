"""Backbones by name: ``get_backbone("sasrec")``, ``list_backbones()``."""
from compress.backbones.registry import get_backbone, list_backbones, register_backbone
from compress.backbones import transformer, sasrec, bert4rec  # noqa: F401,E401  (register the built-ins)

__all__ = ["get_backbone", "list_backbones", "register_backbone"]
