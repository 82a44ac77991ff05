"""Backbone registry (timm's register/create pattern): ``@register_backbone("sasrec")``."""
from __future__ import annotations

from typing import Callable, Dict, List, Type

from torch import nn

from compress.errors import ConfigError

_BACKBONES: Dict[str, Type[nn.Module]] = {}


def register_backbone(name: str) -> Callable[[Type[nn.Module]], Type[nn.Module]]:
    def deco(cls: Type[nn.Module]) -> Type[nn.Module]:
        if name in _BACKBONES:
            raise ValueError(f"backbone {name!r} is already registered")
        cls.backbone_name = name
        _BACKBONES[name] = cls
        return cls
    return deco


def list_backbones() -> List[str]:
    return sorted(_BACKBONES)


def get_backbone(name: str) -> Type[nn.Module]:
    if name not in _BACKBONES:
        raise ConfigError(f"unknown backbone {name!r}; available: {', '.join(list_backbones())}")
    return _BACKBONES[name]
