"""Backbones by name: ``get_backbone("sasrec")``, ``list_backbones()``."""
from compress.backbones.registry import get_backbone, list_backbones, register_backbone
from compress.backbones import sasrec  # noqa: F401  (registers "sasrec")

__all__ = ["get_backbone", "list_backbones", "register_backbone"]
