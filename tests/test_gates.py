"""`--check` expressions and numeric options can neither hang a command nor exhaust the machine.

Every refusal here happens before any measurement starts (the measuring function is replaced by one that
fails the test if called), leaves one ``Error:`` line and writes nothing.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from lscape_cli.core import budget
from lscape_cli.core.linalg.hvp import Objective
from lscape_cli.core.probe import checks

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_checkpoints" / "mlp-digits.safetensors"
BIG = str(10**15)


@pytest.fixture()
def ckpt(tmp_path: Path) -> Path:
    dst = tmp_path / "m.safetensors"
    shutil.copy(SAMPLE, dst)
    return dst


@pytest.fixture()
def no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any measurement, grid, path or training started fails the test."""

    def started(*args: object, **kwargs: object) -> None:
        raise AssertionError("work started before the refusal")

    import lscape_cli.core.connectivity.paths as connectivity
    import lscape_cli.core.landscape.slice_run as slice_run
    import lscape_cli.core.probe.batches as probe_batches
    import lscape_cli.core.probe.engine as probe
    import lscape_cli.core.training.engine as training

    monkeypatch.setattr(probe, "run_probe", started)
    monkeypatch.setattr(probe_batches, "run_probe", started)
    monkeypatch.setattr(slice_run, "run_slice", started)
    monkeypatch.setattr(connectivity, "run_connect", started)
    monkeypatch.setattr(training, "train_restarts", started)


# ------------------------------------------------------------------------------------ check expressions

NAMES = {"lambda_max": 3.0, "trace": 2.0}


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("lambda_max < 10**10**10", "'10 ** 10 ** 10' overflows a float"),
        ("lambda_max < 10**400", "'10 ** 400' overflows a float"),  # exact integers would not overflow
        ("lambda_max < 1e308 * 10", "'1e+308 * 10' is not a finite number (inf)"),
        ("lambda_max / 0 < 1", "division by zero in 'lambda_max / 0'"),
        ("lambda_max / (2 - 2) < 1", "division by zero in 'lambda_max / (2 - 2)'"),
        ("(-8) ** 0.5 < lambda_max", "'(-8) ** 0.5' has no real value"),
        ("lambda_max < " + " + ".join(["1"] * 30_000), "is longer than 500 characters"),
        ("(" * 30 + "lambda_max" + ")" * 30 + " < 1", "nests brackets more than 20 deep"),
        ("lambda_max < " + "-" * 200 + "1", "nodes nested 203 deep, more than 200 nodes or 60 levels"),
        ("abs(lambda_max, 1) < 1", "abs() takes 1 to 1 numbers"),
        ("lambda_max", "is not a comparison"),
        ("lambda_max.real < 1", "unsupported syntax 'lambda_max.real'"),
        ("__import__('os') < 1", "unsupported syntax \"__import__('os')\""),
    ],
)
def test_checks_refused_when_parsed(expr: str, message: str) -> None:
    with pytest.raises(checks.CheckError) as info:
        checks.parse(expr)
    assert message in str(info.value)
    assert len(str(info.value)) < 300 and "\n" not in str(info.value)


def test_checks_evaluate_in_floating_point() -> None:
    assert checks.evaluate("lambda_max ** 2 < 10 and max(trace, 1) == 2", NAMES)["passed"] is True
    assert checks.evaluate("lambda_max < 2 ** 0.5 * 3", NAMES)["passed"] is True
    with pytest.raises(checks.CheckError, match=r"division by zero in 'lambda_max / \(trace - 2\)' in check"):
        checks.evaluate("lambda_max / (trace - 2) < 1", NAMES)
    with pytest.raises(checks.CheckError, match=r"'lambda_max \*\* 1000' overflows a float"):
        checks.evaluate("lambda_max ** 1000 > 1", NAMES)


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("lambda_max < 10**10**10", "Error: '10 ** 10 ** 10' overflows a float in check"),
        ("lambda_max / 0 < 1", "Error: division by zero in 'lambda_max / 0' in check 'lambda_max / 0 < 1'"),
        (" + ".join(["lambda_max"] * 30_000) + " < 1", "characters) is longer than 500 characters"),
    ],
)
def test_probe_refuses_a_bad_check_before_measuring(
    cli, ckpt: Path, error_line, no_work: None, expr: str, message: str
) -> None:
    line = error_line(cli("probe", ckpt, "--check", expr, "--device", "cpu"))
    assert message in line and line.endswith("(write a comparison such as 'lambda_max < 200')")
    assert list(ckpt.parent.iterdir()) == [ckpt]


def test_a_misspelt_check_is_refused_before_the_checkpoint_is_read(cli, tmp_path: Path, error_line) -> None:
    missing = tmp_path / "missing.safetensors"  # never opened: the check is refused first
    line = error_line(cli("probe", missing, "--check", "lamda_max < 200", "--device", "cpu"))
    start = "Error: unknown quantity 'lamda_max' in check 'lamda_max < 200'; did you mean 'lambda_max'?"
    assert line.startswith(start + ": --check (")
    assert "lambda_max, lambda_K, lambda_min" in line and "missing" not in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "name", "source"),
    [
        (["--lambda-max", "--check", "trace < 1"], "trace", "--trace or --frobenius"),
        (["--check", "effective_rank > 1"], "effective_rank", "--density"),
        (["--top-k", "2", "--check", "lambda_3 < 1"], "lambda_3", "--top-k K (Lanczos)"),
        (["--eig-method", "power", "--top-k", "1", "--check", "lambda_1 < 1"], "lambda_1", "--top-k K"),
        (["--check", "lambda_max / condition_number < 1"], "condition_number", "--lambda-min"),
        (["--sharpness", "0.1", "--check", "sharpness_worst < 1"], "sharpness_worst", "--ascent-steps"),
        (
            ["--pac-bayes", "--check", "pac_bayes_sigma_magnitude > 0"],
            "pac_bayes_sigma_magnitude",
            "--magnitude",
        ),
        (["--trace", "--check", "grad_norm < 1"], "grad_norm", "--grad-norm"),
        (
            ["--stability", "--curvature", "ggn", "--check", "eta_lambda_max < 2"],
            "eta_lambda_max",
            "full Hessian",
        ),
    ],
)
def test_a_check_on_a_quantity_not_measured_is_refused_before_measuring(
    cli, ckpt: Path, error_line, no_work: None, args: list[str], name: str, source: str
) -> None:
    line = error_line(cli("probe", ckpt, *args, "--device", "cpu"))
    assert f"uses {name!r}, which this run does not measure (it comes from " in line, line
    assert source in line and ": --check (" in line
    assert list(ckpt.parent.iterdir()) == [ckpt]


def _objective(regression: bool) -> Any:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3)).eval()
    x = torch.randn(24, 4)
    y = torch.randn(24, 3) if regression else torch.randint(0, 3, (24,))
    params = {n: p.detach() for n, p in model.named_parameters()}
    return Objective(model, params, {}, x, y, "mse" if regression else "ce")


FAST = {"max_iter": 12, "trace_matvecs": 9, "rounding_products": 0}


@pytest.mark.parametrize(
    "fields",
    [
        {"lambda_max": True, "trace": True, "grad_norm": True},
        {"top_k": 3, "lambda_min": True},
        {"lambda_min": True},
        {"lambda_max": True, "eig_method": "power", "top_k": 1},
        {"frobenius": True, "density": True, "density_runs": 2, "density_steps": 4},
        {"sharpness_eps": (0.01, 0.1), "sharpness_directions": 2, "sharpness_steps": 2},
        {"sharpness_eps": (0.01,), "sharpness_directions": 2, "noise_sigmas": (0.01,), "noise_samples": 2},
        {"pac_bayes": True, "magnitude_aware": True, "pac_bayes_samples": 2, "pac_bayes_metric": "loss"},
        {"pac_bayes": True, "pac_bayes_samples": 2, "pac_bayes_metric": "loss"},
        {"stability": True, "lr": 0.1, "optimizer": "sgd"},
        {"stability": True},  # no learning rate in the checkpoint: no eta * lambda_max
        {"stability": True, "lr": 0.1, "optimizer": "sgd", "curvature": "ggn", "trace": True},
    ],
    ids=lambda f: ",".join(f),
)
@pytest.mark.parametrize("regression", [False, True], ids=["labels", "regression"])
def test_check_quantities_are_exactly_the_scalars_run_probe_gives(fields: dict, regression: bool) -> None:
    """Every scalar, no more: a check is refused before measuring exactly when it would fail after."""
    from lscape_cli.core.probe.engine import ProbeRequest, check_source, run_probe, scalar_names

    req = ProbeRequest(**{**FAST, **fields})
    predicted = scalar_names(req, regression)
    assert set(run_probe(_objective(regression), req).scalars) == predicted
    assert all(check_source(name) is not None for name in predicted)


def test_a_non_finite_result_names_the_check(cli, ckpt: Path, error_line) -> None:
    line = error_line(cli("probe", ckpt, "--quiet", "--device", "cpu", "--check", "loss / (loss - loss) < 1"))
    assert line.startswith("Error: division by zero in 'loss / (loss - loss)' in check")
    assert list(ckpt.parent.iterdir()) == [ckpt]


# ---------------------------------------------------------------------------------- numeric options


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--matvecs", BIG], "--matvecs"),
        (["--density", "--density-runs", BIG], "--density-runs"),
        (["--density", "--density-steps", BIG], "--density-steps"),
        (["--top-k", BIG], "--top-k"),
        (["--sharpness", "0.1", "--directions", BIG], "--directions"),
        (["--sharpness", "0.1", "--ascent-steps", BIG], "--ascent-steps"),
        (["--noise", "0.1", "--noise-samples", BIG], "--noise-samples"),
    ],
)
def test_probe_refuses_counts_beyond_the_machine(
    cli, ckpt: Path, error_line, no_work: None, args: list[str], option: str
) -> None:
    line = error_line(cli("probe", ckpt, *args, "--device", "cpu"))
    assert line.startswith(f"Error: {option} 1e+15 needs ") and line.endswith(f"(lower {option})")
    assert list(ckpt.parent.iterdir()) == [ckpt]


def test_max_iter_beyond_the_dimension_is_capped_not_refused() -> None:
    from lscape_cli.core.probe.engine import ProbeRequest, demands

    size = budget.Problem(num_params=1000, num_samples=100)
    (lanczos,) = [d for d in demands(ProbeRequest(lambda_max=True, max_iter=10**15), size) if d.bytes]
    assert lanczos.bytes == 1000 * 1000 * 4  # one float32 basis vector per parameter at most


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--steps", str(10**7)], "--steps"),
        (["--dims", "1", "--count", BIG], "--count"),
    ],
)
def test_slice_refuses_grids_beyond_the_machine(
    cli, ckpt: Path, error_line, no_work: None, args: list[str], option: str
) -> None:
    line = error_line(cli("slice", ckpt, *args, "--device", "cpu"))
    assert line.startswith(f"Error: {option} ") and line.endswith(f"(lower {option})")
    assert list(ckpt.parent.iterdir()) == [ckpt]


@pytest.mark.parametrize(
    ("args", "option"),
    [(["--points", BIG], "--points"), (["--curve", "bezier", "--curve-epochs", BIG], "--curve-epochs")],
)
def test_connect_refuses_paths_beyond_the_machine(
    cli, ckpt: Path, error_line, no_work: None, args: list[str], option: str
) -> None:
    other = ckpt.with_name("b.safetensors")
    shutil.copy(ckpt, other)
    line = error_line(cli("connect", ckpt, other, *args, "--device", "cpu"))
    assert line.startswith(f"Error: {option} 1e+15 needs ") and line.endswith(f"(lower {option})")
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ["b.safetensors", "m.safetensors"]


@pytest.mark.parametrize(
    ("extra", "start"),
    [
        (["--epochs", BIG], "--epochs 1e+15 needs at least"),
        (["--max-steps", BIG, "--epochs", BIG], "--max-steps 1e+15 needs at least"),
        (["--restarts", BIG], "--restarts 1e+15 needs"),
        (["--width", BIG], "a model of "),
        (["--save-trajectory", "1", "--epochs", str(10**9)], "--save-trajectory 1 needs"),
        (["--dataset", "synthetic", "--num-samples", BIG], "--num-samples 1e+15 needs"),
    ],
)
def test_train_refuses_budgets_beyond_the_machine(
    cli, tmp_path: Path, tiny_args, error_line, no_work: None, extra: list[str], start: str
) -> None:
    line = error_line(cli(*tiny_args(tmp_path / "run", *extra)))
    assert line.startswith(f"Error: {start}")
    assert list(tmp_path.iterdir()) == []


def test_restart_outputs_are_found_without_listing_every_restart(cli, tmp_path: Path, tiny_args) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "model-r0002.train.json").write_text("{}")  # width 4 only with 1,001+ restarts
    (out / "model-r002.train.json").write_text("{}")
    result = cli(*tiny_args(out, "--restarts", "3"))
    assert result.exit_code == 1 and "output exists: " + str(out / "model-r002.train.json") in result.stderr


def test_time_bound_is_optimistic() -> None:
    """A demand is refused only when even the peak rate needs more than MAX_SECONDS."""
    machine = budget.Machine(peak_flops=1e11, memory_bytes=2**30, kind="test")
    limit = budget.MAX_SECONDS * 1e11
    budget.enforce([budget.Demand("--n", 1, "work", flops=limit)], machine)
    with pytest.raises(budget.BudgetError, match=r"--n 2 needs at least 1.21e\+17 floating-point operations"):
        budget.enforce([budget.Demand("--n", 2, "work", flops=2 * limit)], machine)
    budget.enforce([budget.Demand("--n", 1, "memory", bytes=2**30)], machine)
    with pytest.raises(budget.BudgetError, match=r"needs 1 GiB for memory but the machine has 1 GiB free"):
        budget.enforce([budget.Demand("--n", 1, "memory", bytes=2**30 + 1)], machine)
