"""ArchSpec: the single source of truth for a model's shape, written into every ``config.json``.

A narrower hidden size shrinks attention one of two ways (``HEAD_PRUNING``): ``whole`` keeps the
head width (``head_dim``) and drops trailing heads (``heads = hidden // head_dim``), so pruning a
prefix of the hidden dimension never leaves an all-zero head inside a kept one; ``dims`` keeps every
head and the leading ``hidden // heads`` dimensions of each (Torch-Pruning's default).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Dict, NamedTuple, Optional

from compress.bounds import whole
from compress.errors import ConfigError

ATTENTION_KINDS = ("softmax", "linear")
HEAD_PRUNING = ("whole", "dims")  # fewer heads of the full width, or every head narrowed


class Width(NamedTuple):
    """The kept leading dimensions of a width candidate: ``hidden`` of d, ``inner`` of D, and the
    attention ``heads`` (None: whole heads of the model's head width, ``hidden // head_dim`` of them;
    a count: that many heads of ``hidden // heads`` dimensions, the leading ones of each full head)."""

    hidden: int
    inner: int
    heads: Optional[int] = None

GATE_PLACEMENTS = ("code", "paper")
MAX_LAYERS = 1024
MAX_GATE_LAYERS = 16  # each gate is an MLP of this many hidden layers: deeper ones cost more than the FFN
# (minimum, maximum) of each size; a million layers would take minutes of module building to fail
SIZES = {"hidden": (1, None), "inner": (1, None), "heads": (1, None), "layers": (1, MAX_LAYERS),
         "gate_layers": (0, MAX_GATE_LAYERS)}


@dataclass(frozen=True)
class ArchSpec:
    hidden: int = 64
    inner: int = 256
    heads: int = 2
    layers: int = 2
    attention: str = "softmax"
    gate_layers: int = 0  # depth of each data-aware gate MLP; 0 = no gates
    gate_placement: str = "code"  # code: δ1 on FFN dense-1 output (size D), δ2 on dense-2 output (size d)

    def __post_init__(self) -> None:
        for name, (low, high) in SIZES.items():
            object.__setattr__(self, name, whole(name, getattr(self, name), minimum=low, maximum=high))
        if self.hidden % self.heads:
            raise ConfigError(f"hidden size {self.hidden} is not divisible into {self.heads} heads; "
                              "pick heads that divide it")
        if not isinstance(self.attention, str) or self.attention not in ATTENTION_KINDS:
            raise ConfigError(f"unknown attention {self.attention!r}; choose one of {', '.join(ATTENTION_KINDS)}")
        if not isinstance(self.gate_placement, str) or self.gate_placement not in GATE_PLACEMENTS:
            raise ConfigError(f"unknown gate placement {self.gate_placement!r}; choose 'code' or 'paper'")

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def to_dict(self) -> Dict[str, Any]:
        return {**asdict(self), "head_dim": self.head_dim}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "ArchSpec":
        if not isinstance(d, dict):
            raise ConfigError(f"an ArchSpec must be a mapping of hidden, inner, heads, ..., got {d!r}")
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names - {"head_dim"}
        if unknown:
            raise ConfigError(f"unknown ArchSpec keys: {', '.join(sorted(_name(k) for k in unknown))}")
        try:
            spec = cls(**{k: v for k, v in d.items() if k in names})
        except TypeError as exc:
            raise ConfigError(f"bad ArchSpec: {exc}") from None
        if "head_dim" in d and d["head_dim"] != spec.head_dim:
            raise ConfigError(f"ArchSpec head_dim {d['head_dim']} disagrees with hidden/heads = {spec.head_dim}")
        return spec

    def narrowed(self, hidden: int, inner: int, layers: int, heads: Optional[int] = None) -> "ArchSpec":
        """The same design at a smaller width and depth: keeping the head width (``heads`` None), or with
        ``heads`` heads of ``hidden // heads`` dimensions each."""
        if heads is None:
            if hidden % self.head_dim:
                raise ConfigError(f"hidden size {hidden} is not a multiple of the head width {self.head_dim}")
            heads = hidden // self.head_dim
        return replace(self, hidden=hidden, inner=inner, heads=heads, layers=layers)

    def label(self) -> str:
        """How a decision reads everywhere (live view, card, ``inspect``): ``64/256 × 1 layer``, with
        the attention kind and the gates' depth when the design departs from a plain SASRec block."""
        text = f"{self.hidden}/{self.inner} × {self.layers} layer{'s' if self.layers > 1 else ''}"
        if self.attention != "softmax":
            text += f", {self.attention} attention"
        if self.gate_layers:
            text += f", gates L_d={self.gate_layers}"
        return text


def _name(key: Any) -> str:
    return key if isinstance(key, str) and key.isidentifier() else repr(key)  # '', 1, None, 'a b' quoted
