"""Regression data: floating targets ``y`` of shape ``(N,)`` or ``(N, D)`` fitted with ``--loss mse``.

The reference is linear least squares, whose MSE Hessian has a closed form independent of the weights:
with ``L(W, b) = (1/N) Σ_i ‖W x_i + b − y_i‖²`` (squared error summed over the D outputs, mean over the
samples) and ``X̃ = [X 1]``, ``H = I_D ⊗ (2/N) X̃ᵀX̃``: λmax is the top eigenvalue of ``(2/N) X̃ᵀX̃``,
the trace is ``D`` times its trace and ``‖H‖_F = √D ‖(2/N) X̃ᵀX̃‖_F``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from lscape_cli.core.objective import loss_sum, mse_target, num_correct
from lscape_cli.storage.records import make_record, sanitize
from lscape_cli.storage.schemas import validate

LINEAR = '''
from torch import nn


def build(inputs: int = 5, outputs: int = 1, hidden: int = 0) -> nn.Module:
    """Linear regression, or a one-hidden-layer tanh MLP when ``hidden`` > 0."""
    if hidden:
        return nn.Sequential(nn.Linear(inputs, hidden), nn.Tanh(), nn.Linear(hidden, outputs))
    return nn.Linear(inputs, outputs)
'''

N_TRAIN = 40


def _data(path: Path, outputs: int | None, n: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Float64 inputs ``(n, 5)`` and noisy linear targets; ``outputs=None`` gives ``(n,)`` targets.

    The first ``N_TRAIN`` samples are the training split (``split`` array), the rest half val, half test.
    """
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 5)) * np.array([1.0, 2.0, 0.5, 1.5, 1.0]) + 0.3
    w = rng.standard_normal((5, outputs or 1))
    y = x @ w + 0.1 * rng.standard_normal((n, outputs or 1))
    y = y[:, 0] if outputs is None else y
    split = np.full(n, 2)
    split[:N_TRAIN], split[N_TRAIN : (n + N_TRAIN) // 2] = 0, 1
    np.savez(path, x=x, y=y, split=split)
    return x[:N_TRAIN], y[:N_TRAIN]


def _closed_form(x: np.ndarray, outputs: int) -> dict[str, float]:
    xt = np.hstack([x, np.ones((x.shape[0], 1))])
    block = 2.0 / x.shape[0] * xt.T @ xt
    return {
        "lambda_max": float(np.linalg.eigvalsh(block)[-1]),
        "trace": outputs * float(np.trace(block)),
        "frobenius": math.sqrt(outputs) * float(np.linalg.norm(block)),
    }


def _write_linear(tmp_path: Path, outputs: int) -> tuple[Path, Path]:
    from safetensors.torch import save_file

    model = tmp_path / "linear.py"
    model.write_text(LINEAR)
    torch.manual_seed(0)
    ckpt = tmp_path / "linear.safetensors"
    save_file(torch.nn.Linear(5, outputs).state_dict(), str(ckpt))  # H does not depend on the weights
    return model, ckpt


# ------------------------------------------------------------------------------------------ the maths


def test_mse_on_regression_targets_is_summed_over_outputs_and_averaged_over_samples() -> None:
    g = torch.Generator().manual_seed(0)
    out, y = torch.randn(7, 3, generator=g), torch.randn(7, 3, generator=g)
    assert torch.allclose(loss_sum(out, y, "mse") / 7, ((out - y) ** 2).sum(1).mean())
    single = torch.randn(7, generator=g)  # (N,) targets are one output each, never broadcast to (N, N)
    assert torch.allclose(loss_sum(out[:, :1], single, "mse"), ((out[:, 0] - single) ** 2).sum())
    assert mse_target(single, 1, torch.float64).shape == (7, 1)
    with pytest.raises(ValueError, match="3 outputs, the model 2"):
        loss_sum(out[:, :2], y, "mse")
    with pytest.raises(ValueError, match="cross-entropy takes integer class labels"):
        loss_sum(out, y, "ce")
    assert math.isnan(float(num_correct(out, y)))
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    assert float(num_correct(out, labels)) == float((out.argmax(1) == labels).sum())


def test_a_regression_record_writes_accuracy_as_null_without_warnings(tmp_path: Path) -> None:
    results = {
        "final": {"train_loss": 0.5, "train_accuracy": math.nan},
        "curve": {"loss": [1.0, 2.0], "accuracy": [math.nan, math.nan], "error": [math.nan, math.nan]},
        "noise": {"base_accuracy": math.nan, "curve": [{"accuracy_drop": math.nan, "loss_rise": 0.1}]},
        "lambda_max": {"estimate": 2.0, "error_bound": 1e-9},
    }

    def record(task: str) -> dict:
        config = {"evaluation": {"dataset": {"name": "file", "task": task}}}
        return sanitize(
            make_record(
                "lscape.probe/1",
                out_path=tmp_path / "r.json",
                command=["lscape"],
                inputs={},
                config=config,
                results=results,
                timing_s={},
                warnings=[],
                env={},
            )
        )

    reg = record("regression")
    assert reg["warnings"] == []
    assert reg["results"]["final"] == {"train_loss": 0.5, "train_accuracy": None}
    assert reg["results"]["curve"] == {"loss": [1.0, 2.0], "accuracy": [None, None], "error": [None, None]}
    assert reg["results"]["noise"]["curve"][0] == {"accuracy_drop": None, "loss_rise": 0.1}
    assert reg["results"]["lambda_max"] == {"estimate": 2.0, "error_bound": 1e-9}
    # for class labels a NaN accuracy is a failure, written as null and listed
    assert len(record("classification")["warnings"]) == 7  # 1 + 2 + 2 + 1 + 1 NaN values


# ----------------------------------------------------------------------------- probe vs closed form


@pytest.mark.parametrize("outputs", [None, 3])
def test_probe_equals_the_least_squares_hessian(outputs: int | None, tmp_path: Path, cli) -> None:
    x, _ = _data(tmp_path / "reg.npz", outputs)
    model, ckpt = _write_linear(tmp_path, outputs or 1)
    args = ["probe", ckpt, "--model-def", f"{model}:build", "--model-args", f'{{"outputs": {outputs or 1}}}']
    args += ["--data", tmp_path / "reg.npz", "--loss", "mse", "--dtype", "float64"]
    result = cli(*args, "--lambda-max", "--trace", "--frobenius", "--tol", "1e-10", "--quiet")
    assert result.exit_code == 0, result.output
    rec = json.loads((tmp_path / "linear.probe.json").read_text())
    validate(rec, "probe.schema.json")
    res, exact = rec["results"], _closed_form(x, outputs or 1)
    assert rec["warnings"] == []
    assert rec["config"]["evaluation"]["dataset"]["task"] == "regression"
    assert rec["config"]["evaluation"]["num_samples"] == N_TRAIN
    assert res["loss"]["accuracy"] is None
    assert res["lambda_max"]["converged"]
    assert res["lambda_max"]["estimate"] == pytest.approx(exact["lambda_max"], rel=1e-9)
    # (D + 1)·D parameters: the 45 Hutch++ products span H, so the trace is exact to rounding
    assert res["trace"]["estimate"] == pytest.approx(exact["trace"], rel=1e-9)
    assert res["frobenius"]["estimate"] == pytest.approx(exact["frobenius"], rel=1e-9)


def test_api_probe_on_regression_tensors_matches_the_closed_form() -> None:
    from lscape_cli import api
    from lscape_cli.errors import LscapeError

    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 4, generator=g, dtype=torch.float64)
    y = x @ torch.randn(4, 2, generator=g, dtype=torch.float64)
    model = torch.nn.Linear(4, 2).double()
    res = api.probe(model, (x, y), loss="mse", lambda_max=True, tol=1e-10)
    xt = torch.cat([x, torch.ones(50, 1, dtype=torch.float64)], 1)
    exact = float(torch.linalg.eigvalsh(2 / 50 * xt.T @ xt)[-1])
    assert res["lambda_max"]["estimate"] == pytest.approx(exact, rel=1e-9)
    assert math.isnan(res["loss"]["accuracy"])  # the API returns core's NaN; records write null
    with pytest.raises(LscapeError, match="cross-entropy cannot fit"):
        api.probe(model, (x, y), loss="ce")


# ------------------------------------------------------------------------------------- bad input


def test_float_targets_with_cross_entropy_is_one_line(tmp_path: Path, cli, error_line) -> None:
    _data(tmp_path / "reg.npz", 2)
    model, ckpt = _write_linear(tmp_path, 2)
    args = ["probe", ckpt, "--model-def", f"{model}:build", "--model-args", '{"outputs": 2}']
    line = error_line(cli(*args, "--data", tmp_path / "reg.npz", "--loss", "ce", "--quiet"))
    assert line == (
        "Error: y holds floating regression targets (40, 2), which loss 'ce' cannot fit: "
        f"{tmp_path / 'reg.npz'} (pass --loss mse, or store y as integer class labels for classification)"
    )
    assert not (tmp_path / "linear.probe.json").exists()


def test_regression_outputs_must_match_the_targets(tmp_path: Path, cli, error_line) -> None:
    _data(tmp_path / "reg.npz", 2)
    model, _ = _write_linear(tmp_path, 2)
    args = ["train", "--model-def", f"{model}:build", "--model-args", '{"outputs": 3}']
    args += ["--data", tmp_path / "reg.npz", "--loss", "mse", "--out", tmp_path / "run"]
    line = error_line(cli(*args, "--quiet"))
    assert "the model has 3 outputs but y has 2 regression target(s) per sample" in line
    assert not (tmp_path / "run").exists()


def test_pac_bayes_on_the_error_rate_needs_labels(tmp_path: Path, cli, error_line) -> None:
    _data(tmp_path / "reg.npz", None)
    model, ckpt = _write_linear(tmp_path, 1)
    args = ["probe", ckpt, "--model-def", f"{model}:build", "--data", tmp_path / "reg.npz", "--loss", "mse"]
    line = error_line(cli(*args, "--pac-bayes", "--quiet"))
    assert line == (
        "Error: PAC-Bayes on the error rate needs class labels, but the data are regression targets: "
        "--pac-bayes-metric (pass --pac-bayes-metric loss)"
    )


# ------------------------------------------------------------------------------- the whole workflow


def _no_accuracy_noise(rec: dict) -> None:
    assert rec["warnings"] == [], rec["warnings"]
    assert "NaN" not in json.dumps(rec)


def test_train_slice_connect_pareto_report_on_regression_data(tmp_path: Path, cli) -> None:
    _data(tmp_path / "reg.npz", 2, n=80)
    model = tmp_path / "mlp.py"
    model.write_text(LINEAR)
    define = ["--model-def", f"{model}:build", "--model-args", '{"outputs": 2, "hidden": 6}']
    for lr in ("0.02", "0.05"):
        out = tmp_path / f"lr{lr}"
        args = ["train", *define, "--data", tmp_path / "reg.npz", "--loss", "mse", "--optimizer", "adam"]
        args += ["--lr", lr, "--epochs", "6", "--batch-size", "16", "--restarts", "2", "--out", out]
        result = cli(*args)
        assert result.exit_code == 0, result.output
        table = result.stderr  # the summary table: test loss where classification shows test accuracy
        assert "lscape train" in table and table.count("loss") == 3 and "acc" not in table
        for r in range(2):
            rec = json.loads((out / f"model-r00{r}.train.json").read_text())
            validate(rec, "train.schema.json")
            _no_accuracy_noise(rec)
            assert rec["config"]["dataset"]["task"] == "regression"
            assert rec["config"]["dataset"]["num_targets"] == 2
            assert rec["config"]["dataset"]["num_classes"] is None
            hist = rec["results"]["history"]
            assert hist[-1]["train_loss"] < hist[0]["train_loss"]  # the targets are being fitted
            assert rec["results"]["final"]["test_accuracy"] is None
            ckpt = out / f"model-r00{r}.safetensors"
            assert cli("probe", ckpt, "--trust-model-def", "--frobenius", "--quiet").exit_code == 0
    run = tmp_path / "lr0.05"
    a, b = run / "model-r000.safetensors", run / "model-r001.safetensors"

    result = cli("slice", a, "--trust-model-def", "--dims", "1", "--count", "2", "--steps", "5", "--quiet")
    assert result.exit_code == 0, result.output
    rec = json.loads((run / "model-r000.slice.json").read_text())
    validate(rec, "slice.schema.json")
    _no_accuracy_noise(rec)
    assert rec["results"]["grid"]["accuracy"] == [[None] * 5] * 2
    assert rec["results"]["centre"]["abs_difference"] == 0.0

    result = cli("connect", a, b, "--trust-model-def", "--align", "weights", "--points", "5", "--quiet")
    assert result.exit_code == 0, result.output
    rec = json.loads((run / "model-r000--model-r001.connect.json").read_text())
    validate(rec, "connect.schema.json")
    _no_accuracy_noise(rec)
    for path in ("linear", "aligned"):
        assert set(rec["results"][path]["barriers"]["test"]) == {"loss"}  # no error rate to bar
        assert rec["results"][path]["train"]["error"] == [None] * 5
    assert rec["results"]["aligned"]["alignment"]["function_check"]["passed"]

    args = ["pareto", tmp_path, "--group-by", "training.lr", "--trust-model-def"]
    result = cli(*args, "--out", tmp_path / "pareto.json", "--quiet")
    assert result.exit_code == 0, result.output
    rec = json.loads((tmp_path / "pareto.json").read_text())
    _no_accuracy_noise(rec)
    assert rec["results"]["num_runs"] == 4

    report = tmp_path / "report.html"
    result = cli("report", tmp_path, "--group-by", "training.lr", "--out", report, "--quiet")
    assert result.exit_code == 0, result.output
    md = (tmp_path / "report.md").read_text()
    for noise in ("acc", "test error", "null", "nan", "NaN"):
        assert noise not in md.replace("report.md", ""), noise
    assert "test loss" in md and "| gap (loss) |" in md
