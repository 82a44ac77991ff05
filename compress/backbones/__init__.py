"""Backbones by name: ``get_backbone("sasrec")``, ``list_backbones()``."""
from compress.backbones import bert4rec, sasrec, transformer  # noqa: F401,E401  (register the built-ins)
from compress.backbones.registry import get_backbone, list_backbones, register_backbone

__all__ = ["get_backbone", "list_backbones", "register_backbone"]
