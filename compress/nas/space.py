"""The width search space: pruning ratios for the hidden size d and the inner size D.

A ratio r keeps the leading round(d·(1−r)) dimensions, rounded to a multiple of ``round_to`` (8 by
default: friendly to vector units) and to whole heads. Coupled (the paper's default) pairs the
i-th hidden ratio with the i-th inner ratio; decoupled takes every combination.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from itertools import product
from typing import Dict, List, Tuple

from compress.arch import ArchSpec, Width
from compress.errors import ConfigError


@dataclass(frozen=True)
class SearchSpace:
    hidden_ratios: Tuple[float, ...] = (0.0, 0.25, 0.5)
    inner_ratios: Tuple[float, ...] = (0.0, 0.25, 0.5)
    coupled: bool = True
    round_to: int = 8

    def __post_init__(self) -> None:
        if not self.hidden_ratios or not self.inner_ratios:
            raise ConfigError("the search space is empty: give at least one hidden and one inner pruning ratio")
        for r in (*self.hidden_ratios, *self.inner_ratios):
            if not 0.0 <= r < 1.0:
                raise ConfigError(f"pruning ratio {r} is outside [0, 1): 0 keeps everything, 0.5 keeps half")
        if self.coupled and len(self.hidden_ratios) != len(self.inner_ratios):
            raise ConfigError("coupled search space needs as many hidden as inner ratios; "
                              "give equal lists or set coupled: false")
        if self.round_to < 1:
            raise ConfigError(f"round_to must be >= 1, got {self.round_to}")

    def to_dict(self) -> Dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Dict) -> "SearchSpace":
        return cls(tuple(d["hidden_ratios"]), tuple(d["inner_ratios"]), d.get("coupled", True), d.get("round_to", 8))

    def widths(self, arch: ArchSpec) -> List[Width]:
        """Candidate widths, widest first, duplicates removed."""
        pairs = zip(self.hidden_ratios, self.inner_ratios) if self.coupled else \
            product(self.hidden_ratios, self.inner_ratios)
        out: List[Width] = []
        for rh, ri in pairs:
            w = Width(self._keep(arch.hidden, rh, arch.head_dim, "hidden"), self._keep(arch.inner, ri, 1, "inner"))
            if w not in out:
                out.append(w)
        return sorted(out, key=lambda w: (-w.hidden, -w.inner))

    def _keep(self, size: int, ratio: float, head_dim: int, what: str) -> int:
        step = self.round_to
        kept = max(step, int(round(size * (1.0 - ratio) / step)) * step)
        kept = min(kept, size)
        if kept % head_dim:
            raise ConfigError(f"{what} width {kept} (ratio {ratio} of {size}, rounded to {step}) is not divisible "
                              f"into heads of width {head_dim}; choose ratios that keep whole heads")
        return kept
