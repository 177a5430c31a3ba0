"""Coverage of the reported uncertainties against exact dense Hessians (slow: ~25 min each on 2 cores).

Runs ``benchmarks/bench_uncertainty.py`` (its docstring says what it measures): an MSE MLP and a CE CNN,
float64 and float32, every trace method, tr(H) and ‖H‖_F, 200 seeds each; every row must have
``|estimate − exact| < 2 · uncertainty`` in 90-99% of seeds. The second test takes the CE CNN trained to
a loss of 2e-5, where float32 rounding moves ‖H‖_F by ten standard errors, and asks for 93-98% there
for every row, the trace included.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "bench_uncertainty", ROOT / "benchmarks" / "bench_uncertainty.py"
    )
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench  # dataclasses look their module up while the class is created
    spec.loader.exec_module(bench)
    return bench


def _uncalibrated(rows: list[dict]) -> list[tuple]:
    return [
        (r["problem"], r["dtype"], r["method"], r["quantity"], r["cover"][2])
        for r in rows
        if not r["calibrated"]
    ]


@pytest.mark.slow
def test_uncertainties_cover_the_truth_as_often_as_they_claim() -> None:
    rows = _bench().main(["--seeds", "200"])
    assert len(rows) == 2 * 2 * 3 * 2  # problems x dtypes x methods x quantities
    bad = _uncalibrated(rows)
    assert not bad, f"|z| < 2 outside 90-99%: {bad}"


@pytest.mark.slow
def test_the_float32_floor_carries_a_rounding_dominated_frobenius_norm() -> None:
    # ‖H‖_F: float32 rounding is 2-18x the standard error; the trace: krylov-hutch++'s remainder is skewed
    # (its stderr from the products covers 94.0%, the probes' spread covered 89.5%: docs/benchmarks.md)
    problem = ["--problems", "cnn-ce-long", "--dtypes", "float32", "--band", "0.93,0.98"]
    rows = _bench().main(["--seeds", "200", *problem])
    assert len(rows) == 3 * 2  # methods x quantities
    bad = _uncalibrated(rows)
    assert not bad, f"|z| < 2 outside 93-98%: {bad}"
