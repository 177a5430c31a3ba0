"""95% intervals over restarts for the claims of a study: a difference of means, a mean, a rank correlation.

- Difference of two group means: Welch's interval, ``d ± t·√(s_a²/n_a + s_b²/n_b)`` with the
  Student t quantile at the Welch–Satterthwaite degrees of freedom (Welch 1947).
- One mean: ``x̄ ± t_{n−1}·s/√n``.
- Spearman's rank correlation ρ (average ranks for ties): Fisher's ``z = artanh ρ`` with standard error
  ``√(1.06/(n − 3))`` (Fieller, Hartley & Pearson 1957), back-transformed; needs n ≥ 5.

Pure functions of lists of floats; the report decides what the numbers mean.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """An estimate with its 95% interval and what it was computed from."""

    estimate: float
    lo: float
    hi: float
    se: float  # standard error (Fisher z scale for a correlation)
    dof: float | None = None  # degrees of freedom of the t quantile (None: normal quantile)


def _t(dof: float) -> float:
    from scipy.stats import t  # scipy only here: importing it costs ~0.3 s

    return float(t.ppf(0.5 + LEVEL / 2, dof))


def _mean_var(xs: list[float]) -> tuple[float, float]:
    """Mean and sample variance (ddof 1)."""
    mean = math.fsum(xs) / len(xs)
    return mean, math.fsum((x - mean) ** 2 for x in xs) / (len(xs) - 1)


def welch(a: list[float], b: list[float]) -> Interval:
    """mean(a) − mean(b) with Welch's 95% interval (each list holds 2 or more values)."""
    (ma, va), (mb, vb) = _mean_var(a), _mean_var(b)
    qa, qb = va / len(a), vb / len(b)
    d, se = ma - mb, math.sqrt(qa + qb)
    if se == 0.0:  # every value of each group the same: no spread, the interval is the point
        return Interval(d, d, d, 0.0, float(len(a) + len(b) - 2))
    dof = (qa + qb) ** 2 / (qa**2 / (len(a) - 1) + qb**2 / (len(b) - 1))
    half = _t(dof) * se
    return Interval(d, d - half, d + half, se, dof)


def mean(xs: list[float]) -> Interval:
    """The mean of 2 or more values with its Student t 95% interval."""
    m, v = _mean_var(xs)
    se = math.sqrt(v / len(xs))
    half = _t(len(xs) - 1) * se if se > 0 else 0.0
    return Interval(m, m - half, m + half, se, float(len(xs) - 1))


def ranks(xs: list[float]) -> list[float]:
    """Ranks 1..n, ties sharing the mean of their ranks."""
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    out = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def _pearson(x: list[float], y: list[float]) -> float | None:
    mx, my = math.fsum(x) / len(x), math.fsum(y) / len(y)
    sxy = math.fsum((a - mx) * (b - my) for a, b in zip(x, y, strict=True))
    sxx, syy = math.fsum((a - mx) ** 2 for a in x), math.fsum((b - my) ** 2 for b in y)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else None


def rho(x: list[float], y: list[float]) -> float | None:
    """Spearman's ρ: Pearson's correlation of the ranks; None when a column is constant."""
    r = _pearson(ranks(x), ranks(y))
    return None if r is None else max(-1.0, min(1.0, r))


def spearman(x: list[float], y: list[float]) -> Interval | None:
    """Spearman's ρ with its Fisher-z 95% interval (n ≥ 5); None when a column is constant."""
    r = rho(x, y)
    if r is None:
        return None
    se = math.sqrt(1.06 / (len(x) - 3))
    if abs(r) == 1.0:  # artanh is infinite: the interval shrinks to the point
        return Interval(r, r, r, se)
    from scipy.stats import norm

    z, q = math.atanh(r), float(norm.ppf(0.5 + LEVEL / 2))
    return Interval(r, math.tanh(z - q * se), math.tanh(z + q * se), se)
