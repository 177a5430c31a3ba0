"""`lscape probe --curvature/--params/--per-layer/--save-eigenvectors`, and `slice --directions` reusing them.

Runs the README's commands on the tiny digits MLP; the estimators' exactness is in ``test_ggn.py``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from lscape_cli import datasets
from lscape_cli.core.landscape.directions import length
from lscape_cli.core.linalg import blocks
from lscape_cli.core.linalg.curvature import GGN, Curvature
from lscape_cli.core.linalg.hvp import Objective, flatten, unflatten
from lscape_cli.models.loading import load_model
from lscape_cli.storage.directions import load_directions

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_checkpoints" / "mlp-digits.safetensors"
CPU = ("--device", "cpu")


@pytest.fixture()
def ckpt(tmp_path: Path) -> Path:
    dst = tmp_path / "m.safetensors"
    shutil.copy(SAMPLE, dst)
    return dst


def _results(ckpt: Path) -> dict:
    """The record's results, after validating the record against its JSON Schema."""
    rec = json.loads(ckpt.with_name("m.probe.json").read_text())
    pytest.importorskip("jsonschema")
    from lscape_cli.storage.schemas import validate

    validate(rec, "probe.schema.json")
    return rec["results"]


def test_ggn_per_layer_prints_a_table_and_records_every_block(cli, ckpt: Path) -> None:
    # README: lscape probe run/model.safetensors --curvature ggn --per-layer --top-k 3
    result = cli("probe", ckpt, "--curvature", "ggn", "--per-layer", "--top-k", "3", "--trace", *CPU)
    assert result.exit_code == 0, result.output
    res = _results(ckpt)
    # the rounding floor compares float32 GGN products with float64 GGN products (not the Hessian's)
    assert res["rounding"]["relative_error"] < 1e-4 and res["trace"]["rounding"] >= 0
    assert res["curvature"]["kind"] == "ggn" and res["curvature"]["params"] == "all"
    assert res["hvp"]["strategy"] == "jvp_vjp" and res["hvp"]["chosen_by"] == "only-strategy"
    layers = res["per_layer"]
    names = [b["block"] for b in layers["blocks"]]
    assert names == list(blocks.layers([n for n, _ in load_model(ckpt).module.named_parameters()]))
    full = res["lambda_max"]["estimate"]
    for block in layers["blocks"]:
        assert block["lambda_max"]["converged"] and len(block["top_k"]["eigenvalues"]) == 3
        assert 0 <= block["lambda_max"]["estimate"] <= full * (1 + 1e-6)  # PSD and Cauchy interlacing
        spent = block["lambda_max"]["num_matvecs"] + block["trace"]["num_matvecs"]
        assert block["num_matvecs"] == spent + block["rounding"]["num_products"]  # the block's stated cost
    assert layers["num_matvecs"] == sum(b["num_matvecs"] for b in layers["blocks"])
    table = result.stderr
    assert (
        "(ggn)" in table and "per-layer ggn blocks" in table and f"{layers['num_matvecs']} products" in table
    )
    for name in names:
        assert name in table


def test_fisher_records_its_sampling_and_is_psd(cli, ckpt: Path) -> None:
    # README: lscape probe run/model.safetensors --curvature fisher --fisher-samples 4 --lambda-max
    args = ("--curvature", "fisher", "--fisher-samples", "4", "--lambda-max", "--lambda-min", "--quiet")
    result = cli("probe", ckpt, *args, "--seed", "7", "--stability", *CPU)
    assert result.exit_code == 0, result.output
    res = _results(ckpt)
    cur = res["curvature"]
    assert cur["kind"] == "fisher" and cur["mc_samples"] == 4 and cur["mc_seed"] == 7
    assert cur["exact_equivalent"] == "ggn"
    lo, hi = res["lambda_min"]["estimate"], res["lambda_max"]["estimate"]
    assert hi > 0 and lo >= -1e-5 * hi
    assert res["stability"]["stable"] is None and "full Hessian" in res["stability"]["note"]


def test_empirical_fisher_matches_core_on_the_checkpoint(cli, ckpt: Path) -> None:
    result = cli(
        "probe",
        ckpt,
        "--curvature",
        "empirical-fisher",
        "--lambda-max",
        "--dtype",
        "float64",
        "--quiet",
        *CPU,
    )
    assert result.exit_code == 0, result.output
    lm = load_model(ckpt, dtype=torch.float64)
    sp = datasets.load(
        datasets.DatasetSpec.from_dict(lm.checkpoint.meta["dataset"]), Path("."), dtype=torch.float64
    )
    obj = Objective.from_module(lm.module.eval(), sp.x["train"], sp.y["train"], "ce")
    x, y = obj.x, obj.y
    v = unflatten(torch.ones(sum(t.numel() for t in obj.params.values()), dtype=torch.float64), obj.params)
    # (1/N) sum_i g_i (g_i . v) from per-sample gradients, against the operator's product
    leaves = {n: t.detach().requires_grad_(True) for n, t in obj.params.items()}
    logits = torch.func.functional_call(obj.model, (leaves, obj.buffers), (x,))
    losses = torch.nn.functional.cross_entropy(logits, y, reduction="none")
    ref = torch.zeros_like(flatten(obj.params))
    for i in range(0, len(y), 97):  # every 97th sample: enough to catch a wrong scale or sign
        g = flatten(
            dict(
                zip(
                    leaves,
                    torch.autograd.grad(losses[i], list(leaves.values()), retain_graph=True),
                    strict=True,
                )
            )
        )
        ref += g * (g @ flatten(v))
    sub = Objective.from_module(lm.module, x[::97], y[::97], "ce")
    got = flatten(GGN(sub, Curvature("empirical-fisher"))(v)) * len(y[::97])
    torch.testing.assert_close(got, ref, atol=1e-10, rtol=1e-10)
    assert _results(ckpt)["curvature"]["kind"] == "empirical-fisher"


def test_params_block_and_saved_eigenvectors_feed_slice(cli, ckpt: Path, tmp_path: Path) -> None:
    # README: lscape probe CKPT --params 'hidden\.0\..*' --top-k 2 --save-eigenvectors top2.safetensors
    full = cli("probe", ckpt, "--lambda-max", "--quiet", "--out", tmp_path / "full.json", *CPU)
    assert full.exit_code == 0, full.output
    lam_full = json.loads((tmp_path / "full.json").read_text())["results"]["lambda_max"]["estimate"]
    vec = tmp_path / "top2.safetensors"
    result = cli(
        "probe", ckpt, "--params", r"hidden\.0\..*", "--top-k", "2", "--save-eigenvectors", vec, *CPU
    )
    assert result.exit_code == 0, result.output
    res = _results(ckpt)
    assert res["curvature"]["params"] == ["hidden.0.weight", "hidden.0.bias"]
    assert "(block of 1,040 parameters)" in result.stderr
    top = res["top_k"]["eigenvalues"]
    assert top[0] <= lam_full * (1 + 1e-6)
    dirs, meta = load_directions(vec)
    settings = meta["directions"]["settings"]
    assert meta["directions"]["kind"] == "eigen" and len(dirs) == 2
    assert settings["eigenvalues"] == top and settings["curvature"]["params"] == res["curvature"]["params"]
    for d in dirs:
        assert length(d) == pytest.approx(1.0, abs=1e-5)
        assert all(float(t.abs().max()) == 0.0 for n, t in d.items() if not n.startswith("hidden.0."))
    # README: lscape slice run/model.safetensors --directions top2.safetensors --dims 2
    sl = cli(
        "slice", ckpt, "--directions", vec, "--dims", "2", "--steps", "5", "--range", "0.5", "--no-plot", *CPU
    )
    assert sl.exit_code == 0, sl.output
    plane = json.loads(ckpt.with_name("m.slice.json").read_text())
    assert plane["results"]["plane"]["eigenvalues"] == top[:2]


def test_bad_curvature_options(cli, ckpt: Path, tmp_path: Path, error_line) -> None:
    line = error_line(cli("probe", ckpt, "--params", "nope.*", *CPU))
    assert line.startswith("Error: 'nope.*' matches no parameter; the parameters are: hidden.0.weight")
    assert line.endswith("--params (give a regular expression matching whole names, e.g. 'hidden\\.0\\..*')")
    assert "not a regular expression" in error_line(cli("probe", ckpt, "--params", "(", *CPU))
    assert error_line(cli("probe", ckpt, "--curvature", "gnn", *CPU)) == (
        "Error: unknown value 'gnn': --curvature (choose one of: hessian, ggn, fisher, empirical-fisher)"
    )
    line = error_line(
        cli("probe", ckpt, "--save-eigenvectors", tmp_path / "v.safetensors", "--num-batches", "2")
    )
    assert "eigenvectors differ from batch to batch" in line
    assert "safetensors" in error_line(cli("probe", ckpt, "--save-eigenvectors", tmp_path / "v.txt"))
    traj = ROOT / "sample_checkpoints" / "mlp-w32-traj.trajectory.safetensors"
    line = error_line(
        cli("probe", traj, "--snapshot", "all", "--save-eigenvectors", tmp_path / "v.safetensors")
    )
    assert "eigenvectors differ from snapshot to snapshot" in line
    assert not ckpt.with_name("m.probe.json").exists()
