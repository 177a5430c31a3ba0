"""Sample mean and variance of a few numbers (restarts, batches, random draws), in plain floats.

:func:`mean_var` is the one place the library averages repeated scalar measurements; callers take the
standard deviation ``sqrt(var)`` or the standard error of the mean ``sqrt(var / n)`` from it.
(:func:`lscape_cli.core.linalg.trace.mean_stderr` does the same over a tensor of probe values.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def mean_var(values: Sequence[float]) -> tuple[float, float]:
    """Mean and unbiased sample variance (``ddof=1``; nan for a single value), summed in order."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, math.nan
    return mean, sum((v - mean) ** 2 for v in values) / (n - 1)


def mean_stderr(values: Sequence[float]) -> tuple[float, float]:
    """Mean and its standard error ``sqrt(var / n)`` (nan for a single value)."""
    mean, var = mean_var(values)
    return mean, math.sqrt(var / len(values)) if len(values) > 1 else math.nan
