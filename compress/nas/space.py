"""The search space: width candidates (pruning ratios of the hidden size d and the inner size D),
the exit depths, and the design choices whose cost the search weighs: the attention kind and the
gates' depth.

A ratio r keeps the leading round(d·(1−r)) dimensions, rounded to a multiple of ``round_to`` (8 by
default: friendly to vector units) and at most d; ratio 0 keeps all d, a multiple of ``round_to`` or
not, so the model searched from is always a candidate. Coupled (the paper's default) pairs the i-th
hidden ratio with the i-th inner ratio; decoupled takes every combination.

``head_pruning`` says how a narrower hidden size shrinks attention: ``whole`` (the paper's slicing)
drops trailing heads, so kept widths are whole heads; ``dims`` keeps every head and narrows each to
its leading ``hidden / heads`` dimensions (Torch-Pruning's default), so kept widths are multiples of
the head count: 40 of 64 is 4 heads of 10, which whole heads of 16 cannot express.

``attention`` and ``gate_layers`` list the choices a controller picks from; one entry fixes the
choice (the paper fixes linear attention and L_d = 2). Searching them lets the decision drop what
costs more than it returns: at N ≤ 64 causal linear attention costs the matrix products softmax does,
and two gate MLPs per layer cost about as much as the FFN.

``depths`` lists the exit depths β picks from (None: every depth of the model, the paper); one entry
keeps that depth and searches widths alone, the space a channel pruner searches. A negative entry
counts from the model's depth, as Python indexes do (-1: all its layers, -2: one fewer), so one
space keeps the depth of models of any depth.
"""
from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass, replace
from itertools import product
from typing import Dict, List, Optional, Tuple

from compress.arch import ATTENTION_KINDS, HEAD_PRUNING, MAX_GATE_LAYERS, ArchSpec, Width
from compress.bounds import whole
from compress.errors import ConfigError

MAX_RATIO = 0.99  # keeps 1% of a width, round_to's minimum on most models; a ratio of 1 would keep nothing
MAX_ROUND_TO = 1024


@dataclass(frozen=True)
class SearchSpace:
    hidden_ratios: Tuple[float, ...] = (0.0, 0.25, 0.5)
    inner_ratios: Tuple[float, ...] = (0.0, 0.25, 0.5)
    coupled: bool = True
    round_to: int = 8
    attention: Tuple[str, ...] = ATTENTION_KINDS  # the kinds searched; one entry fixes it
    gate_layers: Tuple[int, ...] = (0, 1, 2)  # the gate depths L_d searched (0: no gates); one entry fixes it
    depths: Optional[Tuple[int, ...]] = None  # the exit depths searched (None: 1..L; -1: L); one entry fixes it
    head_pruning: str = "whole"  # whole: fewer heads of the full width; dims: every head, each narrowed

    def __post_init__(self) -> None:
        for name in ("hidden_ratios", "inner_ratios"):
            if not isinstance(getattr(self, name), (tuple, list)):
                raise ConfigError(f"{name} must be a tuple of pruning ratios like (0.0, 0.5), "
                                  f"got {getattr(self, name)!r}")
        if not self.hidden_ratios or not self.inner_ratios:
            raise ConfigError("the search space is empty: give at least one hidden and one inner pruning ratio")
        for r in (*self.hidden_ratios, *self.inner_ratios):
            if isinstance(r, bool) or not isinstance(r, numbers.Real) or not 0.0 <= r <= MAX_RATIO:
                raise ConfigError(f"pruning ratio {r!r} is outside [0, {MAX_RATIO}]: 0 keeps everything, 0.5 keeps "
                                  "half")
        if self.coupled and len(self.hidden_ratios) != len(self.inner_ratios):
            raise ConfigError("coupled search space needs as many hidden as inner ratios; "
                              "give equal lists or set coupled: false")
        whole("round_to", self.round_to, maximum=MAX_ROUND_TO)
        if isinstance(self.attention, str) or not self.attention or \
                any(not isinstance(a, str) or a not in ATTENTION_KINDS for a in self.attention):
            raise ConfigError(f"`attention` choices {self.attention!r}: give one or more of {', '.join(ATTENTION_KINDS)}")
        if not self.gate_layers or any(isinstance(g, bool) or not isinstance(g, int) or not 0 <= g <= MAX_GATE_LAYERS
                                       for g in self.gate_layers):
            raise ConfigError(f"`gate_layers` choices {self.gate_layers!r}: give one or more integers in "
                              f"[0, {MAX_GATE_LAYERS}] (0: no gates)")
        if self.depths is not None and (not self.depths or any(isinstance(n, bool) or not isinstance(n, int) or n == 0
                                                               for n in self.depths)):
            raise ConfigError(f"`depths` choices {self.depths!r}: give one or more layer counts >= 1, or -1 for "
                              "the model's depth (-2 one fewer; or none for every depth)")
        if not isinstance(self.head_pruning, str) or self.head_pruning not in HEAD_PRUNING:
            raise ConfigError(f"unknown head pruning {self.head_pruning!r}; choose whole (drop heads) or dims "
                              "(narrow every head)")
        # a canonical order (softmax first, shallow gates and exits first) so that choice indices mean one thing
        object.__setattr__(self, "attention", tuple(a for a in ATTENTION_KINDS if a in self.attention))
        object.__setattr__(self, "gate_layers", tuple(sorted(set(self.gate_layers))))
        if self.depths is not None:  # counts first, shallowest first; then counts from the model's depth
            object.__setattr__(self, "depths", tuple(sorted(set(self.depths), key=lambda n: (n < 0, n))))

    def exits(self, arch: ArchSpec) -> Tuple[int, ...]:
        """The exit depths searched on ``arch`` (shallowest first): the space's, counted from its depth where
        negative, or every one of its layers."""
        if self.depths is None:
            return tuple(range(1, arch.layers + 1))
        resolved = [n if n > 0 else arch.layers + 1 + n for n in self.depths]
        if not all(1 <= n <= arch.layers for n in resolved):
            raise ConfigError(f"the search space's depths {list(self.depths)} exceed the model's {arch.layers} "
                              f"layer(s); choose depths in 1..{arch.layers} or -{arch.layers}..-1")
        return tuple(sorted(set(resolved)))

    def fixing(self, attention: Optional[str] = None, gate_layers: Optional[int] = None) -> "SearchSpace":
        """This space with the attention kind and/or the gates' depth fixed (None leaves a choice searched)."""
        return replace(self, attention=self.attention if attention is None else (attention,),
                       gate_layers=self.gate_layers if gate_layers is None else (gate_layers,))

    def to_dict(self) -> Dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Dict, arch: Optional[ArchSpec] = None) -> "SearchSpace":
        """A saved space; one saved before attention and gates were choices fixes them at ``arch``'s, and one
        saved before depths were a choice searched every depth, and one saved before head pruning was a
        choice dropped whole heads."""
        fixed = arch or ArchSpec()
        depths = d.get("depths")
        return cls(tuple(d["hidden_ratios"]), tuple(d["inner_ratios"]), d.get("coupled", True), d.get("round_to", 8),
                   tuple(d.get("attention", (fixed.attention,))), tuple(d.get("gate_layers", (fixed.gate_layers,))),
                   None if depths is None else tuple(depths), d.get("head_pruning", "whole"))

    def widths(self, arch: ArchSpec) -> List[Width]:
        """Candidate widths, widest first, duplicates removed."""
        pairs = zip(self.hidden_ratios, self.inner_ratios) if self.coupled else \
            product(self.hidden_ratios, self.inner_ratios)
        dims = self.head_pruning == "dims"
        out: List[Width] = []
        for rh, ri in pairs:
            hidden = self._keep(arch.hidden, rh, arch.heads if dims else arch.head_dim, "hidden")
            w = Width(hidden, self._keep(arch.inner, ri, 1, "inner"), arch.heads if dims else None)
            if w not in out:
                out.append(w)
        return sorted(out, key=lambda w: (-w.hidden, -w.inner))

    def _keep(self, size: int, ratio: float, multiple: int, what: str) -> int:
        """The kept share of ``size``, rounded to ``round_to``, or all of it for ratio 0, so that the model
        searched from is always a candidate whatever ``round_to`` (rounding 16 to a multiple of 3 would drop
        it); it must be a multiple of ``multiple`` (the head width for whole heads, the head count for
        narrowed ones, 1 for the inner size)."""
        step = self.round_to
        kept = size if ratio == 0 else min(size, max(step, int(round(size * (1.0 - ratio) / step)) * step))
        if kept % multiple:
            fix = f"into heads of width {multiple}; choose ratios that keep whole heads" \
                if self.head_pruning == "whole" else f"among {multiple} heads; choose ratios that split evenly"
            raise ConfigError(f"{what} width {kept} (ratio {ratio} of {size}, rounded to {step}) is not divisible "
                              + fix)
        return kept
