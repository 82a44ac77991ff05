"""Summary statistics for the benchmark report: mean ± std over seeds, a paired t-test and a
t confidence interval.

The t-test's p-value is the exact Student-t tail, P(|T| ≥ t) = I_x(ν/2, 1/2) with x = ν / (ν + t²), the
regularized incomplete beta function evaluated by its continued fraction (Numerical Recipes 6.4,
modified Lentz) to double precision. The tail is computed directly, not as 1 − P(|T| < t), so a tiny
p-value (t = 20 at ν = 30: 6.7e-19) is not lost to cancellation. The interval's quantile inverts it by
bisection, so no SciPy is needed.
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
    """P(|T| ≥ |t|) for Student's t with ``df`` (a positive integer) degrees of freedom; ``t`` may not be NaN."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if math.isnan(t):
        raise ValueError("t is NaN: a p-value needs finite samples")
    square = t * t
    if square == 0.0:  # t = 0, or so small that its square underflows
        return 1.0
    if math.isinf(square):
        return 0.0
    x, y = df / (df + square), square / (df + square)  # y = 1 − x, without the cancellation near x = 1
    return min(1.0, _incomplete_beta(df / 2.0, 0.5, x, y))


def _incomplete_beta(a: float, b: float, x: float, y: float) -> float:
    """The regularized incomplete beta I_x(a, b), y = 1 − x, from the continued fraction that converges
    fast where x < (a + 1) / (a + b + 2), and elsewhere as 1 − I_y(b, a)."""
    front = math.exp(a * math.log(x) + b * math.log(y) + math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_fraction(a, b, x) / a
    return 1.0 - front * _beta_fraction(b, a, y) / b


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of I_x(a, b) by the modified Lentz method."""
    tiny = 1e-300  # stands in for a zero denominator

    def nonzero(v: float) -> float:
        return v if abs(v) > tiny else tiny

    c, d = 1.0, 1.0 / nonzero(1.0 - (a + b) * x / (a + 1.0))
    h = d
    for m in range(1, 100_000):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 / nonzero(1.0 + numerator * d)
            c = nonzero(1.0 + numerator / c)
            h *= d * c
        if abs(d * c - 1.0) <= 1e-15:
            return h
    raise ArithmeticError(f"the incomplete beta's continued fraction did not converge (a={a}, b={b}, x={x})")


def paired_t_test(a: Sequence[float], b: Sequence[float]) -> Optional[float]:
    """Two-sided p-value of the paired t-test of ``a`` against ``b`` (same seeds, same order); None
    with fewer than two pairs, or where a value is not finite (NaN would otherwise read as p = 0).
    Identical differences have no spread: p is 1 if they are all zero, else 0."""
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} vs {len(b)}")
    if len(a) < 2 or not all(math.isfinite(v) for v in (*a, *b)):
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
