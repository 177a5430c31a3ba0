"""`lscape probe`: the CLI contract, exactness on a real checkpoint, and the flatness measures' maths."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from lscape_cli import datasets, models
from lscape_cli.core.landscape import sharpness as S
from lscape_cli.core.linalg.hvp import Objective
from lscape_cli.models.loading import load_model
from lscape_cli.storage.schemas import validate

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_checkpoints" / "mlp-digits.safetensors"


@pytest.fixture()
def ckpt(tmp_path: Path) -> Path:
    """The tiny digits MLP, copied so outputs land in tmp_path."""
    dst = tmp_path / "m.safetensors"
    shutil.copy(SAMPLE, dst)
    return dst


def _record(path: Path) -> dict:
    return json.loads(path.read_text())


def test_default_set_writes_a_documented_record(cli, ckpt: Path) -> None:
    result = cli("probe", ckpt, "--quiet", "--device", "cpu")
    assert result.exit_code == 0, result.output
    rec = _record(ckpt.with_name("m.probe.json"))
    assert rec["schema"] == "lscape.probe/1"
    res = rec["results"]
    assert {"loss", "lambda_max", "trace", "frobenius", "grad_norm"} <= set(res)
    assert res["lambda_max"]["method"] == "lanczos" and res["lambda_max"]["converged"]
    lmax = res["lambda_max"]
    assert lmax["stop"] == "bound" and lmax["error_bound_includes_rounding"] is True
    # an eigenvalue within residual + rounding; lambda_max itself within the (wider) certified bound
    assert lmax["residual"] < lmax["nearest_eigenvalue_bound"] <= lmax["error_bound"]
    assert lmax["certificate"]["krylov_dim"] == lmax["iterations"]
    for key in ("trace", "frobenius"):
        assert (
            res[key]["method"] == "krylov-hutch++"
            and res[key]["num_matvecs"] == 45
            and res[key]["stderr"] > 0
        )
    assert rec["config"]["evaluation"]["mode"] == "eval" and rec["config"]["evaluation"]["split"] == "train"
    from lscape_cli.storage.files import sha256_file

    assert rec["inputs"]["checkpoint"] == {"path": "m.safetensors", "sha256": sha256_file(ckpt)}


def test_json_goes_to_stdout_and_equals_the_file(cli, ckpt: Path) -> None:
    result = cli("probe", ckpt, "--lambda-max", "--json", "--device", "cpu")
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed == _record(ckpt.with_name("m.probe.json"))
    assert set(printed["results"]) == {"loss", "lambda_max", "hvp", "curvature", "rounding"}  # float32
    assert printed["results"]["curvature"]["kind"] == "hessian"


def _dense_hessian(lm, x, y, loss) -> torch.Tensor:
    names = [n for n, _ in lm.module.named_parameters()]
    shapes = [p.shape for _, p in lm.module.named_parameters()]
    flat0 = torch.cat([p.detach().reshape(-1) for _, p in lm.module.named_parameters()])

    def f(flat: torch.Tensor) -> torch.Tensor:
        params, i = {}, 0
        for n, s in zip(names, shapes, strict=True):
            k = math.prod(s)
            params[n] = flat[i : i + k].reshape(s)
            i += k
        from lscape_cli.core.objective import loss_mean

        return loss_mean(torch.func.functional_call(lm.module, params, (x,)), y, loss)

    return torch.func.hessian(f)(flat0)


def test_cli_numbers_match_the_dense_hessian(cli, ckpt: Path) -> None:
    result = cli(
        "probe",
        ckpt,
        "--top-k",
        "3",
        "--lambda-min",
        "--trace",
        "--dtype",
        "float64",
        "--matvecs",
        "300",
        "--quiet",
        "--device",
        "cpu",
    )
    assert result.exit_code == 0, result.output
    res = _record(ckpt.with_name("m.probe.json"))["results"]
    lm = load_model(ckpt, dtype=torch.float64)
    sp = datasets.load(
        datasets.DatasetSpec.from_dict(lm.checkpoint.meta["dataset"]), Path("."), dtype=torch.float64
    )
    h = _dense_hessian(lm, sp.x["train"], sp.y["train"], "ce")
    exact = torch.linalg.eigvalsh(h)
    top = exact.flip(0)[:3].tolist()
    for got, want in zip(res["top_k"]["eigenvalues"], top, strict=True):
        assert abs(got - want) <= 1e-6 * abs(want)
    assert abs(res["lambda_max"]["estimate"] - top[0]) <= 1e-6 * top[0]
    assert abs(res["lambda_min"]["estimate"] - float(exact[0])) <= 1e-6 * float(exact.abs().max())
    tr = float(exact.sum())
    assert abs(res["trace"]["estimate"] - tr) <= 3 * res["trace"]["stderr"]
    fro = float(exact.pow(2).sum().sqrt())
    assert abs(res["frobenius"]["estimate"] - fro) <= 3 * res["frobenius"]["stderr"]


def test_power_iteration_from_the_cli_matches_the_dense_hessian(cli, ckpt: Path, error_line) -> None:
    """Seed 002's method: power iteration stops on its residual, and the residual bounds the error."""
    base = ("--lambda-max", "--eig-method", "power", "--dtype", "float64", "--quiet", "--device", "cpu")
    out = ckpt.with_name("power.probe.json")
    r = cli("probe", ckpt, *base, "--max-iter", "5000", "--out", out)
    assert r.exit_code == 0, r.output
    rec = _record(out)
    validate(rec, "probe.schema.json")
    lmax = rec["results"]["lambda_max"]
    lm = load_model(ckpt, dtype=torch.float64)
    sp = datasets.load(
        datasets.DatasetSpec.from_dict(lm.checkpoint.meta["dataset"]), Path("."), dtype=torch.float64
    )
    exact = torch.linalg.eigvalsh(_dense_hessian(lm, sp.x["train"], sp.y["train"], "ce"))
    want = float(exact[exact.abs().argmax()])  # the eigenvalue of largest magnitude
    assert lmax["method"] == "power" and lmax["converged"]
    assert lmax["residual"] <= 1e-6 * abs(lmax["estimate"]) * 1.0001
    assert abs(lmax["estimate"] - want) <= lmax["nearest_eigenvalue_bound"]
    assert lmax["error_bound"] is None and "power iteration" in lmax["error_bound_note"]
    assert lmax["num_matvecs"] == lmax["iterations"] + 1 > 2  # + the product that measures rounding
    short = ckpt.with_name("short.probe.json")
    r = cli("probe", ckpt, *base, "--max-iter", "2", "--out", short)
    assert r.exit_code == 0, r.output
    assert _record(short)["results"]["lambda_max"]["converged"] is False  # the budget ran out, and it says so
    r = cli("probe", ckpt, "--eig-method", "power", "--top-k", "3", "--device", "cpu")
    assert error_line(r) == (
        "Error: power iteration gives lambda_max only: --eig-method power "
        "(drop --top-k/--lambda-min or use --eig-method lanczos)"
    )


def test_trace_methods_and_stop_rules_from_the_cli(cli, ckpt: Path, error_line) -> None:
    base = ("--lambda-max", "--trace", "--dtype", "float64", "--quiet", "--device", "cpu")
    runs = {}
    for method, stop in (("krylov-hutch++", "bound"), ("hutch++", "residual"), ("hutchinson", "bound")):
        out = ckpt.with_name(f"{method}-{stop}.probe.json")
        r = cli("probe", ckpt, *base, "--trace-method", method, "--stop", stop, "--out", out)
        assert r.exit_code == 0, r.output
        res = _record(out)["results"]
        assert res["trace"]["method"] == res["frobenius"]["method"] == method
        lmax = res["lambda_max"]
        assert lmax["stop"] == stop and lmax["converged"]
        if stop == "residual":
            assert lmax["ritz_residual_estimate"] <= 1e-6 * abs(lmax["estimate"]) * 1.0001
        runs[method] = res
    lams = [r["lambda_max"]["estimate"] for r in runs.values()]
    assert max(lams) - min(lams) <= 1e-6 * abs(lams[0])
    traces = [(r["trace"]["estimate"], r["trace"]["stderr"]) for r in runs.values()]
    for (a, sa), (b, sb) in zip(traces, traces[1:], strict=False):  # unbiased estimators of one trace
        assert abs(a - b) <= 3 * math.hypot(sa, sb)
    r = cli("probe", ckpt, "--stop", "never", "--device", "cpu")
    assert error_line(r) == "Error: unknown value 'never': --stop (choose one of: bound, residual)"
    r = cli("probe", ckpt, "--trace-method", "hutch", "--device", "cpu")
    assert error_line(r) == (
        "Error: unknown value 'hutch': --trace-method (choose one of: krylov-hutch++, hutch++, hutchinson)"
    )


def test_check_gates(cli, ckpt: Path) -> None:
    ok = cli(
        "probe", ckpt, "--check", "lambda_max < 1e6", "--check", "loss >= 0", "--quiet", "--device", "cpu"
    )
    assert ok.exit_code == 0, ok.output
    checks = _record(ckpt.with_name("m.probe.json"))["results"]["checks"]
    assert [c["passed"] for c in checks] == [True, True]
    bad = cli("probe", ckpt, "--check", "lambda_max > 1e6", "--quiet", "--device", "cpu")
    assert bad.exit_code == 3, bad.output
    assert "Check failed: lambda_max > 1e6" in bad.stderr
    broken = cli("probe", ckpt, "--check", "lambda_max <", "--quiet", "--device", "cpu")
    assert broken.exit_code == 1
    assert broken.stderr.strip().startswith("Error: cannot parse check 'lambda_max <'")
    unknown = cli("probe", ckpt, "--check", "bogus < 1", "--quiet", "--device", "cpu")
    assert unknown.exit_code == 1 and "unknown quantity 'bogus'" in unknown.stderr


def test_bad_inputs(cli, ckpt: Path, tmp_path: Path) -> None:
    r = cli("probe", tmp_path / "nope.safetensors")
    assert (
        r.exit_code == 1
        and r.stderr.strip()
        == f"Error: checkpoint not found: {tmp_path / 'nope.safetensors'} (check the path)"
    )
    r = cli("probe", ckpt, "--sharpness", "0.1,-2")
    assert r.exit_code == 1 and "--sharpness" in r.stderr
    out = tmp_path / "missing" / "x.json"  # the directory is made, as `mkdir -p` users expect
    r = cli("probe", ckpt, "--grad-norm", "--device", "cpu", "--quiet", "--out", out)
    assert r.exit_code == 0 and out.is_file(), r.output
    r = cli("probe", ckpt, "--num-batches", "100", "--batch-size", "100", "--device", "cpu")
    assert r.exit_code == 1 and "disjoint batches" in r.stderr


def test_batches_summarise_per_batch_values(cli, ckpt: Path) -> None:
    result = cli(
        "probe",
        ckpt,
        "--top-k",
        "2",
        "--num-batches",
        "3",
        "--batch-size",
        "100",
        "--split",
        "test",
        "--quiet",
        "--device",
        "cpu",
    )
    assert result.exit_code == 0, result.output
    b = _record(ckpt.with_name("m.probe.json"))["results"]["batches"]
    assert b["num_batches"] == 3 and b["batch_size"] == 100 and len(b["per_batch"]) == 3
    values = [r["lambda_max"]["estimate"] for r in b["per_batch"]]
    s = b["summary"]["lambda_max"]
    assert s["mean"] == pytest.approx(sum(values) / 3) and s["min"] == min(values) and s["max"] == max(values)
    assert len(set(values)) == 3  # disjoint batches give different estimates
    assert all(r["loss"]["num_samples"] == 100 for r in b["per_batch"])


# ------------------------------------------------------------------ closed forms on a quadratic


def _least_squares_objective(n: int = 60, d: int = 4, classes: int = 3) -> tuple[Objective, torch.Tensor]:
    """Linear regression with seed 000's MSE at its exact minimum: L is quadratic, H = (2/N) AᵀA ⊗ I."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    y = torch.randint(0, classes, (n,), generator=gen)
    a = torch.cat([x, torch.ones(n, 1, dtype=torch.float64)], 1)
    sol = torch.linalg.lstsq(a, torch.nn.functional.one_hot(y, classes).double()).solution  # (d+1, C)
    model = models.build(models.make_spec("linear", {"input_shape": (d,), "num_classes": classes})).double()
    with torch.no_grad():
        model.head.weight.copy_(sol[:d].T)
        model.head.bias.copy_(sol[d])
    eig = torch.linalg.eigvalsh(2.0 / n * a.T @ a)  # each eigenvalue repeats `classes` times in H
    return Objective.from_module(model.eval(), x, y, "mse"), eig


def test_worst_case_sharpness_is_half_eps2_lambda_max_on_a_quadratic() -> None:
    obj, eig = _least_squares_objective()
    eps = 1e-2
    res = S.worst_case_sharpness(obj, eps, steps=40)
    assert res["max_rise"] == pytest.approx(0.5 * eps**2 * float(eig.max()), rel=1e-3)


def test_random_sharpness_and_noise_match_the_trace_on_a_quadratic() -> None:
    obj, eig = _least_squares_objective()
    n_params, classes = sum(p.numel() for p in obj.params.values()), 3
    tr = classes * float(eig.sum())
    eps = 0.05
    res = S.random_sharpness(obj, eps, num_directions=400, seed=1)
    want = 0.5 * eps**2 * tr / n_params  # E over unit directions of 1/2 eps^2 uᵀHu
    assert abs(res["s_mean"] - want) <= 3 * res["s_mean_stderr"]
    assert res["s_max"] <= 0.5 * eps**2 * float(eig.max()) * (1 + 1e-9)
    sigma = 0.01
    noise = S.weight_noise(obj, [sigma], samples=400, seed=2)["curve"][0]
    assert abs(noise["loss_rise"] - 0.5 * sigma**2 * tr) <= 3 * noise["loss_rise_stderr"]


def test_adaptive_sharpness_is_invariant_under_relu_rescaling() -> None:
    spec = models.make_spec("mlp", {"input_shape": (6,), "num_classes": 3, "depth": 2, "width": 5})
    torch.manual_seed(0)
    model = models.build(spec).double().eval()
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(40, 6, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (40,), generator=gen)
    obj = Objective.from_module(model, x, y, "ce")
    c = 4.0
    scaled = dict(obj.params)
    scaled["hidden.0.weight"] = obj.params["hidden.0.weight"] * c
    scaled["hidden.0.bias"] = obj.params["hidden.0.bias"] * c
    scaled["hidden.1.weight"] = obj.params["hidden.1.weight"] / c
    obj2 = Objective(model, scaled, obj.buffers, x, y, "ce")
    assert S.loss_accuracy(obj2, scaled)[0] == pytest.approx(S.loss_accuracy(obj, obj.params)[0], rel=1e-12)
    a1 = S.random_sharpness(obj, 0.1, 5, seed=0, kind="adaptive")
    a2 = S.random_sharpness(obj2, 0.1, 5, seed=0, kind="adaptive")
    assert a2["rises"] == pytest.approx(a1["rises"], rel=1e-9)
    w1 = S.worst_case_sharpness(obj, 0.1, steps=5, adaptive=True)
    w2 = S.worst_case_sharpness(obj2, 0.1, steps=5, adaptive=True)
    assert w2["max_rise"] == pytest.approx(w1["max_rise"], rel=1e-9)
    l1 = S.random_sharpness(obj, 0.1, 5, seed=0, kind="l2")
    l2 = S.random_sharpness(obj2, 0.1, 5, seed=0, kind="l2")
    assert abs(l2["s_mean"] - l1["s_mean"]) > 1e-3 * abs(l1["s_mean"])  # plain sharpness is not invariant
    from lscape_cli.core.linalg.hvp import HVP
    from lscape_cli.core.linalg.spectrum import lanczos

    lam1, lam2 = (lanczos(HVP(o), tol=1e-10).eigenvalues[0] for o in (obj, obj2))
    assert abs(lam2 - lam1) > 1e-3 * lam1  # and neither is lambda_max


def test_pac_bayes_sigma_brackets_the_target() -> None:
    obj, _ = _least_squares_objective()
    res = S.pac_bayes_sigma(obj, target=0.05, metric="loss", samples=8, seed=0)
    assert res["status"] == "converged" and res["rise_at_sigma"] <= 0.05
    lo, hi = res["bracket"]
    assert hi / lo - 1 < 1e-4
    gen = torch.Generator().manual_seed(0)
    draws = [S.gaussian_direction(obj.params, gen) for _ in range(8)]
    base = S.loss_accuracy(obj, obj.params)[0]
    rise_hi = (
        sum(S.loss_accuracy(obj, S._noisy(obj.params, z, hi * 1.01, False))[0] - base for z in draws) / 8
    )
    assert rise_hi > 0.05


def test_stability_uses_the_checkpoints_learning_rate(cli, tmp_path: Path) -> None:
    out = tmp_path / "run"
    r = cli(
        "train",
        "--model",
        "mlp",
        "--dataset",
        "digits",
        "--width",
        "8",
        "--optimizer",
        "sgd",
        "--lr",
        "0.05",
        "--momentum",
        "0.5",
        "--epochs",
        "1",
        "--out",
        out,
        "--quiet",
        "--device",
        "cpu",
    )
    assert r.exit_code == 0, r.output
    r = cli("probe", out / "model.safetensors", "--stability", "--quiet", "--device", "cpu")
    assert r.exit_code == 0, r.output
    res = _record(out / "model.probe.json")["results"]
    st = res["stability"]
    assert st["eta_lambda_max"] == pytest.approx(0.05 * res["lambda_max"]["estimate"])
    assert st["threshold"] == pytest.approx(3.0) and st["stable"] == (st["eta_lambda_max"] < 3.0)


def test_batchnorm_in_train_mode_is_refused(cli, tmp_path: Path) -> None:
    out = tmp_path / "rn"
    r = cli(
        "train",
        "--model",
        "resnet",
        "--width",
        "4",
        "--dataset",
        "digits",
        "--epochs",
        "1",
        "--out",
        out,
        "--quiet",
        "--device",
        "cpu",
    )
    assert r.exit_code == 0, r.output
    r = cli("probe", out / "model.safetensors", "--mode", "train", "--device", "cpu")
    assert r.exit_code == 1 and "call model.eval() first" in r.stderr and "--mode eval" in r.stderr
    r = cli("probe", out / "model.safetensors", "--lambda-max", "--quiet", "--device", "cpu")
    assert r.exit_code == 0, r.output


@pytest.mark.slow  # torchrun: ~20 s (make test-slow)
def test_two_processes_give_the_numbers_of_one(cli, torchrun, ckpt: Path, tmp_path: Path) -> None:
    args = [
        "--lambda-max",
        "--top-k",
        "2",
        "--trace",
        "--grad-norm",
        "--sharpness",
        "0.05",
        "--directions",
        "3",
        "--dtype",
        "float64",
        "--quiet",
        "--device",
        "cpu",
    ]
    r = cli("probe", ckpt, *args, "--out", tmp_path / "one.json")
    assert r.exit_code == 0, r.output
    proc = torchrun("probe", ckpt, *args, "--out", tmp_path / "two.json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    one, two = _record(tmp_path / "one.json"), _record(tmp_path / "two.json")
    assert two["config"]["world_size"] == 2
    a, b = one["results"], two["results"]
    assert b["loss"]["value"] == pytest.approx(a["loss"]["value"], rel=1e-12)
    assert b["top_k"]["eigenvalues"] == pytest.approx(a["top_k"]["eigenvalues"], rel=1e-10)
    assert b["trace"]["estimate"] == pytest.approx(a["trace"]["estimate"], rel=1e-10)
    assert b["grad_norm"]["estimate"] == pytest.approx(a["grad_norm"]["estimate"], rel=1e-10)
    assert b["sharpness"][0]["random"]["rises"] == pytest.approx(
        a["sharpness"][0]["random"]["rises"], rel=1e-8
    )
