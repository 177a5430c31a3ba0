"""Curvature estimators against exact answers on tiny float64 problems (DESIGN.md, "Correctness principles").

References: the dense Hessian from ``torch.func.hessian`` of the whole-split mean loss, its ``eigvalsh``
spectrum, and the closed form ``H = (2/N) XᵀX`` of linear least squares.
"""

from __future__ import annotations

import gc
import math
import weakref
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from lscape_cli import datasets, models
from lscape_cli.core.linalg import density, spectrum, trace
from lscape_cli.core.linalg.hvp import (
    HVP,
    STRATEGIES,
    DenseOperator,
    Objective,
    axpy,
    dot,
    flatten,
    gaussian,
    loss_and_gradient,
    norm,
    rademacher,
    unflatten,
)
from lscape_cli.core.objective import loss_mean

N_SAMPLES = 64
CASES = {
    "mlp-ce": {"model": "mlp", "options": {"depth": 1, "width": 8}, "loss": "ce"},
    "mlp-mse": {"model": "mlp", "options": {"depth": 1, "width": 8}, "loss": "mse"},
    "cnn-ce": {"model": "cnn", "options": {"width": 2, "hidden": 8}, "loss": "ce"},
}


@dataclass
class Problem:
    model: nn.Module
    obj: Objective
    hessian: torch.Tensor  # (n, n) dense reference
    eigenvalues: torch.Tensor  # (n,) ascending

    def objective(self, max_batch: int) -> Objective:
        return Objective.from_module(self.model, self.obj.x, self.obj.y, self.obj.loss, max_batch)


def dense_hessian(obj: Objective) -> torch.Tensor:
    def full_loss(flat: torch.Tensor) -> torch.Tensor:
        logits = torch.func.functional_call(obj.model, (unflatten(flat, obj.params), obj.buffers), (obj.x,))
        return loss_mean(logits, obj.y, obj.loss)

    return torch.func.hessian(full_loss)(flatten(obj.params))


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.Tensor, torch.Tensor]:
    splits = datasets.load(
        datasets.DatasetSpec("digits"), Path(tmp_path_factory.mktemp("data")), dtype=torch.float64
    )
    return splits.x["train"][:N_SAMPLES], splits.y["train"][:N_SAMPLES]


@pytest.fixture(scope="module", params=list(CASES))
def problem(request: pytest.FixtureRequest, digits: tuple[torch.Tensor, torch.Tensor]) -> Problem:
    case = CASES[request.param]
    torch.manual_seed(0)
    spec = models.make_spec(case["model"], {"input_shape": (1, 8, 8), **case["options"]})
    model = models.build(spec).to(torch.float64).eval()
    obj = Objective.from_module(model, *digits, loss=case["loss"], max_batch=N_SAMPLES)
    hessian = dense_hessian(obj)
    return Problem(model, obj, hessian, torch.linalg.eigvalsh(hessian))


def exact_trace(p: Problem) -> float:
    return float(p.eigenvalues.sum())


def exact_frobenius(p: Problem) -> float:
    return float(p.eigenvalues.square().sum().sqrt())


def vectors(obj: Objective, count: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [gaussian(obj.params, generator) for _ in range(count)]


# --- Hessian-vector products ----------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_equals_dense_hessian(problem: Problem, strategy: str) -> None:
    vs = vectors(problem.obj, 3)
    with HVP(problem.obj, strategy, batch_size=2) as op:  # batch 2 of 3: a full and a partial vmap group
        single = op(vs[0])
        many = op.hvp_many(vs)
        assert op.num_matvecs == 4
    for v, hv in zip(vs, many, strict=True):
        torch.testing.assert_close(flatten(hv), problem.hessian @ flatten(v), atol=1e-10, rtol=0)
    torch.testing.assert_close(flatten(single), flatten(many[0]), atol=1e-12, rtol=0)


@pytest.mark.parametrize(
    ("strategy", "retain_chunks"),
    [
        ("double_backward", None),
        ("double_backward", 1),
        ("double_backward", 0),
        ("fwd_rev", None),
        ("vmap", None),
    ],
)
def test_chunking_changes_nothing(problem: Problem, strategy: str, retain_chunks: int | None) -> None:
    (v,) = vectors(problem.obj, 1, seed=1)
    whole = HVP(problem.objective(N_SAMPLES), strategy)(v)
    chunked = HVP(problem.objective(24), strategy, retain_chunks=retain_chunks)(v)  # chunks of 24, 24, 16
    torch.testing.assert_close(flatten(chunked), flatten(whole), atol=1e-12, rtol=0)


def test_gradient_is_the_chunked_mean(problem: Problem) -> None:
    value, grad = loss_and_gradient(problem.objective(24))
    flat = flatten(problem.obj.params).requires_grad_(True)
    logits = torch.func.functional_call(problem.model, unflatten(flat, problem.obj.params), (problem.obj.x,))
    ref_value = loss_mean(logits, problem.obj.y, problem.obj.loss)
    (ref_grad,) = torch.autograd.grad(ref_value, flat)
    assert value == pytest.approx(float(ref_value.detach()), rel=1e-12)
    torch.testing.assert_close(flatten(grad), ref_grad, atol=1e-12, rtol=0)


def test_vector_helpers() -> None:
    like = {"a": torch.zeros(2, 3, dtype=torch.float64), "b": torch.zeros(4, dtype=torch.float64)}
    x, y = gaussian(like, torch.Generator().manual_seed(0)), gaussian(like, torch.Generator().manual_seed(1))
    assert float(dot(x, y)) == pytest.approx(float(flatten(x) @ flatten(y)))
    assert float(norm(x)) == pytest.approx(float(flatten(x).norm()))
    torch.testing.assert_close(flatten(axpy(2.0, x, y)), flatten(y) + 2 * flatten(x))
    torch.testing.assert_close(flatten(unflatten(flatten(x), like)), flatten(x))


def test_objective_refuses_a_random_model(digits: tuple[torch.Tensor, torch.Tensor]) -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.Dropout(0.5)).to(torch.float64)
    with pytest.raises(ValueError, match="train mode with Dropout"):
        Objective.from_module(model, *digits)
    Objective.from_module(model.eval(), *digits)


# --- Eigenvalues ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stop", spectrum.STOPS)
def test_lanczos_top_eigenvalues(problem: Problem, stop: str) -> None:
    exact = problem.eigenvalues.flip(0)
    for k in (1, 3):
        res = spectrum.lanczos(HVP(problem.obj), k=k, tol=1e-6, eigenvectors=True, stop=stop)
        assert res.converged and res.num_matvecs == res.iterations < 80 and res.stop == stop
        torch.testing.assert_close(
            torch.tensor(res.eigenvalues, dtype=torch.float64), exact[:k], rtol=1e-6, atol=0
        )
        tested = res.residuals if stop == "residual" else res.stop_estimates
        assert tested is not None and res.stop_estimates is not None
        assert all(r <= 1e-6 * abs(t) for r, t in zip(tested, res.eigenvalues, strict=True))
        errors = (torch.tensor(res.eigenvalues, dtype=torch.float64) - exact[:k]).abs()
        assert all(e <= b + 1e-12 for e, b in zip(errors.tolist(), res.stop_estimates, strict=True))
        for theta, y, reported in zip(res.eigenvalues, res.eigenvectors or [], res.residuals, strict=True):
            y = flatten(y)
            true_residual = float((problem.hessian @ y - theta * y).norm())
            assert float(y.norm()) == pytest.approx(1.0, abs=1e-10)
            assert true_residual == pytest.approx(
                reported, abs=1e-9
            )  # the recurrence residual is the real one


def test_bound_stop_needs_no_more_products_than_the_residual_stop(problem: Problem) -> None:
    for k in (1, 3):
        bound = spectrum.lanczos(HVP(problem.obj), k=k, tol=1e-6, stop="bound")
        residual = spectrum.lanczos(HVP(problem.obj), k=k, tol=1e-6, stop="residual")
        assert bound.num_matvecs <= residual.num_matvecs
        assert bound.stop_estimates is not None
        assert all(b <= r for b, r in zip(bound.stop_estimates, bound.residuals, strict=True))


def test_lanczos_smallest_and_both(problem: Problem) -> None:
    lam_min, lam_max = float(problem.eigenvalues[0]), float(problem.eigenvalues[-1])
    res = spectrum.lanczos(HVP(problem.obj), k=1, which="smallest", tol=1e-6, stop="residual")
    assert res.converged and res.residuals[0] <= 1e-6 * abs(res.eigenvalues[0])
    assert res.eigenvalues[0] == pytest.approx(lam_min, abs=1e-6 * abs(lam_min))
    both = spectrum.lanczos(HVP(problem.obj), k=1, which="both", tol=1e-6)
    assert both.eigenvalues == pytest.approx([lam_max, lam_min], rel=1e-6)
    assert lam_min < 0 and spectrum.condition_number(*both.eigenvalues) is None  # indefinite at init


def test_power_iteration_finds_largest_magnitude(problem: Problem) -> None:
    ev = problem.eigenvalues
    target = float(ev[ev.abs().argmax()])
    res = spectrum.power_iteration(HVP(problem.obj), tol=1e-6, max_iter=5000)
    assert res.converged and res.residuals[0] <= 1e-6 * abs(res.eigenvalues[0])
    assert res.eigenvalues[0] == pytest.approx(target, rel=1e-6)
    lanczos = spectrum.lanczos(HVP(problem.obj), k=1, tol=1e-6)
    assert lanczos.num_matvecs < res.num_matvecs  # same tolerance, fewer products


def test_lanczos_restarts_after_an_invariant_subspace() -> None:
    # Spectrum {5, 4, 1, 1, 1, 1}: a Krylov space holds at most 3 distinct eigenvalues, so the 4th largest
    # needs a restart orthogonal to the first (exactly invariant) space.
    basis = torch.linalg.qr(
        torch.randn(6, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ).Q
    matrix = basis @ torch.diag(torch.tensor([5.0, 4, 1, 1, 1, 1], dtype=torch.float64)) @ basis.T
    op = DenseOperator(matrix, {"w": torch.zeros(6, dtype=torch.float64)})
    res = spectrum.lanczos(op, k=4, tol=1e-10)
    assert res.converged and res.eigenvalues == pytest.approx([5, 4, 1, 1], abs=1e-10)


# --- Trace and Frobenius norm -----------------------------------------------------------------------------


ESTIMATORS = [trace.hutchinson, trace.hutchpp, trace.krylov_hutchpp]


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_trace_and_frobenius_within_three_stderr(problem: Problem, estimator: object) -> None:
    res = estimator(HVP(problem.obj), num_matvecs=60, seed=0)  # type: ignore[operator]
    assert res.trace.num_matvecs == res.frobenius.num_matvecs == 60
    assert abs(res.trace.estimate - exact_trace(problem)) <= 3 * res.trace.stderr
    assert abs(res.frobenius.estimate - exact_frobenius(problem)) <= 3 * res.frobenius.stderr
    assert abs(res.frobenius_sq.estimate - exact_frobenius(problem) ** 2) <= 3 * res.frobenius_sq.stderr


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_trace_error_shrinks_with_budget(problem: Problem, estimator: object) -> None:
    op = DenseOperator(
        problem.hessian, problem.obj.params
    )  # products are tested above; this tests statistics

    def mean_errors(budget: int) -> tuple[float, float]:
        runs = [estimator(op, num_matvecs=budget, seed=s) for s in range(6)]  # type: ignore[operator]
        tr = sum(abs(r.trace.estimate - exact_trace(problem)) for r in runs) / len(runs)
        fro = sum(abs(r.frobenius.estimate - exact_frobenius(problem)) for r in runs) / len(runs)
        return tr, fro

    (tr_small, fro_small), (tr_big, fro_big) = mean_errors(12), mean_errors(198)
    assert tr_big < 0.5 * tr_small and fro_big < 0.5 * fro_small


def test_hutchpp_beats_hutchinson_on_a_low_rank_spectrum() -> None:
    # The regime Hutch++ is for (and trained networks' Hessians are in): a few large eigenvalues.
    basis = torch.linalg.qr(
        torch.randn(200, 200, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ).Q
    eigenvalues = torch.cat(
        [torch.tensor([50.0, 30, 20, 10, 8, 5, 3, 2, 1, 1]), torch.full((190,), 0.01)]
    ).double()
    op = DenseOperator(
        basis @ torch.diag(eigenvalues) @ basis.T, {"w": torch.zeros(200, dtype=torch.float64)}
    )
    errors = {
        fn.__name__: sum(abs(fn(op, 45, seed=s).trace.estimate - float(eigenvalues.sum())) for s in range(5))
        for fn in (trace.hutchinson, trace.hutchpp)
    }
    assert errors["hutchpp"] < 0.25 * errors["hutchinson"]


def test_krylov_hutchpp_beats_hutchpp_on_a_decaying_spectrum() -> None:
    # λ_i = 100 / i: no gap for a one-step sketch to find; 30 Lanczos steps capture more of the top.
    basis = torch.linalg.qr(
        torch.randn(200, 200, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ).Q
    eigenvalues = 100.0 / torch.arange(1, 201, dtype=torch.float64)
    op = DenseOperator(
        basis @ torch.diag(eigenvalues) @ basis.T, {"w": torch.zeros(200, dtype=torch.float64)}
    )
    exact_tr, exact_fro = float(eigenvalues.sum()), float(eigenvalues.square().sum().sqrt())

    def rms(fn: object) -> tuple[float, float]:
        runs = [fn(op, 45, seed=s) for s in range(10)]  # type: ignore[operator]
        tr = math.sqrt(sum((r.trace.estimate - exact_tr) ** 2 for r in runs) / len(runs))
        fro = math.sqrt(sum((r.frobenius.estimate - exact_fro) ** 2 for r in runs) / len(runs))
        return tr, fro

    (tr_pp, fro_pp), (tr_k, fro_k) = rms(trace.hutchpp), rms(trace.krylov_hutchpp)
    assert tr_k < 0.6 * tr_pp and fro_k < 0.3 * fro_pp


def test_krylov_hutchpp_top_part_is_exact_when_the_space_is_exhausted() -> None:
    # 12 Lanczos steps span R^12: the recurrence alone gives tr(H) = Σα and ‖H‖_F² = ‖T‖_F² exactly, and the
    # one probe left is projected to zero.
    basis = torch.linalg.qr(
        torch.randn(12, 12, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ).Q
    eigenvalues = torch.linspace(-1.0, 5.0, 12, dtype=torch.float64)
    h = basis @ torch.diag(eigenvalues) @ basis.T
    op = DenseOperator(h, {"w": torch.zeros(12, dtype=torch.float64)})
    res = trace.krylov_hutchpp(op, num_matvecs=13, seed=0, lanczos_fraction=0.95)
    assert res.trace.estimate == pytest.approx(float(eigenvalues.sum()), abs=1e-10)
    assert res.frobenius_sq.estimate == pytest.approx(float(eigenvalues.square().sum()), rel=1e-12)


# --- Spectral density -------------------------------------------------------------------------------------


def test_slq_quadrature_reproduces_probe_moments(problem: Problem) -> None:
    d = density.slq(HVP(problem.obj), num_runs=4, num_steps=6, seed=3)
    generator = torch.Generator().manual_seed(3)  # the same Rademacher starts, drawn in the same order
    starts = [flatten(rademacher(problem.obj.params, generator)) for _ in range(4)]
    for r, v in enumerate(starts):
        nodes, weights = d.nodes[d.run == r], d.weights[d.run == r] * d.num_runs
        assert float(weights.sum()) == pytest.approx(1.0, abs=1e-12)
        for k in (1, 2, 3, 5):  # Gauss quadrature with m = 6 nodes is exact up to degree 11
            exact = float(v @ torch.linalg.matrix_power(problem.hessian, k) @ v) / d.dim
            assert float((weights * nodes**k).sum()) == pytest.approx(exact, rel=1e-8)


def test_slq_moments_trace_and_effective_rank(problem: Problem) -> None:
    d = density.slq(HVP(problem.obj), num_runs=20, num_steps=80, seed=0)
    assert d.num_matvecs == 20 * 80
    tr, tr2 = density.trace(d), density.moment(d, 2)
    assert abs(tr.estimate - exact_trace(problem)) <= 3 * tr.stderr
    assert abs(tr2.estimate - exact_frobenius(problem) ** 2) <= 3 * tr2.stderr
    assert density.effective_rank_slq(d) == pytest.approx(
        density.effective_rank(problem.eigenvalues), rel=0.1
    )
    curve = density.density_curve(d, num_points=4000)
    assert float(torch.trapezoid(curve.density, curve.grid)) == pytest.approx(1.0, abs=1e-3)
    mean = float(torch.trapezoid(curve.density * curve.grid, curve.grid))
    assert mean == pytest.approx(tr.estimate / d.dim, rel=1e-3)  # Gaussian smoothing keeps the mean


def test_spectrum_summaries() -> None:
    assert density.effective_rank(torch.tensor([2.0, 2.0, 2.0, 0.0], dtype=torch.float64)) == pytest.approx(
        3.0
    )
    assert density.effective_rank(torch.tensor([5.0, 0.0, 0.0], dtype=torch.float64)) == pytest.approx(1.0)
    assert density.effective_rank(torch.tensor([-1.0, 1.0], dtype=torch.float64)) == pytest.approx(2.0)
    ev = torch.tensor([4.0, 2.0, 1.0], dtype=torch.float64)
    fro = float(ev.square().sum().sqrt())
    assert density.stable_rank(fro, 4.0) == pytest.approx(21 / 16)
    assert density.participation_ratio(float(ev.sum()), fro) == pytest.approx(49 / 21)


# --- Closed form: linear least squares --------------------------------------------------------------------


def test_linear_regression_closed_form() -> None:
    # L(w) = (1/N) Σ (wᵀx_i − 1)² ("mse" with one output: the one-hot target of class 0 is 1), H = (2/N) XᵀX.
    gen = torch.Generator().manual_seed(0)
    n_samples, dim = 40, 5
    x = torch.randn(n_samples, dim, generator=gen, dtype=torch.float64) * torch.tensor([3.0, 2, 1, 0.5, 0.2])
    model = nn.Linear(dim, 1, bias=False).to(torch.float64)
    obj = Objective.from_module(model, x, torch.zeros(n_samples, dtype=torch.int64), loss="mse", max_batch=16)
    hessian = 2 / n_samples * x.T @ x
    exact = torch.linalg.eigvalsh(hessian)
    op = HVP(obj)
    columns = [flatten(op(unflatten(e, obj.params))) for e in torch.eye(dim, dtype=torch.float64)]
    torch.testing.assert_close(torch.stack(columns, 1), hessian, atol=1e-12, rtol=0)
    w = flatten(obj.params)
    torch.testing.assert_close(
        flatten(loss_and_gradient(obj)[1]), 2 / n_samples * x.T @ (x @ w - 1), atol=1e-12, rtol=0
    )
    both = spectrum.lanczos(op, k=1, which="both", tol=1e-8)
    assert both.eigenvalues == pytest.approx([float(exact[-1]), float(exact[0])], rel=1e-8)
    assert spectrum.condition_number(*both.eigenvalues) == pytest.approx(
        float(exact[-1] / exact[0]), rel=1e-8
    )
    exactly = trace.hutchpp(op, num_matvecs=3 * dim + 2, seed=0)  # the sketch spans R^dim: no residual left
    assert exactly.trace.estimate == pytest.approx(float(hessian.trace()), rel=1e-10)
    assert exactly.frobenius.estimate == pytest.approx(float(hessian.norm()), rel=1e-10)
    assert exactly.trace.stderr < 1e-10


# --- The gradient graph is released -----------------------------------------------------------------------


def test_graph_is_released_after_every_estimator(problem: Problem) -> None:
    op = HVP(problem.objective(24), "double_backward")
    runs = [
        lambda: spectrum.lanczos(op, k=2),
        lambda: spectrum.power_iteration(op, max_iter=20),
        lambda: trace.hutchinson(op, 6),
        lambda: trace.hutchpp(op, 6),
        lambda: density.slq(op, 2, 5),
    ]
    for run in runs:
        run()
        assert not op.has_graph
    op(vectors(problem.obj, 1)[0])
    graph = weakref.ref(op._impl.graphs[0][0])  # type: ignore[attr-defined]
    op.close()
    gc.collect()
    assert graph() is None and not op.has_graph
    assert all(p.grad is None for p in problem.obj.params.values())
    assert all(p.grad is None for p in problem.model.parameters())


def test_graph_outlives_estimators_only_inside_a_callers_block(problem: Problem) -> None:
    op = HVP(problem.obj, "double_backward")
    with op:
        spectrum.lanczos(op, k=1)
        assert op.has_graph  # kept for the next estimator: built once for both
        trace.hutchinson(op, 4)
        assert op.has_graph
    assert not op.has_graph


def test_repeated_runs_do_not_accumulate_tensors(problem: Problem) -> None:
    op = HVP(problem.obj)

    def live_tensors() -> int:
        gc.collect()
        return sum(1 for o in gc.get_objects() if issubclass(type(o), torch.Tensor))

    trace.hutchinson(op, 4)
    before = live_tensors()
    for _ in range(3):
        trace.hutchinson(op, 4)
        spectrum.lanczos(op, k=1, max_iter=10)
    assert live_tensors() <= before
    assert math.isfinite(trace.hutchinson(op, 4).trace.estimate)


class _DiagonalOperator:
    """``H = diag(d)`` in the operator's dtype: a large operator whose spectrum is known exactly."""

    def __init__(self, d: torch.Tensor) -> None:
        self.d = d
        self.params = {"w": torch.zeros_like(d)}
        self.batch_size = 1
        self.num_matvecs = 0

    def __call__(self, v: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.hvp_many([v])[0]

    def hvp_many(self, vs: list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
        self.num_matvecs += len(vs)
        return [{"w": self.d * v["w"]} for v in vs]

    @property
    def dim(self) -> int:
        return self.d.numel()

    def __enter__(self) -> _DiagonalOperator:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def test_float32_products_give_eigenvalues_to_1e6() -> None:
    # 200k float32 parameters (a CNN's size): products, basis and working vectors are float32, inner products
    # accumulated in float64. Accumulated in float32 (over 2e5 entries) they put errors of 1-3e-6 into T_m.
    # The reference is the float32 operator's own spectrum (d32 exactly, in float64); each error must also
    # lie within the bound the run reports for it (true residual + rounding measured against float64).
    gen = torch.Generator().manual_seed(0)
    d = torch.rand(200_000, generator=gen, dtype=torch.float64) * 4.0 - 0.5  # bulk in [-0.5, 3.5]
    d[:3] = torch.tensor([6.137, 5.127, 4.286], dtype=torch.float64)  # the CNN's top-3 (bench reference)
    d32 = d.float()
    exact = torch.sort(d32.double(), descending=True).values[:3]
    res = spectrum.lanczos(
        _DiagonalOperator(d32), k=3, tol=1e-7, max_iter=300, seed=0,
        true_residuals=True, reference=_DiagonalOperator(d32.double()),
    )  # fmt: skip
    assert res.converged and res.vector_memory is not None and res.vector_memory["dtype"] == "float32"
    assert res.rounding is not None
    err = (torch.tensor(res.eigenvalues, dtype=torch.float64) - exact).abs()
    bound = torch.tensor(res.residuals, dtype=torch.float64) + torch.tensor(res.rounding, dtype=torch.float64)
    assert bool((err <= bound).all()), (err, bound)
    assert float((err / exact).max()) < 1e-6


def test_dot64_accumulates_float32_vectors_in_float64() -> None:
    gen = torch.Generator().manual_seed(0)
    rows, w = torch.randn(3, 100_003, generator=gen), torch.randn(100_003, generator=gen) + 1.0
    exact = rows.double() @ w.double()
    assert torch.allclose(spectrum.dot64(rows, w), exact, rtol=1e-12, atol=0)
    assert spectrum.norm64(w) == pytest.approx(float(w.double().norm()), rel=1e-12)
