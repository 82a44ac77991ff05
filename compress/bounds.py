"""Checks of the values the public API is given: the numbers configurations and models are built
with, and the kinds of object each entry point takes. The command line checks its options against
declared bounds before anything runs (``compress.app.options``); these guard the same values given
from Python, where a NaN learning rate would train on silently, a fractional epoch count would fail
deep in a loop, a sequence length of 0 would never end, and a dict for a config would end in an
AttributeError far from the call."""
from __future__ import annotations

import math
import numbers
from typing import Any, Optional, Type

from compress.errors import ConfigError

MAX_SEED = 2 ** 31 - 1  # seeds are offset by epochs and steps; keep them inside every generator's range


def whole(name: str, value: Any, minimum: int = 1, maximum: Optional[int] = None) -> int:
    """``value`` as an int in [``minimum``, ``maximum``]; numpy integers pass, bools and fractions do not.
    The range is worded as the command line words its options' (``compress.app.options``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{name} must be a whole number, got {value!r}")
    if maximum is not None and not minimum <= value <= maximum:
        raise ConfigError(f"{name} must be in [{minimum}, {maximum}], got {value}")
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def real(name: str, value: Any, low: Optional[float] = None, above: Optional[float] = None,
         below: Optional[float] = None, high: Optional[float] = None, why: str = "") -> float:
    """``value`` as a finite float within the bounds given: ``low``/``high`` inclusive,
    ``above``/``below`` exclusive. NaN and inf always fail. ``why``, where a bound is not obvious, says
    what the value does, so that the refusal explains itself."""
    number = float(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) else math.nan
    ok = math.isfinite(number) and (low is None or number >= low) and (above is None or number > above) \
        and (below is None or number < below) and (high is None or number <= high)
    if not ok:
        raise ConfigError(f"{name} must be a finite number{_bounds(low, above, below, high)}, got {value!r}"
                          + (f"; {why}" if why else ""))
    return number


def instance(name: str, value: Any, kind: Type, fix: str) -> None:
    """Refuse ``value`` unless it is a ``kind``, saying what it was and how to make one (``fix``)."""
    if not isinstance(value, kind):
        raise ConfigError(f"{name} must be a {kind.__name__}, got {type(value).__name__}; {fix}")


def _bounds(low: Optional[float], above: Optional[float], below: Optional[float], high: Optional[float]) -> str:
    """The bounds as the error message says them: ' >= 0', ' > 0' or ' in [0, 1)'."""
    lower = f"[{low:g}" if low is not None else f"({above:g}" if above is not None else None
    upper = f"{high:g}]" if high is not None else f"{below:g})" if below is not None else None
    if lower and upper:
        return f" in {lower}, {upper}"
    if lower:
        return f" >= {low:g}" if low is not None else f" > {above:g}"
    if upper:
        return f" <= {high:g}" if high is not None else f" < {below:g}"
    return ""
