"""Eigenvalue error bounds that hold, checked against dense float64 Hessians of tiny models.

Three models lscape did not train (an MSE MLP, a CE CNN, a LayerNorm + GELU model given as user code),
in float32 and float64: every bound a probe record states must be at least the true error, for top-k,
λmin converged and unconverged, and power iteration (:mod:`lscape_cli.core.linalg.eigen_bounds` says what each
bound claims). The dense reference is autograd's double backward (``torch.autograd.functional.hessian``),
not ``torch.func``, whose LayerNorm second derivative is wrong in torch 2.14.
"""

from __future__ import annotations

import math

import pytest
import torch

from lscape_cli.core.linalg import eigen_bounds, hvp_check, rounding
from lscape_cli.core.linalg.hvp import Objective, flatten, unflatten
from lscape_cli.core.objective import loss_mean
from lscape_cli.core.probe.engine import ProbeRequest, run_probe
from lscape_cli.errors import LscapeError


def _model(kind: str) -> tuple[torch.nn.Module, torch.Tensor, str]:
    torch.manual_seed(0)
    if kind == "mlp":
        net = torch.nn.Sequential(torch.nn.Linear(6, 10), torch.nn.Tanh(), torch.nn.Linear(10, 3))
        return net, torch.randn(64, 6), "mse"
    if kind == "cnn":
        net = torch.nn.Sequential(
            torch.nn.Conv2d(1, 3, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(48, 3)
        )
        return net, torch.randn(64, 1, 6, 6), "ce"
    net = torch.nn.Sequential(
        torch.nn.Linear(6, 8), torch.nn.LayerNorm(8), torch.nn.GELU(), torch.nn.Linear(8, 3)
    )
    return net, torch.randn(64, 6), "ce"


def problem(kind: str, dtype: torch.dtype) -> tuple[Objective, torch.Tensor]:
    """A briefly trained tiny model in ``dtype`` and its exact eigenvalues (ascending, float64)."""
    net, x, loss = _model(kind)
    y = torch.randint(0, 3, (x.shape[0],), generator=torch.Generator().manual_seed(1))
    opt = torch.optim.Adam(net.parameters(), lr=3e-2)
    for _ in range(150):
        opt.zero_grad()
        loss_mean(net(x), y, loss).backward()
        opt.step()
    obj = rounding.cast(Objective.from_module(net.eval(), x, y, loss), dtype)
    ref = rounding.cast(obj, torch.float64)

    def full_loss(flat: torch.Tensor) -> torch.Tensor:
        out = torch.func.functional_call(ref.model, (unflatten(flat, ref.params), ref.buffers), (ref.x,))
        return loss_mean(out, ref.y, loss)

    hessian = torch.autograd.functional.hessian(full_loss, flatten(ref.params).detach())
    return obj, torch.linalg.eigvalsh(hessian)


CASES = [(k, d) for k in ("mlp", "cnn", "layernorm") for d in (torch.float32, torch.float64)]


def check_record(entry: dict, exact: list[float], spectrum_: torch.Tensor) -> None:
    """Every stated bound covers the true error; the nearest-eigenvalue bound covers the nearest one.

    The dense reference is itself a float64 computation: ``eigvalsh`` is backward stable, its eigenvalues
    within a few ulps of ``‖H‖₂`` of the matrix it was given (Golub & Van Loan §8.3), so an error is only
    known to that much (negligible beside the float32 bounds; in float64 the same size as they are).
    """
    known = 4 * torch.finfo(torch.float64).eps * float(spectrum_.abs().max())
    values = entry.get("eigenvalues", [entry.get("estimate")])
    bounds = entry.get("error_bounds", [entry.get("error_bound")])
    nearest = entry.get("nearest_eigenvalue_bounds", [entry.get("nearest_eigenvalue_bound")])
    for theta, want, bound, near in zip(values, exact, bounds, nearest, strict=True):
        assert near > 0 and float((spectrum_ - theta).abs().min()) <= near + known
        if bound is not None:
            assert bound > 0 and abs(theta - want) <= bound + known, (theta, want, bound)


@pytest.mark.parametrize(("kind", "dtype"), CASES)
def test_every_stated_bound_covers_the_dense_truth(kind: str, dtype: torch.dtype) -> None:
    obj, eig = problem(kind, dtype)
    top, low = eig.flip(0)[:3].tolist(), float(eig[0])
    for max_iter in (200, 12, 5):  # converged; unconverged but certified; too few steps to certify
        req = ProbeRequest(top_k=3, lambda_min=True, max_iter=max_iter, tol=1e-7)
        res = run_probe(obj, req).results
        check_record(res["top_k"], top, eig)
        check_record(res["lambda_max"], top[:1], eig)
        check_record(res["lambda_min"], [low], eig)
        assert res["lambda_max"]["error_bound_includes_rounding"] is True
        assert ("rounding" in res) is (dtype == torch.float32)  # float32: always a rounding record
        if max_iter == 5:
            assert res["lambda_min"]["error_bound"] is None
            assert "too few" in res["lambda_min"]["error_bound_note"]
        if max_iter == 200:
            assert all(res["top_k"]["converged_pairs"]) and res["lambda_min"]["converged"]
    power = run_probe(obj, ProbeRequest(lambda_max=True, eig_method="power", max_iter=300)).results
    check_record(power["lambda_max"], top[:1], eig)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_an_unconverged_lambda_min_states_no_bound_below_its_error(dtype: torch.dtype) -> None:
    # the case: a residual certifies *an* eigenvalue, not the smallest
    obj, eig = problem("mlp", dtype)
    res = run_probe(obj, ProbeRequest(lambda_min=True, max_iter=20, tol=1e-10)).results["lambda_min"]
    error = abs(res["estimate"] - float(eig[0]))
    assert not res["converged"]
    assert res["error_bound"] is None or res["error_bound"] >= error
    assert res["error_bound"] is None or res["error_bound"] > res["nearest_eigenvalue_bound"]


def test_converged_bounds_are_never_zero_and_carry_the_rounding() -> None:
    obj, eig = problem("cnn", torch.float32)
    res = run_probe(obj, ProbeRequest(top_k=3, max_iter=200, tol=1e-7)).results["top_k"]
    assert all(r > 0 for r in res["roundings"]) and all(b > 0 for b in res["error_bounds"])
    errors = [abs(t - w) for t, w in zip(res["eigenvalues"], eig.flip(0)[:3].tolist(), strict=True)]
    assert max(errors) > 1e-9  # float32: the true error is real, and the bounds above cover it
    # the rounding on the pair's own vector is what the float32 run misses without it
    assert all(r > 0.1 * e for r, e in zip(res["roundings"], errors, strict=True))


def test_certificate_epsilon_and_its_step_threshold() -> None:
    assert eigen_bounds.epsilon(1000, 100) == pytest.approx(
        (math.log(2 * 1.648 * math.sqrt(1000) / 1e-3) / 199) ** 2
    )
    cert = eigen_bounds.Certificate(1e-3, 5, 1000, eigen_bounds.epsilon(1000, 5), None)
    k = cert.min_steps()
    assert eigen_bounds.epsilon(1000, k) < 0.5 <= eigen_bounds.epsilon(1000, k - 1)


@pytest.mark.parametrize("strategy", ["fwd_rev", "vmap"])
def test_a_named_torch_func_strategy_is_refused_on_layernorm(strategy: str) -> None:
    obj, _ = problem("layernorm", torch.float32)
    with pytest.raises(LscapeError) as info:
        run_probe(obj, ProbeRequest(lambda_max=True, hvp_strategy=strategy))
    line = info.value.line()
    assert f"--hvp {strategy}" in line and "LayerNorm" in line and "double_backward" in line
    mlp, _ = problem("mlp", torch.float32)  # where torch.func is right, the strategy runs
    assert hvp_check.relative_difference(mlp, strategy)[0] < hvp_check.TOLERANCE
    res = run_probe(mlp, ProbeRequest(lambda_max=True, hvp_strategy=strategy, max_iter=30)).results
    check = res["hvp"]["check"]
    assert check["against"] == "double_backward" and check["relative_difference"] < check["tolerance"]


def test_a_probe_record_with_the_new_keys_matches_its_schema(cli, tmp_path) -> None:
    import json
    import shutil
    from pathlib import Path

    from lscape_cli.storage.schemas import validate

    ckpt = tmp_path / "m.safetensors"
    shutil.copy(Path(__file__).resolve().parents[1] / "sample_checkpoints" / "mlp-digits.safetensors", ckpt)
    flags = ("--top-k", "2", "--lambda-min", "--max-iter", "6", "--hvp", "fwd_rev", "--quiet")
    result = cli("probe", ckpt, "--device", "cpu", *flags)
    assert result.exit_code == 0, result.output
    rec = json.loads(ckpt.with_name("m.probe.json").read_text())
    validate(rec, "probe.schema.json")
    res = rec["results"]
    assert res["hvp"]["check"]["against"] == "double_backward"
    assert res["lambda_min"]["error_bound"] is None  # 6 steps: too few for the certificate
    assert res["top_k"]["error_bounds"][1] is None and not res["top_k"]["converged_pairs"][1]
    assert res["rounding"]["dtype"] == "float32"
    # eigenvalues only: the record is their own products' rounding, no random vectors spent on it
    assert res["rounding"]["vectors"] == "ritz" and res["rounding"]["trace"] is None
    assert res["rounding"]["num_products"] == 3 and 0 < res["rounding"]["relative_error"] < 1e-3
