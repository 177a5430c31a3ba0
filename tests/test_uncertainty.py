"""Uncertainty of trace and ‖H‖_F: the variance formula on known spectra, the rounding floor, the records.

The calibration over many seeds on real models is the slow test ``test_uncertainty_coverage.py`` and
``benchmarks/bench_uncertainty.py``; here each claim is pinned on a matrix whose answer is known.
"""

from __future__ import annotations

import math
import shutil
import statistics
from pathlib import Path
from typing import Any

import pytest
import torch

from lscape_cli.core.linalg import rounding, trace
from lscape_cli.core.linalg.hvp import HVP, DenseOperator, Objective

ROOT = Path(__file__).resolve().parents[1]
N = 60


def known(seed: int = 0, flat: bool = False) -> torch.Tensor:
    """``U diag(λ) Uᵀ``, random orthogonal ``U``: ``λ_i = 10 / i`` (decaying) or ``1 + i / N`` (flat)."""
    u = torch.linalg.qr(
        torch.randn(N, N, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    ).Q
    i = torch.arange(1, N + 1, dtype=torch.float64)
    return u @ torch.diag(1 + i / N if flat else 10.0 / i) @ u.T


def dense(matrix: torch.Tensor) -> DenseOperator:
    return DenseOperator(matrix, {"w": torch.zeros(matrix.shape[0], dtype=matrix.dtype)})


def rademacher_variance(a: torch.Tensor) -> float:
    """``Var(vᵀAv) = 2 (‖A‖_F² − Σ A_ii²)`` for Rademacher ``v`` and symmetric ``A``."""
    return 2 * float(a.square().sum() - a.diagonal().square().sum())


def test_hutchinson_stderr_is_the_rademacher_variance_formula() -> None:
    a, m, seeds = known(), 10, 400
    runs = [trace.hutchinson(dense(a), m, seed=s) for s in range(seeds)]
    for est, matrix in ((lambda r: r.trace, a), (lambda r: r.frobenius_sq, a @ a)):  # tr(H²) = E vᵀH²v
        want = rademacher_variance(matrix) / m
        mean_se2 = sum(est(r).stderr ** 2 for r in runs) / seeds
        spread = torch.tensor([est(r).estimate for r in runs], dtype=torch.float64).var().item()
        assert mean_se2 == pytest.approx(want, rel=0.1)  # E[s²/m] = Var/m: unbiased
        assert spread == pytest.approx(want, rel=0.2)  # and it is the spread over seeds
    assert all(r.trace.dof == m - 1 for r in runs)


@pytest.mark.parametrize("method", ["hutch++", "krylov-hutch++"])
def test_deflated_stderr_carries_the_sketch_randomness(method: str) -> None:
    # Law of total variance: E[estimate | Q] = tr(H) for every Q, so the remainder's stderr estimates the
    # whole variance; the spread over seeds (sketch and probes both redrawn) matches the mean stderr².
    a, seeds = known(1), 300
    exact = float(a.trace())
    runs = [trace.TRACE_METHODS[method](dense(a), 24, seed=s) for s in range(seeds)]
    est = torch.tensor([r.trace.estimate for r in runs], dtype=torch.float64)
    mean_se2 = sum(r.trace.stderr**2 for r in runs) / seeds
    assert abs(float(est.mean()) - exact) < 4 * math.sqrt(mean_se2 / seeds)  # unbiased
    assert float(est.var()) / mean_se2 == pytest.approx(1.0, abs=0.2)


def tiny_cnn_hessian() -> torch.Tensor:
    """The dense float64 Hessian of a briefly trained tiny CE CNN (177 parameters, 64 random images)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 3, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(48, 3)
    ).double()
    x, y = torch.randn(64, 1, 6, 6, dtype=torch.float64), torch.arange(64) % 3
    opt = torch.optim.Adam(net.parameters(), lr=3e-2)
    for _ in range(150):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    params = {k: v.detach() for k, v in net.named_parameters()}
    flat = torch.cat([v.reshape(-1) for v in params.values()])

    def loss(w: torch.Tensor) -> torch.Tensor:
        parts = dict(zip(params, w.split([v.numel() for v in params.values()]), strict=True))
        shaped = {k: parts[k].view_as(v) for k, v in params.items()}
        return torch.nn.functional.cross_entropy(torch.func.functional_call(net, shaped, (x,)), y)

    return torch.autograd.functional.hessian(loss, flat, vectorize=True)


def test_krylov_trace_stderr_is_the_exact_sd_given_its_basis(monkeypatch: pytest.MonkeyPatch) -> None:
    # Per seed, krylov-hutch++'s reported trace stderr against the exact sd of its estimate given the
    # Lanczos basis Q: √(Var(gᵀAg) / m), A = PHP (the law of total variance makes that the whole error).
    # The products give it within 0.85-1.18 on every one of 20 seeds; the probes' spread s/√m (14 dof)
    # ranged 0.53-1.32 on the same seeds.
    h = tiny_cnn_hessian()
    seen: dict[str, Any] = {}
    probe_stats = trace._probe_stats

    def spy(*args: Any) -> trace.ProbeStats:
        seen["basis"], seen["stats"] = args[6], probe_stats(*args)
        return seen["stats"]

    monkeypatch.setattr(trace, "_probe_stats", spy)
    ratios = []
    for seed in range(20):
        est = trace.krylov_hutchpp(dense(h), 45, seed=seed).trace
        q = torch.cat(seen["basis"]._filled()).double()
        p = torch.eye(h.shape[0], dtype=torch.float64) - q.T @ q
        exact_sd = math.sqrt(rademacher_variance(p @ h @ p) / seen["stats"].quad.shape[0])
        ratios.append(est.stderr / exact_sd)
        assert est.stderr_method == trace.REMAINDER_NORM and est.dof is not None and est.dof >= 14
    assert 0.9 < statistics.median(ratios) < 1.1
    assert min(ratios) > 0.75 and max(ratios) < 1.33, ratios


def test_remainder_stderr_from_products_of_a_known_matrix() -> None:
    # ProbeStats of a fixed A: the diagonal U-statistic is unbiased for Σ A_ii², so the mean of the
    # reported variances over many probe sets is the Rademacher variance 2(‖A‖_F² − Σ A_ii²)/m.
    a, m = known(2, flat=True), 6
    gen = torch.Generator().manual_seed(0)
    op = dense(a)
    draw = trace._draw(op, gen)
    sets = [trace._probe_stats(op, draw, m, None, 0, m) for _ in range(300)]
    diag = float(a.diagonal().square().sum())
    assert statistics.mean(s.diag_sq for s in sets) == pytest.approx(diag, rel=0.03)
    variances = [trace.remainder_stderr(s)[0] ** 2 for s in sets]
    assert statistics.mean(variances) == pytest.approx(rademacher_variance(a) / m, rel=0.1)
    assert trace.remainder_stderr(sets[0])[1] is not None and math.isnan(
        trace.remainder_stderr(trace._probe_stats(op, draw, 1, None, 0, 1))[0]
    )


@pytest.mark.parametrize("window", [None, 2])
def test_square_norm_stderr_from_pairs_of_products(
    monkeypatch: pytest.MonkeyPatch, window: int | None
) -> None:
    # ‖Ag‖² = gᵀBg with B = A²: over many probe sets the pair estimates are unbiased for ‖B‖_F² and
    # Σ B_ii², so the mean reported variance of mean ‖Ag‖² is 2(‖B‖_F² − Σ B_ii²)/m, also when only a
    # window of 2 recent products is kept (the large-model path).
    if window is not None:
        monkeypatch.setattr(trace, "PAIR_WINDOW_ELEMENTS", 0)
        monkeypatch.setattr(trace, "PAIR_WINDOW_MIN", window)
    a, m = known(3), 12
    b = a @ a
    gen = torch.Generator().manual_seed(1)
    op = dense(a)
    draw = trace._draw(op, gen)
    sets = [trace._probe_stats(op, draw, m, None, 0, m) for _ in range(400)]
    assert statistics.mean(s.sq_frob_sq for s in sets) == pytest.approx(float(b.square().sum()), rel=0.05)
    assert statistics.mean(s.sq_diag_sq for s in sets) == pytest.approx(
        float(b.diagonal().square().sum()), rel=0.05
    )
    variances = [trace.square_norm_stderr(s)[0] ** 2 for s in sets]
    assert statistics.mean(variances) == pytest.approx(rademacher_variance(b) / m, rel=0.1)
    assert all(trace.square_norm_stderr(s)[1] is not None for s in sets)
    assert math.isnan(trace.square_norm_stderr(trace._probe_stats(op, draw, 1, None, 0, 1))[0])


def test_t_factor_and_the_combined_uncertainty() -> None:
    assert trace.t_factor(14) == pytest.approx(1.0976, abs=1e-4)  # t_14(Φ(2)) / 2
    assert trace.t_factor(10_000) == pytest.approx(1.0, abs=1e-3) and trace.t_factor(None) == 1.0
    e = trace.Estimate(10.0, 0.3, "hutch++", 45, dof=14)
    assert e.uncertainty == pytest.approx(0.3 * trace.t_factor(14))
    small, big = e.with_rounding(0.1), e.with_rounding(1.0)
    assert small.uncertainty == pytest.approx(math.hypot(0.3 * trace.t_factor(14), 0.1))
    assert "note" not in small.to_dict() and not small.rounding_dominates
    assert big.rounding_dominates and big.to_dict()["note"] == trace.ROUNDING_NOTE
    assert "--dtype float64" in trace.ROUNDING_NOTE


def test_rounding_floor_finds_a_systematic_error() -> None:
    # A float32 operator that is 1e-3 too large: the floor is the bias it puts into tr and ‖·‖_F² (a flat
    # spectrum, so that 8 Hutchinson samples of the difference pin it to ~10%).
    a, delta = known(flat=True), 1e-3
    rnd = rounding.measure(dense(((1 + delta) * a).float()), dense(a), num_products=8, seed=0)
    assert (rnd.dtype, rnd.reference_dtype, rnd.scale, rnd.num_products) == ("float32", "float64", 1.0, 8)
    assert rnd.trace == pytest.approx(delta * float(a.trace()), rel=0.25)
    assert rnd.frobenius_sq == pytest.approx((2 * delta + delta**2) * float(a.square().sum()), rel=0.25)
    tf = trace.hutchinson(dense(a), 20, seed=0).with_rounding(rnd.trace, rnd.frobenius_sq)
    assert tf.frobenius.rounding == pytest.approx(rnd.frobenius_sq / (2 * tf.frobenius.estimate))


def test_rounding_of_a_float32_model_and_the_float64_scale() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3)).eval()
    gen = torch.Generator().manual_seed(0)
    obj32 = Objective.from_module(model, torch.randn(40, 8, generator=gen), torch.arange(40) % 3)
    assert rounding.reference_dtype(torch.float64) == (torch.float32, 2.0**-29)
    r32 = rounding.for_objective(obj32, HVP(obj32), 3, seed=0)
    obj64 = rounding.cast(obj32, torch.float64)
    r64 = rounding.for_objective(obj64, HVP(obj64), 3, seed=0)
    assert r32.reference_dtype == "float64" and r64.reference_dtype == "float32"
    assert 0 < r32.relative_error.max() < 1e-4  # float32 products: a few ulps off
    assert r64.trace == pytest.approx(2.0**-29 * r32.trace, rel=1e-3)  # same vectors, same difference


def test_probe_record_carries_stderr_rounding_and_uncertainty(cli: Any, tmp_path: Path) -> None:
    import json

    ckpt = tmp_path / "m.safetensors"
    shutil.copy(ROOT / "sample_checkpoints" / "mlp-digits.safetensors", ckpt)
    result = cli("probe", ckpt, "--quiet", "--device", "cpu", "--trace", "--lambda-max", "--density")
    assert result.exit_code == 0, result.output
    res = json.loads(ckpt.with_name("m.probe.json").read_text())["results"]
    assert res["rounding"]["dtype"] == "float32"
    assert res["rounding"]["num_products"] in (rounding.DEFAULT_PRODUCTS, rounding.MAX_PRODUCTS)
    for r in (res["trace"], res["frobenius"], res["density"]["trace"], res["density"]["moment2"]):
        assert r["rounding"] > 0 and r["dof"] >= 1
        k = trace.t_factor(r["dof"])
        assert r["uncertainty"] == pytest.approx(math.hypot(k * r["stderr"], r["rounding"]))
    assert res["trace"]["rounding"] == pytest.approx(res["rounding"]["trace"])
    assert res["trace"]["method"] == "krylov-hutch++" and res["trace"]["stderr_method"] == "remainder-norm"
    assert res["frobenius"]["stderr_method"] == "product-pairs"
    assert res["density"]["trace"]["stderr_method"] == "probe-spread"
    assert res["lambda_max"]["error_bound_includes_rounding"] is True
