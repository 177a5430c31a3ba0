"""core/linalg/stats.py: the one mean/variance of repeated scalar measurements."""

from __future__ import annotations

import math
import statistics

import pytest

from lscape_cli.core.linalg.stats import mean_stderr, mean_var


def test_mean_var_and_stderr_match_the_textbook_formulas() -> None:
    values = [0.3, 1.7, -0.4, 2.2, 0.9]
    mean, var = mean_var(values)
    assert mean == pytest.approx(statistics.fmean(values), rel=1e-15)
    assert var == pytest.approx(statistics.variance(values), rel=1e-14)
    assert mean_stderr(values) == (mean, math.sqrt(var / len(values)))


def test_a_single_value_has_no_spread() -> None:
    assert mean_var([2.5])[0] == 2.5 and math.isnan(mean_var([2.5])[1])
    assert math.isnan(mean_stderr([2.5])[1])
