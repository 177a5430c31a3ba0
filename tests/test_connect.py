"""`lscape connect`: barrier definitions, exact ends, weight matching, curves, BatchNorm, the CLI contract."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from lscape_cli import datasets, models
from lscape_cli.core.connectivity import alignment as al
from lscape_cli.core.connectivity import paths as C
from lscape_cli.core.objective import evaluate
from lscape_cli.models.loading import load_model
from lscape_cli.storage.checkpoint import save_checkpoint
from lscape_cli.storage.schemas import validate

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_checkpoints"
FAST = ("--device", "cpu", "--quiet")


def _copy(names: list[str], dst: Path) -> list[Path]:
    out = []
    for name in names:
        shutil.copy(SAMPLES / f"{name}.safetensors", dst / f"{name}.safetensors")
        out.append(dst / f"{name}.safetensors")
    return out


def _params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach() for n, p in module.named_parameters()}


def _buffers(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: b.detach() for n, b in module.named_buffers()}


def _permuted_copy(src: Path, dst: Path, seed: int) -> dict[str, torch.Tensor]:
    """Save ``src`` with its hidden units shuffled (same metadata); returns the permutations."""
    lm = load_model(src)
    perms = al.random_permutation(lm.spec, seed)
    state = al.permute(lm.spec, lm.module.state_dict(), perms)
    save_checkpoint(dst, state, {k: v for k, v in lm.checkpoint.meta.items() if k != "schema"})
    return perms


# ------------------------------------------------------------------------------------------- barriers


def test_the_three_barriers_match_hand_computations() -> None:
    alphas = [0.0, 0.25, 0.5, 0.75, 1.0]
    values = [1.0, 2.0, 1.5, 2.0, 0.0]  # ends 1 and 0: mean 0.5, chord 1 - alpha
    b = C.barriers(values, alphas)
    assert b["ends"] == [1.0, 0.0] and b["mean_ends"] == 0.5 and b["path_max"] == 2.0
    # max - mean of the ends (Frankle et al.): 2 - 0.5, first maximum at alpha 0.25
    assert b["max_minus_mean_ends"] == {"value": 1.5, "alpha": 0.25, "relative": 3.0}
    # over the chord (Entezari et al.): gaps 0, 1.25, 1.0, 1.75, 0 -> 1.75 at alpha 0.75
    assert b["chord"] == {"value": 1.75, "alpha": 0.75, "relative": 3.5}
    # above the higher end: 2 - 1
    assert b["max_minus_max_ends"] == {"value": 1.0, "alpha": 0.25, "relative": 2.0}
    flat = C.barriers([0.0, 0.0, 0.0], [0.0, 0.5, 1.0])  # e.g. zero training error: no relative value
    assert flat["chord"] == {"value": 0.0, "alpha": 0.0, "relative": None}
    with pytest.raises(ValueError):
        C.barriers([1.0, 2.0], [0.0, 0.5])  # the grid must include both ends


def test_path_coefficients_hit_the_ends_exactly() -> None:
    t = C.grid(11)
    assert t[0].item() == 0.0 and t[-1].item() == 1.0
    lin = C.coefficients("linear", t)
    assert lin[0].tolist() == [1.0, 0.0] and lin[-1].tolist() == [0.0, 1.0]
    for kind in ("bezier", "polychain"):
        c = C.coefficients(kind, t)
        assert c[0].tolist() == [1.0, 0.0, 0.0] and c[-1].tolist() == [0.0, 0.0, 1.0]
        assert torch.allclose(c.sum(1), torch.ones(11, dtype=torch.float64))
        # a bend at the midpoint puts every point of the curve on the straight segment
        on_line = c[:, 0] + c[:, 1] / 2, c[:, 2] + c[:, 1] / 2
        if kind == "bezier":  # same parameter: phi(t) = (1 - t) A + t B
            assert torch.allclose(on_line[1], t)
        assert torch.allclose(on_line[0] + on_line[1], torch.ones(11, dtype=torch.float64))
    assert C.coefficients("polychain", torch.tensor([0.5])).tolist() == [[0.0, 1.0, 0.0]]


# ------------------------------------------------------------------------------------------ alignment


def _random_state(spec: Any, seed: int) -> tuple[torch.nn.Module, dict, dict]:
    torch.manual_seed(seed)
    module = models.build(spec).eval()
    gen = torch.Generator().manual_seed(seed)
    buffers = {}
    for n, b in module.named_buffers():  # non-trivial BatchNorm statistics, so permuting them matters
        if "running_mean" in n:
            b = b + 0.1 * torch.randn(b.shape, generator=gen)
        elif "running_var" in n:
            b = b + torch.rand(b.shape, generator=gen)
        buffers[n] = b
    return module, _params(module), buffers


FAMILIES = {
    "mlp": {"depth": 3, "width": 12},
    "cnn": {"width": 4, "hidden": 16},
    "resnet": {"width": 4, "stages": 2, "blocks": 2},
    "resnet-noskip": {"width": 4, "skip": False},
    "resnet-nobn": {"width": 4, "batchnorm": False},
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_a_permuted_copy_aligns_back_exactly(family: str) -> None:
    spec = models.make_spec(family.split("-")[0], FAMILIES[family])
    module, pa, ba = _random_state(spec, 0)
    al.check_spec(al.permutation_spec(spec), {**pa, **ba})
    perms = al.random_permutation(spec, 1)
    pb, bb = al.permute(spec, pa, perms), al.permute(spec, ba, perms)
    x = torch.rand(8, 1, 28, 28)
    assert al.function_gap(module, (pa, ba), (pb, bb), x).passed  # the shuffle keeps the function
    res = al.align(spec, pa, pb, bb, seed=3)
    assert res.converged
    assert all(torch.equal(res.params[n], pa[n]) for n in pa)  # bitwise: a permutation only moves numbers
    assert all(torch.equal(res.buffers[n], ba[n]) for n in ba)
    assert all(torch.equal(res.perms[g], p) for g, p in al.invert(perms).items())
    assert res.objective == sorted(res.objective)  # coordinate ascent never goes down


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_alignment_never_changes_the_function(family: str) -> None:
    spec = models.make_spec(family.split("-")[0], FAMILIES[family])
    module, pa, _ = _random_state(spec, 0)
    _, pb, bb = _random_state(spec, 1)  # an unrelated network: the matching moves many units
    res = al.align(spec, pa, pb, bb)
    moved = sum(int((p != torch.arange(p.numel())).sum()) for p in res.perms.values())
    assert moved > 0
    x = torch.rand(16, 1, 28, 28)
    gap = al.function_gap(module, (pb, bb), (res.params, res.buffers), x)
    assert gap.passed and gap.relative < 1e-5, gap
    broken = {**res.params, next(iter(pa)): pb[next(iter(pa))]}  # the check itself catches a bad permutation
    assert not al.function_gap(module, (pb, bb), (broken, res.buffers), x).passed


# ------------------------------------------------------------------------------------------ BatchNorm


def test_bn_reestimation_gives_the_exact_statistics_of_the_first_layer() -> None:
    spec = models.make_spec("resnet", {"width": 4, "input_shape": (1, 8, 8)})
    module, params, buffers = _random_state(spec, 0)
    before = {n: b.clone() for n, b in buffers.items()}
    x = torch.rand(50, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    feats = torch.nn.functional.conv2d(x, params["stem.weight"], padding=1)  # what stem_bn normalises
    mean = feats.mean(dim=(0, 2, 3))
    var = feats.transpose(0, 1).reshape(4, -1).var(dim=1)  # unbiased, as BatchNorm's running_var
    whole = C.reestimate_bn(module, params, buffers, x, batch_size=64)  # one chunk: exact mean and var
    torch.testing.assert_close(whole["stem_bn.running_mean"], mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(whole["stem_bn.running_var"], var, rtol=1e-5, atol=1e-6)
    chunked = C.reestimate_bn(module, params, buffers, x, batch_size=7)  # uneven chunks, sample-weighted
    torch.testing.assert_close(chunked["stem_bn.running_mean"], mean, rtol=1e-5, atol=1e-6)
    assert not module.training and module.stem_bn.momentum == 0.1  # the module is left as it was
    assert all(torch.equal(buffers[n], before[n]) for n in before)  # new buffers; the inputs are untouched


# ----------------------------------------------------------------------------------- the CLI, MLP pair


@pytest.fixture(scope="module")
def mlp_pair(tmp_path_factory: pytest.TempPathFactory, runner: Any) -> tuple[Path, Path, dict]:
    """The sample MLP pair, connected once with alignment and a (short) Bezier curve."""
    from lscape_cli.cli import app

    tmp = tmp_path_factory.mktemp("connect")
    a, b = _copy(["mlp-d4-r000", "mlp-d4-r001"], tmp)
    args = [
        str(a),
        str(b),
        "--align",
        "weights",
        "--curve",
        "bezier",
        "--curve-epochs",
        "4",
        "--points",
        "21",
    ]
    result = runner.invoke(app, ["connect", *args, *FAST])
    assert result.exit_code == 0, result.output
    return a, b, json.loads((tmp / "mlp-d4-r000--mlp-d4-r001.connect.json").read_text())


def test_the_record_is_complete_and_the_plot_is_written(mlp_pair: tuple[Path, Path, dict]) -> None:
    a, _, rec = mlp_pair
    assert rec["schema"] == "lscape.connect/1"
    validate(rec, "connect.schema.json")
    assert set(rec["inputs"]) == {"checkpoint_a", "checkpoint_b"}
    assert rec["config"]["evaluation"]["splits"] == ["train", "test"]
    assert rec["config"]["evaluation"]["mode"] == "eval" and rec["config"]["request"]["points"] == 21
    res = rec["results"]
    assert {"ends", "end_check", "linear", "aligned", "curve", "plot"} <= set(res)
    for key in ("linear", "aligned", "curve"):
        path = res[key]
        assert len(path["alpha"]) == 21 and path["alpha"][0] == 0.0 and path["alpha"][-1] == 1.0
        for split in ("train", "test"):
            assert len(path[split]["loss"]) == 21
            for metric in ("loss", "error"):
                assert set(C.BARRIERS) <= set(path["barriers"][split][metric])
    for fmt in ("png", "pdf"):
        assert (a.parent / res["plot"][fmt]).stat().st_size > 1000


def test_the_ends_reproduce_each_checkpoints_own_loss(
    mlp_pair: tuple[Path, Path, dict], lscape_data: Path
) -> None:
    """Bitwise against an independent direct evaluation; to float rounding against objective.evaluate.

    The path places alpha = 0 and 1 as ``1 * theta_A + 0 * theta_B`` (exactly theta_A) and sums chunk
    losses in float64 like ``connectivity.direct_eval`` (a plain ``functional_call`` at each checkpoint,
    recorded under ``ends``), so those agree bit for bit. ``objective.evaluate`` in the module's own
    chunks (4096, not the path engine's) agrees to float rounding (1e-6).
    """
    a, b, rec = mlp_pair
    lin, ends = rec["results"]["linear"], rec["results"]["ends"]
    assert rec["results"]["end_check"]["bitwise"]
    for split in ("train", "test"):
        assert lin[split]["loss"][0] == ends["a"][split]["loss"]
        assert lin[split]["loss"][-1] == ends["b"][split]["loss"]
        assert lin[split]["accuracy"][0] == ends["a"][split]["accuracy"]
    lm_a, lm_b = load_model(a), load_model(b)
    sp = datasets.load(datasets.DatasetSpec.from_dict(lm_a.checkpoint.meta["dataset"]), lscape_data)
    for split in ("train", "test"):
        own_a = evaluate(lm_a.module, sp.x[split], sp.y[split], "mse")
        own_b = evaluate(lm_b.module, sp.x[split], sp.y[split], "mse")
        assert lin[split]["loss"][0] == pytest.approx(own_a[0], rel=1e-6, abs=0)
        assert lin[split]["loss"][-1] == pytest.approx(own_b[0], rel=1e-6, abs=0)
        assert lin[split]["accuracy"][0] == pytest.approx(own_a[1], rel=1e-6)
        assert lin[split]["accuracy"][-1] == pytest.approx(own_b[1], rel=1e-6)
        check = rec["results"]["end_check"][split]
        assert check["a_abs_diff"] <= 1e-6 * own_a[0] and check["b_abs_diff"] <= 1e-6 * own_b[0]
    # the aligned B computes B's function, so the aligned path ends where the linear one does
    al_path = rec["results"]["aligned"]
    for split in ("train", "test"):
        assert al_path[split]["loss"][-1] == pytest.approx(lin[split]["loss"][-1], rel=1e-5)


def test_alignment_and_the_curve_lower_the_barrier(mlp_pair: tuple[Path, Path, dict]) -> None:
    res = mlp_pair[2]["results"]
    check = res["aligned"]["alignment"]["function_check"]
    assert check["passed"] and check["relative"] < 1e-5
    assert res["aligned"]["alignment"]["converged"]
    assert res["aligned"]["distance"] < res["linear"]["distance"]
    lin = res["linear"]["barriers"]["train"]["loss"]
    aligned = res["aligned"]["barriers"]["train"]["loss"]
    curve = res["curve"]["barriers"]["train"]["loss"]
    assert res["curve"]["endpoint_b"] == "B aligned to A"
    assert aligned["max_minus_mean_ends"]["value"] < lin["max_minus_mean_ends"]["value"]
    # the trained Bezier curve is no higher than the straight paths anywhere it matters: its maximum
    assert max(res["curve"]["train"]["loss"]) <= max(res["aligned"]["train"]["loss"])
    assert max(res["curve"]["train"]["loss"]) <= max(res["linear"]["train"]["loss"])
    assert curve["chord"]["value"] <= aligned["chord"]["value"]


def test_a_checkpoint_with_itself_has_zero_barrier(cli, tmp_path: Path) -> None:
    (a,) = _copy(["mlp-d4-r000"], tmp_path)
    result = cli("connect", a, a, "--points", "11", "--no-plot", "--json", "--device", "cpu")
    assert result.exit_code == 0, result.output
    rec = json.loads(result.stdout)
    assert rec == json.loads((tmp_path / "mlp-d4-r000--mlp-d4-r000.connect.json").read_text())
    for split in ("train", "test"):
        b = rec["results"]["linear"]["barriers"][split]
        loss = b["loss"]["ends"][0]
        for name in C.BARRIERS:  # (1 - a) A + a A is A up to one rounding per weight
            assert abs(b["loss"][name]["value"]) <= 1e-6 * loss
            assert b["error"][name]["value"] == 0.0
    assert "plot" not in rec["results"]


# ---------------------------------------------------------------------------- the CLI, permuted copies


def test_a_permuted_cnn_aligns_back_to_a_zero_barrier(cli, tmp_path: Path) -> None:
    (a,) = _copy(["cnn-w8"], tmp_path)
    b = tmp_path / "cnn-w8-shuffled.safetensors"
    _permuted_copy(a, b, seed=5)
    result = cli("connect", a, b, "--align", "weights", "--points", "3", "--no-plot", *FAST)
    assert result.exit_code == 0, result.output
    res = json.loads((tmp_path / "cnn-w8--cnn-w8-shuffled.connect.json").read_text())["results"]
    lin, aligned = res["linear"]["barriers"]["train"]["loss"], res["aligned"]["barriers"]["train"]["loss"]
    assert lin["max_minus_mean_ends"]["value"] > 0.1  # the shuffled copy is far away on a straight line
    assert abs(aligned["max_minus_mean_ends"]["value"]) <= 1e-6 * aligned["mean_ends"]
    assert res["aligned"]["distance"] == 0.0  # recovered exactly
    groups = res["aligned"]["alignment"]["groups"]
    assert set(groups) == {"conv1", "conv2", "fc1"} and all(g["moved"] > 0 for g in groups.values())


# ------------------------------------------------------------------------------------------- BatchNorm


def test_a_resnet_pair_with_batchnorm(cli, tmp_path: Path) -> None:
    out = tmp_path / "rn"
    data = ("--dataset", "digits", "--train-size", "64", "--val-size", "32", "--test-size", "32")
    model = ("--model", "resnet", "--width", "4", "--epochs", "1", "--batch-size", "32", "--restarts", "2")
    trained = cli("train", *model, *data, "--out", out, *FAST)
    assert trained.exit_code == 0, trained.output
    a, b = out / "model-r000.safetensors", out / "model-r001.safetensors"
    args = (
        "--align",
        "weights",
        "--curve",
        "polychain",
        "--curve-epochs",
        "1",
        "--points",
        "5",
        "--reset-bn",
    )
    result = cli("connect", a, b, *args, "--no-plot", *FAST)
    assert result.exit_code == 0, result.output
    res = json.loads((out / "model-r000--model-r001.connect.json").read_text())["results"]
    assert res["linear"]["buffers"] == res["aligned"]["buffers"] == res["curve"]["buffers"] == "re-estimated"
    assert res["aligned"]["alignment"]["function_check"]["passed"]
    assert "end_check" not in res  # re-estimated statistics are not the checkpoints' own
    plain = cli("connect", a, b, "--points", "3", "--no-plot", "--out", tmp_path / "plain.json", *FAST)
    assert plain.exit_code == 0, plain.output
    res = json.loads((tmp_path / "plain.json").read_text())["results"]
    assert res["linear"]["buffers"] == "interpolated" and res["end_check"]["bitwise"]


# -------------------------------------------------------------------------------------------- errors


def _retag(src: Path, dst: Path, **dataset: Any) -> Path:
    lm = load_model(src)
    meta = {k: v for k, v in lm.checkpoint.meta.items() if k != "schema"}
    meta["dataset"] = {**meta["dataset"], **dataset}  # type: ignore[dict-item]
    save_checkpoint(dst, lm.checkpoint.state, meta)
    return dst


def test_different_architectures_or_datasets_are_one_clear_error(cli, error_line, tmp_path: Path) -> None:
    mlp, cnn = _copy(["mlp-d4-r000", "cnn-w8"], tmp_path)
    assert error_line(cli("connect", mlp, cnn, *FAST)) == (
        "Error: the checkpoints have different architectures: A is mlp(activation=relu, bias=True, "
        "depth=4, input_shape=[1, 28, 28], num_classes=10, width=48), B is cnn(activation=relu, bias=True, "
        f"hidden=32, input_shape=[1, 28, 28], num_classes=10, width=8): {mlp} vs {cnn} "
        "(connect two checkpoints of the same model)"
    )
    other = _retag(mlp, tmp_path / "fashion.safetensors", name="fashion-mnist")
    assert error_line(cli("connect", mlp, other, *FAST)) == (
        "Error: the checkpoints were trained on different data: A has name='mnist-5k', B has "
        f"name='fashion-mnist': {mlp} vs {other} (connect two checkpoints trained on the same dataset)"
    )
    assert error_line(cli("connect", mlp, mlp, "--curve", "spline", *FAST)) == (
        "Error: unknown value 'spline': --curve (choose one of: none, bezier, polychain)"
    )
    assert not list(tmp_path.glob("*.connect.json"))


def test_a_different_split_is_a_warning(cli, tmp_path: Path) -> None:
    (a,) = _copy(["mlp-d4-r000"], tmp_path)
    b = _retag(a, tmp_path / "b.safetensors", split_seed=1)
    result = cli("connect", a, b, "--points", "3", "--no-plot", *FAST)
    assert result.exit_code == 0, result.output
    rec = json.loads((tmp_path / "mlp-d4-r000--b.connect.json").read_text())
    assert rec["warnings"] == [
        "A and B differ in dataset split_seed (0 vs 1); both are evaluated on A's split"
    ]
