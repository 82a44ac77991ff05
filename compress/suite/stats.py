"""Summary statistics for the benchmark report: mean ± std over seeds, a paired t-test and a
t confidence interval.

The t-test's p-value uses the exact Student-t distribution for integer degrees of freedom
(Abramowitz & Stegun 26.7.3–26.7.4: a finite series in θ = atan(t/√ν)), and the interval's quantile
inverts it by bisection, so no SciPy is needed.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple


def mean_std(values: Sequence[float]) -> Tuple[float, float]:
    """Mean and sample standard deviation (n − 1); the std of a single value is 0."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def t_two_sided(t: float, df: int) -> float:
    """P(|T| ≥ |t|) for Student's t with ``df`` (a positive integer) degrees of freedom."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if math.isinf(t):
        return 0.0
    theta = math.atan(abs(t) / math.sqrt(df))
    s, c = math.sin(theta), math.cos(theta)
    # odd ν: (2/π)(θ + sinθ (cosθ + (2/3)cos³θ + … + (2·4…(ν−3))/(1·3…(ν−2)) cos^(ν−2)θ))
    if df % 2:
        term = total = c if df > 1 else 0.0
        for j in range(3, df - 1, 2):
            term *= (j - 1) / j * c * c
            total += term
        inside = 2.0 / math.pi * (theta + s * total)
    else:  # even ν: sinθ (1 + (1/2)cos²θ + (1·3)/(2·4)cos⁴θ + … up to cos^(ν−2)θ)
        term = total = 1.0
        for j in range(2, df - 1, 2):
            term *= (j - 1) / j * c * c
            total += term
        inside = s * total
    return min(1.0, max(0.0, 1.0 - inside))


def paired_t_test(a: Sequence[float], b: Sequence[float]) -> Optional[float]:
    """Two-sided p-value of the paired t-test of ``a`` against ``b`` (same seeds, same order); None
    with fewer than two pairs. Identical differences have no spread: p is 1 if they are all zero,
    else 0."""
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} vs {len(b)}")
    if len(a) < 2:
        return None
    diffs = [x - y for x, y in zip(a, b)]
    mean, std = mean_std(diffs)
    if std == 0.0:
        return 1.0 if mean == 0.0 else 0.0
    return t_two_sided(mean / (std / math.sqrt(len(diffs))), len(diffs) - 1)


def t_quantile(level: float, df: int) -> float:
    """The t with P(|T| ≤ t) = ``level`` for Student's t with ``df`` degrees of freedom (12.706 for
    0.95 and ν = 1, 1.960 as ν grows), found by bisection on ``t_two_sided``."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"a confidence level is in (0, 1), got {level}")
    low, high = 0.0, 1.0
    while t_two_sided(high, df) > 1.0 - level:
        high *= 2.0
    for _ in range(200):  # far past double precision on an interval that halves each step
        mid = (low + high) / 2.0
        if t_two_sided(mid, df) > 1.0 - level:
            low = mid
        else:
            high = mid
    return (low + high) / 2.0


def mean_interval(values: Sequence[float], level: float = 0.95) -> Optional[Tuple[float, float]]:
    """The two-sided t confidence interval of the mean of ``values`` at ``level``; None with fewer
    than two values, where there is no spread to build one from."""
    if len(values) < 2:
        return None
    mean, std = mean_std(values)
    half = t_quantile(level, len(values) - 1) * std / math.sqrt(len(values))
    return mean - half, mean + half
