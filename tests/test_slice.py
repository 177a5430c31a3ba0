"""`lscape slice`: directions, the grid engine's exactness, derived numbers, resume, torchrun, the CLI."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from lscape_cli import models
from lscape_cli.core.landscape import directions as D
from lscape_cli.core.landscape import slices as S
from lscape_cli.core.landscape.surface import (
    Subspace,
    SurfaceEvaluator,
    evaluate_points,
    evaluate_points_reference,
)
from lscape_cli.storage.schemas import validate

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_checkpoints"
FAST = ("--device", "cpu", "--quiet", "--no-plot")


@pytest.fixture()
def ckpt(tmp_path: Path) -> Path:
    """The tiny digits MLP, copied so outputs land in tmp_path."""
    dst = tmp_path / "m.safetensors"
    shutil.copy(SAMPLES / "mlp-digits.safetensors", dst)
    return dst


def _record(path: Path) -> dict:
    return json.loads(path.read_text())


def _model(name: str, dtype: torch.dtype = torch.float64, **cfg: object) -> torch.nn.Module:
    torch.manual_seed(0)
    spec = models.make_spec(name, {"num_classes": 3, **cfg})
    return models.build(spec).to(dtype).eval()


def _params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach() for n, p in model.named_parameters()}


def _data(
    shape: tuple[int, ...], n: int = 40, dtype: torch.dtype = torch.float64
) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return torch.randn(n, *shape, generator=gen, dtype=dtype), torch.randint(0, 3, (n,), generator=gen)


def _evaluator(model, theta, dirs, x, y, loss="ce", **kw) -> SurfaceEvaluator:
    buffers = {n: b for n, b in model.named_buffers()}
    return SurfaceEvaluator(Subspace(model, theta, buffers, dirs), x, y, loss, **kw)


# ------------------------------------------------------------------------------------------- directions


def test_filter_normalised_directions_have_the_parameters_filter_norms() -> None:
    model = _model("cnn", input_shape=(1, 8, 8), width=3, hidden=5)
    theta = _params(model)
    d = D.random_directions(theta, 2, seed=4, norm="filter", bias="zero")[0]
    for name, t in theta.items():
        if t.dim() >= 2:  # conv kernels: per output channel; linear layers: per output neuron (row)
            rows_d = d[name].reshape(t.shape[0], -1).norm(dim=1)
            rows_t = t.reshape(t.shape[0], -1).norm(dim=1)
            assert torch.allclose(rows_d, rows_t, rtol=1e-12), name
        else:
            assert torch.count_nonzero(d[name]) == 0, name  # --bias zero: biases stay put
    fb = D.random_directions(theta, 1, seed=4, norm="filter", bias="filter")[0]
    assert all(torch.allclose(fb[n].abs(), t.abs()) for n, t in theta.items() if t.dim() == 1)
    keep = D.random_directions(theta, 1, seed=4, norm="filter", bias="keep")[0]
    raw = D.gaussian_direction(theta, torch.Generator().manual_seed(4))
    assert all(torch.equal(keep[n], raw[n]) for n, t in theta.items() if t.dim() == 1)
    unit = D.random_directions(theta, 1, seed=4, norm="unit", bias="zero")[0]
    assert D.length(unit) == pytest.approx(1.0, rel=1e-12) and torch.count_nonzero(unit["conv1.bias"]) == 0
    layer = D.random_directions(theta, 1, seed=4, norm="layer", bias="filter")[0]
    assert all(torch.isclose(layer[n].norm(), t.norm(), rtol=1e-12) for n, t in theta.items())
    # the same seed gives the same first direction whatever the count; orthogonalising comes after
    a, b = D.random_directions(theta, 2, seed=4, orthogonal=True)
    assert all(torch.equal(a[n], d[n]) for n in theta)
    assert abs(D.cosine(a, b)) < 1e-12 and abs(D.cosine(d, D.random_directions(theta, 2, seed=4)[1])) > 1e-6


def test_filter_normalised_slices_are_invariant_to_relu_rescaling() -> None:
    model = _model("mlp", input_shape=(6,), depth=2, width=5)
    theta = _params(model)
    x, y = _data((6,))
    c = 4.0
    scaled = dict(theta)
    scaled["hidden.0.weight"], scaled["hidden.0.bias"] = (
        theta["hidden.0.weight"] * c,
        theta["hidden.0.bias"] * c,
    )
    scaled["hidden.1.weight"] = theta["hidden.1.weight"] / c
    coeffs = torch.tensor(
        [[a, b] for a in (-1.0, -0.3, 0.0, 0.5, 1.0) for b in (-0.7, 0.0, 0.8)], dtype=torch.float64
    )

    def grid(params: dict, norm: str) -> torch.Tensor:
        dirs = D.random_directions(params, 2, seed=7, norm=norm, bias="zero")
        return _evaluator(model, params, dirs, x, y).evaluate(coeffs)[0]

    assert torch.allclose(grid(scaled, "filter"), grid(theta, "filter"), rtol=1e-12, atol=0)
    plain, rescaled = grid(theta, "none"), grid(scaled, "none")
    assert (rescaled - plain).abs().max() > 1e-3 * plain.abs().max()  # unnormalised slices see the scaling


# --------------------------------------------------------------------------------------------- engine


@pytest.mark.parametrize(
    ("name", "cfg", "shape"),
    [
        ("mlp", {"depth": 2, "width": 6}, (1, 4, 4)),
        ("mlp", {"depth": 0}, (5,)),
        ("linear", {}, (1, 4, 4)),
        ("cnn", {"width": 2, "hidden": 4}, (1, 8, 8)),
        ("resnet", {"width": 2, "stages": 2, "blocks": 1}, (1, 8, 8)),
    ],
)
def test_the_factored_engine_equals_one_forward_per_point(
    name: str, cfg: dict, shape: tuple[int, ...]
) -> None:
    model = _model(name, input_shape=shape, **cfg)
    if name == "resnet":  # non-trivial BatchNorm statistics, in eval mode
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    x, y = _data(shape, n=23)
    first = model.get_submodule(model.first_layer_name())
    assert torch.equal(model(x), model.forward_after_first(first(model.first_layer_input(x))))
    theta = _params(model)
    dirs = D.random_directions(theta, 2, seed=1, bias="filter")
    coeffs = torch.tensor([[0.0, 0.0], [0.4, -0.2], [-1.0, 1.0], [0.0, 0.7]], dtype=torch.float64)
    space = Subspace(model, theta, dict(model.named_buffers()), dirs)
    want_l, want_a = evaluate_points_reference(space, coeffs, x, y, "mse", max_batch=7)
    for strategy in ("loop", "vmap"):
        ev = SurfaceEvaluator(space, x, y, "mse", max_batch=7, strategy=strategy)
        assert ev.stats["factored_first_layer"] == model.first_layer_name()
        got_l, got_a = ev.evaluate(coeffs)
        assert torch.allclose(got_l, want_l, rtol=1e-12), strategy
        assert torch.equal(got_a, want_a)
    assert evaluate_points(space, coeffs, x, y, "mse", 7, block=3)[0].allclose(want_l, rtol=1e-12)


def test_auto_strategy_times_both_once_where_it_is_not_cpu(monkeypatch) -> None:
    model = _model("mlp", input_shape=(6,), depth=1, width=4)
    x, y = _data((6,))
    theta = _params(model)
    dirs = D.random_directions(theta, 2, seed=0)
    monkeypatch.setattr(SurfaceEvaluator, "_initial_strategy", lambda self: None)  # as on a GPU
    stats: dict = {}
    coeffs = torch.tensor([[0.1 * i, -0.2 * i] for i in range(4)], dtype=torch.float64)
    first = _evaluator(model, theta, dirs, x, y, stats=stats)
    a, b = first.evaluate(coeffs[:2]), first.evaluate(coeffs[2:])
    assert set(stats["seconds_per_point_by_strategy"]) == {"loop", "vmap"}
    assert stats["strategy"] in ("loop", "vmap")
    later = _evaluator(model, theta, dirs, x, y, stats=stats)  # e.g. the next line of a 1-D slice
    assert later._chosen == stats["strategy"]
    ref = evaluate_points_reference(Subspace(model, theta, {}, dirs), coeffs, x, y, "ce")[0]
    assert torch.allclose(torch.cat([a[0], b[0]]), ref, rtol=1e-12)


def test_an_uncached_first_layer_and_train_mode_give_the_same_points() -> None:
    model = _model("resnet", input_shape=(1, 8, 8), width=2, stages=1)
    x, y = _data((1, 8, 8), n=12)
    theta = _params(model)
    dirs = D.random_directions(theta, 1, seed=2)
    coeffs = torch.tensor([[0.0], [0.5], [0.5]], dtype=torch.float64)
    cached = _evaluator(model, theta, dirs, x, y, max_batch=5)
    tight = _evaluator(model, theta, dirs, x, y, max_batch=5, memory_budget=1)
    assert cached.stats["cached_first_layer"] and not tight.stats["cached_first_layer"]
    assert torch.equal(cached.evaluate(coeffs)[0], tight.evaluate(coeffs)[0])
    model.train()  # BatchNorm on batch statistics: buffers are copied per point, so points never drift
    before = {n: b.clone() for n, b in model.named_buffers()}
    loss = _evaluator(model, theta, dirs, x, y, max_batch=5).evaluate(coeffs)[0]
    assert loss[1] == loss[2]
    assert all(torch.equal(before[n], b) for n, b in model.named_buffers())


# -------------------------------------------------------------------------------------- derived numbers


def _softmax_regression_mse() -> tuple[torch.nn.Module, dict, torch.Tensor, torch.Tensor]:
    """MSE of a linear model is exactly quadratic in its parameters: L(a) = L(0) + g a + h a^2 / 2."""
    model = _model("linear", input_shape=(5,))
    x, y = _data((5,), n=30)
    return model, _params(model), x, y


def _exact_curvature(d: dict, x: torch.Tensor) -> torch.Tensor:
    """(2/N) sum_i |D x_i + e|^2: the second derivative of the MSE along d."""
    out = x @ d["head.weight"].T + d["head.bias"]
    return 2 * out.pow(2).sum() / x.shape[0]


def test_a_quadratic_objective_gives_the_exact_parabola() -> None:
    model, theta, x, y = _softmax_regression_mse()
    d1, d2 = D.random_directions(theta, 2, seed=3, bias="filter")
    grid = S.Grid(2, 1.0, 9)
    ev = _evaluator(model, theta, [d1, d2], x, y, loss="mse")
    loss = ev.evaluate(torch.tensor([grid.coeffs(p) for p in range(grid.num_points)], dtype=torch.float64))[0]
    loss = loss.reshape(grid.shape)
    centre = float(loss[4, 4])
    fit = S.parabola_1d(grid.alphas, loss[:, 4].tolist(), radius=1.0)  # all 9 points along alpha
    assert fit["curvature"] == pytest.approx(float(_exact_curvature(d1, x)), rel=1e-10)
    assert fit["rms_residual"] < 1e-12
    quad = S.quadratic_2d(grid.alphas, grid.alphas, loss, radius=0.5)
    cross = (
        2
        * ((x @ d1["head.weight"].T + d1["head.bias"]) * (x @ d2["head.weight"].T + d2["head.bias"])).sum()
        / 30
    )
    want = [[_exact_curvature(d1, x), cross], [cross, _exact_curvature(d2, x)]]
    assert torch.allclose(
        torch.tensor(quad["hessian"], dtype=torch.float64), torch.tensor(want, dtype=torch.float64), rtol=1e-9
    )
    # the basin edge of an exact parabola is where c/2 a^2 + b a = threshold (grid interpolation aside)
    basin = S.basin_1d(grid.alphas, loss[:, 4].tolist(), centre, threshold=1e9)
    assert basin["censored_left"] and basin["censored_right"] and basin["width"] == 2.0
    rise = S.max_rise(loss, centre, [torch.tensor(grid.alphas)] * 2)
    assert rise["value"] == pytest.approx(float(loss.max()) - centre) and rise["num_nonfinite"] == 0


def test_eigen_directions_have_the_curvature_of_their_eigenvalue() -> None:
    from lscape_cli.core.linalg.hvp import Objective

    model, theta, x, y = _softmax_regression_mse()
    obj = Objective.from_module(model, x, y, "mse")
    dirs, res = D.eigen_directions(obj, 2, seed=0, tol=1e-10)
    assert res.converged and abs(D.cosine(dirs[0], dirs[1])) < 1e-8
    for d, lam in zip(dirs, res.eigenvalues, strict=True):
        assert D.length(d) == pytest.approx(1.0, rel=1e-12)
        assert float(_exact_curvature(d, x)) == pytest.approx(lam, rel=1e-8)


def test_basin_width_interpolates_crossings_and_keeps_nonfinite_points_out() -> None:
    alphas = [-1.0, -0.5, 0.0, 0.5, 1.0]
    losses = [4.0, 1.0, 0.0, 2.0, math.nan]
    b = S.basin_1d(alphas, losses, 0.0, threshold=1.5)
    assert b["left"] == pytest.approx(-0.5 - 0.5 * (0.5 / 3.0)) and b["right"] == pytest.approx(0.375)
    assert not (b["censored_left"] or b["censored_right"])
    assert S.max_rise(torch.tensor(losses), 0.0, [torch.tensor(alphas)]) == {
        "num_nonfinite": 1,
        "value": 4.0,
        "at": [-1.0],
    }
    assert S.parabola_1d(alphas, losses, 0.6)["num_points"] == 4  # the NaN is left out of the fit
    with pytest.raises(ValueError, match="steps must be at least 2"):
        S.Grid(1, 1.0, 1)
    assert S.Grid(2, 1.5, 5).alphas == [-1.5, -0.75, 0.0, 0.75, 1.5]


def test_pca_directions_are_orthonormal_and_centre_the_trajectory() -> None:
    from lscape_cli.storage.checkpoint import load_checkpoint, load_trajectory

    ck = load_checkpoint(SAMPLES / "mlp-w32-traj.safetensors")
    traj = load_trajectory(SAMPLES / "mlp-w32-traj.trajectory.safetensors")
    theta = {n: ck.state[n].double() for n in traj.state}
    res = D.pca_directions(theta, {n: t.double() for n, t in traj.state.items()}, 2)
    a, b = res["directions"]
    assert (
        D.length(a) == pytest.approx(1.0)
        and D.length(b) == pytest.approx(1.0)
        and abs(D.cosine(a, b)) < 1e-10
    )
    ratios = res["explained_variance_ratio"]
    assert ratios[0] >= ratios[1] > 0 and sum(ratios) <= 1 + 1e-12
    coords = res["coords"]
    assert coords[-1].abs().max() < 1e-6 and coords[0, 0] < 0  # ends at the checkpoint; starts at -alpha
    with pytest.raises(ValueError, match="at least 7 snapshots"):
        D.pca_directions(theta, traj.state, 6)


# ------------------------------------------------------------------------------------------------ CLI


def test_plane_record_files_and_centre(cli, tiny_ckpt: Path, tmp_path: Path) -> None:
    # a checkpoint trained on this machine: its stored metric and the slice's centre come from the same
    # CPU kernels (a sample checkpoint made elsewhere may differ from them in the last float32 bit)
    ckpt = tmp_path / "m.safetensors"
    shutil.copy(tiny_ckpt, ckpt)
    r = cli("slice", ckpt, "--steps", "9", "--range", "1.5", "--device", "cpu", "--quiet")
    assert r.exit_code == 0, r.output
    rec = _record(ckpt.with_name("m.slice.json"))
    assert rec["schema"] == "lscape.slice/1" and rec["config"]["evaluation"]["mode"] == "eval"
    validate(rec, "slice.schema.json")
    res = rec["results"]
    c = res["centre"]
    assert c["loss"] == c["reference_loss"]  # the grid engine at 0 is the model's own forward, bit for bit
    assert float(torch.tensor(c["loss"], dtype=torch.float32)) == c["checkpoint_metric"]
    assert res["grid"]["loss"][4][4] == c["loss"]
    assert res["grid"]["shape"] == [9, 9] and res["grid"]["alpha"][0] == -1.5
    assert res["directions"]["filter_norm_max_relative_deviation"][0] < 1e-5
    plane = res["plane"]
    assert plane["max_rise"]["value"] > 0 and plane["basin"]["num_points"] >= 1
    assert len(plane["quadratic"]["eigenvalues"]) == 2 and set(plane["axes"]) == {"alpha", "beta"}
    assert res["speed"]["engine"]["factored_first_layer"] == "hidden.0"
    for name in ("contour", "surface", "heatmap"):
        for fmt in ("png", "pdf"):
            assert ckpt.with_name(f"m.slice.{name}.{fmt}").stat().st_size > 1000
    from lscape_cli.storage.slices import load_grid

    tensors, meta = load_grid(ckpt.with_name("m.slice.safetensors"))
    assert tensors["loss"].shape == (9, 9) and tensors["loss"][4, 4].item() == c["loss"]
    assert meta["slice"]["directions_digest"] == res["directions"]["digest"]
    assert not list(ckpt.parent.glob("*partial*"))


def test_lines_reuse_directions_and_json_stdout(cli, ckpt: Path, tmp_path: Path) -> None:
    r = cli("slice", ckpt, "--dims", "1", "--count", "3", "--steps", "7", "--json", "--device", "cpu")
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout)
    assert rec == _record(ckpt.with_name("m.slice.json"))
    validate(rec, "slice.schema.json")
    res = rec["results"]
    assert len(res["lines"]) == 3 and res["grid"]["shape"] == [3, 7]
    s = res["sharpness_1d"]
    assert s["value"] == max(s["per_direction"]) and "seed 001" in s["method"]
    assert ckpt.with_name("m.slice.lines.png").exists()
    again = cli(
        "slice",
        ckpt,
        "--dims",
        "1",
        "--count",
        "2",
        "--steps",
        "7",
        "--directions",
        ckpt.with_name("m.slice.directions.safetensors"),
        "--out",
        tmp_path / "again.json",
        *FAST,
    )
    assert again.exit_code == 0, again.output
    other = _record(tmp_path / "again.json")["results"]["grid"]["loss"]
    assert other == res["grid"]["loss"][:2]  # the same vectors, the same numbers


def test_toward_reaches_the_other_checkpoint(cli, ckpt: Path, tmp_path: Path) -> None:
    from lscape_cli.storage.checkpoint import load_checkpoint, save_checkpoint

    src = load_checkpoint(ckpt)
    gen = torch.Generator().manual_seed(0)
    moved = {n: t + 0.05 * torch.randn(t.shape, generator=gen) for n, t in src.state.items()}
    meta = {k: v for k, v in src.meta.items() if k != "schema"}
    save_checkpoint(tmp_path / "b.safetensors", moved, meta)
    r = cli("slice", ckpt, "--toward", tmp_path / "b.safetensors", "--dims", "1", "--steps", "3", *FAST)
    assert r.exit_code == 0, r.output
    far = cli("slice", tmp_path / "b.safetensors", "--dims", "1", "--steps", "3", *FAST)
    assert far.exit_code == 0, far.output
    at_b = _record(tmp_path / "b.slice.json")["results"]["centre"]["loss"]
    rec = _record(ckpt.with_name("m.slice.json"))
    assert rec["results"]["grid"]["loss"][0][2] == pytest.approx(at_b, rel=1e-6)
    assert rec["inputs"]["other"]["path"] == "b.safetensors"


def test_pca_slice_overlays_the_trajectory(cli, tmp_path: Path) -> None:
    for f in ("mlp-w32-traj.safetensors", "mlp-w32-traj.trajectory.safetensors"):
        shutil.copy(SAMPLES / f, tmp_path / f)
    ck = tmp_path / "mlp-w32-traj.safetensors"
    r = cli(
        "slice",
        ck,
        "--pca",
        tmp_path / "mlp-w32-traj.trajectory.safetensors",
        "--dims",
        "1",
        "--steps",
        "5",
        "--device",
        "cpu",
        "--quiet",
    )
    assert r.exit_code == 0, r.output
    rec = _record(tmp_path / "mlp-w32-traj.slice.json")
    traj = rec["results"]["trajectory"]
    assert len(traj["coords"]) == 6 and traj["inside_range"] and traj["epochs"] == [0, 2, 4, 6, 8, 10]
    assert rec["config"]["slice"]["range"] >= max(abs(c[0]) for c in traj["coords"])
    assert rec["config"]["directions"]["explained_variance_ratio"][0] > 0.5
    assert (tmp_path / "mlp-w32-traj.slice.lines.png").exists()


def test_non_finite_points_are_kept_as_null(cli, ckpt: Path) -> None:
    r = cli(
        "slice",
        ckpt,
        "--dims",
        "1",
        "--steps",
        "3",
        "--range",
        "1e38",
        "--norm",
        "none",
        "--bias",
        "keep",
        *FAST,
    )
    assert r.exit_code == 0, r.output
    rec = _record(ckpt.with_name("m.slice.json"))
    row = rec["results"]["grid"]["loss"][0]
    assert row[0] is None and row[2] is None and row[1] is not None
    assert any("non-finite" in w and "never imputed" in w for w in rec["warnings"])
    from lscape_cli.storage.slices import load_grid

    assert torch.isnan(load_grid(ckpt.with_name("m.slice.safetensors"))[0]["loss"][0, 0])


def test_resumed_grid_equals_an_uninterrupted_one(
    cli, ckpt: Path, tmp_path: Path, monkeypatch, error_line
) -> None:
    args = ("--steps", "9", "--dims", "2", *FAST)
    full = cli("slice", ckpt, *args, "--out", tmp_path / "full.json")
    assert full.exit_code == 0, full.output
    import lscape_cli.storage.slices as store

    real, calls = store.save_partial, []

    def flaky(*a, **k):  # the 4th flush never returns: Ctrl-C while the grid is half done
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        real(*a, **k)

    monkeypatch.setattr(store, "save_partial", flaky)
    cut = cli("slice", ckpt, *args)
    line = error_line(cut, code=130)
    assert (
        line == f"Error: interrupted: partial grid in {ckpt.with_name('m.slice.partial.safetensors')} "
        "(re-run with --resume to continue)"
    )
    monkeypatch.setattr(store, "save_partial", real)
    bad = cli("slice", ckpt, "--steps", "9", "--range", "2", "--device", "cpu", "--quiet", "--resume")
    assert "partial grid was made with other settings (coefficients, grid differ)" in error_line(bad)
    done = cli("slice", ckpt, *args, "--resume")
    assert done.exit_code == 0, done.output
    rec = _record(ckpt.with_name("m.slice.json"))
    assert rec["config"]["resume"] == {"requested": True, "points_reused": 27}
    assert rec["results"]["speed"]["points_evaluated"] == 81 - 27
    assert rec["results"]["grid"]["loss"] == _record(tmp_path / "full.json")["results"]["grid"]["loss"]
    assert not list(tmp_path.glob("*partial*"))


def test_bad_inputs(cli, ckpt: Path, tmp_path: Path, error_line) -> None:
    shutil.copy(SAMPLES / "mlp-d4-r000.safetensors", tmp_path / "big.safetensors")
    r = cli("slice", tmp_path / "big.safetensors", "--dims", "1", "--steps", "2", *FAST)
    assert r.exit_code == 0, r.output
    wrong = cli(
        "slice", ckpt, "--dims", "1", "--directions", tmp_path / "big.slice.directions.safetensors", *FAST
    )
    assert error_line(wrong).startswith(
        "Error: direction file does not match the model (direction 0): "
        "unexpected hidden.1.bias, hidden.1.weight"
    )
    assert error_line(cli("slice", ckpt, "--range", "0"), code=2) == (
        "Error: Invalid value for '--range': must be a finite number > 0, got 0.0"
    )
    assert error_line(cli("slice", ckpt, "--range", "-1"), code=2).endswith(
        "must be a finite number > 0, got -1.0"
    )
    assert error_line(cli("slice", ckpt, "--steps", "1"), code=2) == (
        "Error: Invalid value for '--steps': Input should be greater than or equal to 2"
    )
    assert error_line(cli("slice", ckpt, "--count", "3")) == (
        "Error: --count needs --dims 1: --count (add --dims 1 for N independent 1-D directions)"
    )
    assert "choose one kind of direction" in error_line(cli("slice", ckpt, "--eigen", "--pca", ckpt))
    assert error_line(cli("slice", ckpt, "--pca", ckpt)) == (
        f"Error: file is a lscape.checkpoint/1, not a lscape.trajectory/1: {ckpt} "
        "(pass the right kind of file)"
    )
    assert "unknown value 'cube'" in error_line(cli("slice", ckpt, "--norm", "cube"))
    needs = cli("slice", ckpt, "--directions", tmp_path / "big.slice.directions.safetensors", *FAST)
    assert "direction file holds 1 direction(s), this slice needs 2" in error_line(needs)


@pytest.mark.slow  # torchrun: ~20 s (make test-slow)
def test_two_processes_give_the_grid_of_one(cli, torchrun, ckpt: Path, tmp_path: Path) -> None:
    args = ["--steps", "7", "--dims", "2", "--dtype", "float64", "--device", "cpu", "--quiet", "--no-plot"]
    r = cli("slice", ckpt, *args, "--out", tmp_path / "one.json")
    assert r.exit_code == 0, r.output
    proc = torchrun("slice", ckpt, *args, "--out", tmp_path / "two.json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    one, two = _record(tmp_path / "one.json"), _record(tmp_path / "two.json")
    assert two["config"]["world_size"] == 2 and two["results"]["speed"]["points_evaluated"] == 49
    assert two["results"]["grid"] == one["results"]["grid"]
    assert not list(tmp_path.glob("*partial*"))
