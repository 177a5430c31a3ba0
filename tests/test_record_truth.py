"""What a record says is what was computed: per-quantity convergence, true residuals, error bars on the
effective rank, boundary optima, the first-order term of sharpness, collinear fronts, one line per record.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from lscape_cli import datasets, models
from lscape_cli.core.landscape import sharpness as S
from lscape_cli.core.linalg import density, spectrum
from lscape_cli.core.linalg.hvp import HVP, Objective, flatten, gradient, norm
from lscape_cli.core.pareto import fronts as P
from lscape_cli.core.probe.engine import ProbeOutput, ProbeRequest, _eigen, run_probe

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_checkpoints" / "mlp-digits.safetensors"


class Diagonal:
    """``H = Q diag(d) Qᵀ`` (``Q = I`` unless ``rotate``): an operator with a known spectrum."""

    def __init__(self, d: torch.Tensor, rotate: bool = False) -> None:
        self.d = d
        self.q = (
            torch.linalg.qr(
                torch.randn(len(d), len(d), generator=torch.Generator().manual_seed(1), dtype=d.dtype)
            )[0]
            if rotate
            else None
        )
        self.params = {"w": torch.zeros_like(d)}
        self.batch_size = 1
        self.num_matvecs = 0

    def __call__(self, v: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        self.num_matvecs += 1
        if self.q is None:
            return {"w": self.d * v["w"]}
        return {"w": self.q @ (self.d * (self.q.T @ v["w"]))}

    @property
    def dim(self) -> int:
        return self.d.numel()

    def __enter__(self) -> Diagonal:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def _null_space_spectrum() -> torch.Tensor:
    """Top 5, 4, 3, a bulk in (0.1, 1), a lowest -0.5 and 100 values within 1e-9 of 0 (flat directions)."""
    gen = torch.Generator().manual_seed(0)
    bulk = 0.1 + 0.9 * torch.rand(200, generator=gen, dtype=torch.float64)
    top = torch.tensor([5.0, 4.0, 3.0, -0.5], dtype=torch.float64)
    flat = 1e-9 * (torch.rand(100, generator=gen, dtype=torch.float64) - 0.5)
    return torch.cat([top, bulk, flat])


def test_one_lanczos_for_both_ends_judges_each_quantity_on_its_own_pairs() -> None:
    op = Diagonal(_null_space_spectrum())
    out = ProbeOutput()
    _eigen(op, None, ProbeRequest(top_k=3, lambda_min=True, max_iter=200), out, None)  # type: ignore[arg-type]
    top, low = out.results["top_k"], out.results["lambda_min"]
    assert top["eigenvalues"] == pytest.approx([5.0, 4.0, 3.0], rel=1e-9)
    assert abs(low["estimate"] + 0.5) <= 1e-6 * 0.5  # the stopping rule's estimate held here
    assert abs(low["estimate"] + 0.5) <= low["nearest_eigenvalue_bound"]
    assert low["error_bound"] >= abs(low["estimate"] + 0.5)  # certified as the smallest, wider
    assert top["converged"] and top["converged_pairs"] == [True, True, True] and low["converged"]
    # stopped once every requested quantity converged, long before the 200-step budget; the zeros beside
    # lambda_min (which a relative test can never pass) were not asked for
    assert top["iterations"] == low["iterations"] < 100 and top["shared_run"] is True
    assert top["num_matvecs"] == top["iterations"] + 4  # one more product per reported pair


def test_lanczos_reports_each_pairs_convergence() -> None:
    op = Diagonal(_null_space_spectrum())
    res = spectrum.lanczos(op, k=1, which="both", k_smallest=3, max_iter=60, tol=1e-8)
    assert res.converged_pairs is not None and len(res.converged_pairs) == 4
    assert res.converged_pairs[:2] == [True, True]  # 5 and -0.5
    assert res.converged is False and not all(res.converged_pairs[2:])  # the zeros never pass a relative test


@pytest.fixture(scope="module")
def mlp64(tmp_path_factory: pytest.TempPathFactory) -> Objective:
    splits = datasets.load(datasets.DatasetSpec("digits"), tmp_path_factory.mktemp("d"), dtype=torch.float64)
    torch.manual_seed(0)
    spec = models.make_spec("mlp", {"input_shape": (1, 8, 8), "depth": 1, "width": 8})
    model = models.build(spec).double().eval()
    return Objective.from_module(model, splits.x["train"][:64], splits.y["train"][:64], "ce", 64)


def test_top_k_residuals_are_the_true_residuals(mlp64: Objective) -> None:
    res = spectrum.lanczos(HVP(mlp64), k=3, tol=1e-10, eigenvectors=True, true_residuals=True)
    assert res.converged and res.eigenvectors is not None and res.ritz_residuals is not None
    with HVP(mlp64) as op:
        for theta, y, reported in zip(res.eigenvalues, res.eigenvectors, res.residuals, strict=True):
            v = flatten(y)
            direct = float((flatten(op(y)) - theta * v).norm() / v.norm())
            assert reported == pytest.approx(direct, rel=1e-9) and reported > 0
    assert res.num_matvecs == res.iterations + 3


def test_probe_records_true_residuals_and_per_quantity_flags(cli, tmp_path: Path) -> None:
    ckpt = tmp_path / "m.safetensors"
    shutil.copy(SAMPLE, ckpt)
    result = cli(
        "probe", ckpt, "--top-k", "3", "--lambda-min", "--dtype", "float64", "--device", "cpu", "--json"
    )
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 1  # one record, one line
    r = json.loads(result.stdout)["results"]
    assert all(x > 0 for x in r["top_k"]["residuals"])  # not the recurrence's underflowed estimates
    assert len(r["top_k"]["ritz_residual_estimates"]) == 3 and "ritz_residual_estimate" in r["lambda_min"]
    assert r["top_k"]["converged_pairs"] == [True, True, True] and r["lambda_min"]["converged"] is True


def test_effective_rank_carries_a_jackknife_stderr_that_shrinks_with_runs() -> None:
    d = torch.cat([torch.linspace(1.0, 10.0, 40, dtype=torch.float64), torch.zeros(260, dtype=torch.float64)])
    exact = density.effective_rank(d)
    few = [
        density.effective_rank_jackknife(density.slq(Diagonal(d, rotate=True), 4, 40, seed=s))
        for s in range(6)
    ]
    many = density.effective_rank_jackknife(density.slq(Diagonal(d, rotate=True), 16, 40, seed=0))
    assert all(f["stderr"] is not None and f["stderr"] > 0 for f in few)
    spread = float(np.std([f["estimate"] for f in few], ddof=1))
    mean_se = float(np.mean([f["stderr"] for f in few]))
    assert 0.4 < spread / mean_se < 2.5  # the stderr describes the seed-to-seed spread
    assert many["stderr"] < 0.75 * mean_se  # 4x the runs: about half the error
    assert abs(many["estimate"] - exact) < 4 * many["stderr"] + 0.05 * exact
    one = density.effective_rank_jackknife(density.slq(Diagonal(d, rotate=True), 1, 40, seed=0))
    assert one["stderr"] is None and one["num_runs"] == 1


def test_lambda_g_at_the_end_of_its_scan_is_reported_as_a_boundary() -> None:
    x = np.array([1.0, 0.5, 0.2, 0.15])
    y = np.array([1.0, 3.0, 2.0, 5.0])
    res = P.global_lambda(x, y, target=3.0 * y + 1.0)  # the proxy only approaches the target as lambda grows
    assert res["lambda_G_at_bound"] is True and res["lambda_g"] == res["scan"]["lambda"][-1]
    assert "boundary value, not a fitted minimum" in res["warning"]
    inner = P.global_lambda(
        np.array([1.0, 0.5, 0.2, 0.15, 0.14, 0.16]),
        np.array([1.0, 0.8, 0.7, 1.5, 2.5, 4.0]),
        3.0
        + 2.0
        * (np.array([1.0, 0.5, 0.2, 0.15, 0.14, 0.16]) + 0.3 * np.array([1.0, 0.8, 0.7, 1.5, 2.5, 4.0])),
    )
    assert inner["lambda_G_at_bound"] is False and "warning" not in inner


def test_exactly_collinear_points_leave_the_middle_off_the_hull_chain() -> None:
    pts = np.array([[0.1, 0.97], [0.2, 0.94], [0.3, 0.91]])  # y = 1 - 0.3 x; the naive cross is +1.4e-17
    assert P.hull_front(pts).tolist() == [0, 2]
    bent = np.array([[0.1, 0.97], [0.2, 0.94 - 1e-9], [0.3, 0.91]])  # a real bend stays
    assert P.hull_front(bent).tolist() == [0, 1, 2]


def _shifted_least_squares() -> tuple[Objective, float]:
    """Linear regression (MSE, H = (2/N) AᵀA ⊗ I) moved off its minimum: ``||g|| > 0``."""
    gen = torch.Generator().manual_seed(0)
    n, d, classes = 60, 4, 3
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    y = torch.randint(0, classes, (n,), generator=gen)
    a = torch.cat([x, torch.ones(n, 1, dtype=torch.float64)], 1)
    sol = torch.linalg.lstsq(a, torch.nn.functional.one_hot(y, classes).double()).solution
    model = models.build(models.make_spec("linear", {"input_shape": (d,), "num_classes": classes})).double()
    with torch.no_grad():
        model.head.weight.copy_(sol[:d].T)
        model.head.bias.copy_(sol[d] + 0.01)
    lam = float(torch.linalg.eigvalsh(2.0 / n * a.T @ a).max())
    return Objective.from_module(model.eval(), x, y, "mse"), lam


def test_worst_case_sharpness_shows_the_first_order_term_off_a_minimum() -> None:
    obj, lam = _shifted_least_squares()
    g = float(norm(gradient(obj)))
    eps = 1e-3
    req = ProbeRequest(lambda_max=True, tol=1e-10, sharpness_eps=(eps,), sharpness_steps=30)
    pred = run_probe(obj, req).results["sharpness"][0]["quadratic_prediction"]
    assert pred["first_order_eps_grad_norm"] == pytest.approx(eps * g, rel=1e-12)
    assert pred["half_eps2_lambda_max"] == pytest.approx(0.5 * eps**2 * lam, rel=1e-8)
    assert pred["quadratic_term_dominates"] is False  # eps ||g|| >> 1/2 eps^2 lambda_max here
    assert pred["quadratic_model_holds"] is False
    rise = pred["measured_max_rise"]
    # on a quadratic the max over the ball lies between eps||g|| (delta along g) and the sum of both maxima
    assert eps * g <= rise <= pred["first_plus_second_order"] * (1 + 1e-9)
    assert rise > 3 * pred["half_eps2_lambda_max"]  # the quadratic term alone would be far off
    big = S.ball_prediction(1.0, g, lam)
    assert big["quadratic_term_dominates"] is (big["quadratic_term_dominates_from_eps"] <= 1.0)
    assert big["quadratic_model_holds"] is None  # no measured rise: the model is untested


def test_quadratic_model_holds_only_where_the_measured_rise_agrees() -> None:
    # the terms alone say "quadratic" (eps ||g|| = 0.01 << 1/2 eps^2 lambda_max = 1); the measured rise
    # decides whether the Taylor model holds: 2.05x its bound (third-order terms) is not agreement
    inside = S.ball_prediction(1.0, 0.01, 2.0, measured_rise=1.005)
    outside = S.ball_prediction(1.0, 0.01, 2.0, measured_rise=2.05 * 1.01)
    assert inside["quadratic_term_dominates"] and outside["quadratic_term_dominates"]
    assert inside["quadratic_model_holds"] is True and outside["quadratic_model_holds"] is False
    assert outside["measured_over_first_plus_second_order"] == pytest.approx(2.05)
    assert "does not hold" in outside["note"]


def test_noise_prediction_is_compared_with_the_measured_rise() -> None:
    obj, _ = _shifted_least_squares()
    req = ProbeRequest(trace=True, trace_matvecs=30, noise_sigmas=(1e-3, 0.3), noise_samples=50)
    out = run_probe(obj, req)
    small, large = out.results["noise"]["curve"]
    g = float(norm(gradient(obj)))
    for row in (small, large):
        model = row["quadratic_model"]
        assert model["first_order_spread_sigma_grad_norm"] == pytest.approx(row["sigma"] * g, rel=1e-12)
        assert model["measured_over_predicted"] == pytest.approx(
            row["loss_rise"] / row["predicted_rise_half_sigma2_trace"], rel=1e-12
        )
    # the loss is quadratic, so the model holds at any sigma up to the draws' noise
    assert (
        small["quadratic_model"]["quadratic_model_applies"]
        and large["quadratic_model"]["quadratic_model_applies"]
    )
    assert math.isfinite(small["quadratic_model"]["first_order_stderr_of_mean"])


def test_json_prints_one_line_per_record(cli, tmp_path: Path, tiny_args) -> None:
    result = cli(*tiny_args(tmp_path / "run", "--restarts", "2", "--json"))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and all(json.loads(line)["schema"] == "lscape.train/1" for line in lines)
    written = (tmp_path / "run" / "model-r000.train.json").read_text()
    assert written.startswith('{\n  "schema"')  # files keep indent=2
    info = cli("info", tmp_path / "run" / "model-r000.safetensors", "--json")
    assert info.exit_code == 0 and len(info.stdout.splitlines()) == 1
