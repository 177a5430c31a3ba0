"""`lscape pareto`: seed 000's geometry on hand-made points, and the command on real runs."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from lscape_cli.core.pareto import fronts as P
from lscape_cli.storage.schemas import validate

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_checkpoints" / "mlp-digits.safetensors"


def test_fronts_on_a_hand_made_point_set() -> None:
    pts = np.array(
        [[0, 5], [1, 2], [2, 1.5], [3, 0.5], [4, 3], [1.5, 4], [2.5, 0.9], [5, 0.2], [6, 0.4]], float
    )
    assert P.non_dominated(pts).tolist() == [0, 1, 2, 3, 6, 7]
    # (2, 1.5) and (2.5, 0.9) are non-dominated but lie above the hull chain (0,5)-(1,2)-(3,0.5)-(5,0.2)
    assert P.hull_front(pts).tolist() == [0, 1, 3, 7]


def test_hull_chain_of_a_single_best_point() -> None:
    pts = np.array([[1, 1], [2, 3], [3, 2]], float)
    assert P.hull_front(pts).tolist() == [0]
    assert P.tls_line(pts[[0]])["status"] == "fewer than two distinct front points"


def test_tls_recovers_an_exact_line() -> None:
    y = np.array([3.0, 2.5, 2.0, 1.0, 0.2])
    pts = np.stack([7.0 - 2.0 * y, y], axis=1)  # x = 7 - 2 y
    line = P.tls_line(pts)
    assert line["a"] == pytest.approx(7.0) and line["b"] == pytest.approx(-2.0)
    assert line["lambda"] == pytest.approx(2.0)


def test_tls_is_orthogonal_not_ordinary_least_squares() -> None:
    pts = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.5, 0.5 + 1e-9], [2.0, 2.0]])
    line = P.tls_line(pts)
    assert line["b"] == pytest.approx(1.0, rel=1e-6)  # principal axis of a symmetric cloud is the diagonal


def test_rho_rms_and_spread_on_known_vectors() -> None:
    thetas = np.array([[3.0, 4.0], [0.0, 0.0]])
    s = P.spreads(thetas)
    assert s["rho_rms"] == pytest.approx(math.sqrt(25 / 2))  # sqrt(tr(Theta Theta^T) / R)
    assert s["spread_about_centroid"] == pytest.approx(2.5)  # each is 2.5 from the centroid (1.5, 2)


def test_global_lambda_on_data_with_a_known_answer() -> None:
    x = np.array([1.0, 0.5, 0.2, 0.15, 0.14, 0.16])
    y = np.array([1.0, 0.8, 0.7, 1.5, 2.5, 4.0])
    target = 3.0 + 2.0 * (x + 0.3 * y)  # an affine map of the proxy at lambda = 0.3: normalised, identical
    res = P.global_lambda(x, y, target)
    assert res["lambda_g"] == pytest.approx(0.3, rel=1e-6)
    assert res["mae_with_curvature"] < 1e-8 < res["mae_without_curvature"]
    assert res["relative_improvement"] == pytest.approx(1.0)


def test_global_lambda_stays_zero_when_curvature_does_not_help() -> None:
    x = np.array([1.0, 0.5, 0.2])
    res = P.global_lambda(x, np.array([1.0, 5.0, 2.0]), 2 * x)
    assert res["lambda_g"] == 0.0 and res["mae_without_curvature"] == 0.0
    assert res["relative_improvement"] is None  # nothing to improve on: no ratio, rather than 0/0


def test_half_mass_ellipse_of_a_known_covariance() -> None:
    e = P.confidence_ellipse(np.array([1.0, 2.0]), np.diag([4.0, 1.0]))
    r = math.sqrt(2 * math.log(2))
    assert e["semi_axes"] == pytest.approx([2 * r, r]) and abs(e["angle_deg"]) % 180 == pytest.approx(0.0)


def test_hypervolume_and_multi_metric_fronts() -> None:
    assert P.hypervolume(np.array([[1.0, 2.0], [2.0, 1.0]]), [3, 3]) == pytest.approx(3.0)
    assert P.hypervolume(np.array([[1.0, 1.0, 1.0]]), [2, 3, 4]) == pytest.approx(6.0)
    values = np.array([[0.1, 0.9], [0.2, 0.95], [0.05, 0.5], [0.3, 0.99]])  # (loss: min, accuracy: max)
    res = P.multi_front(values, ["min", "max"], reference=[1.0, 0.0])
    assert sorted(res["front"]) == [0, 1, 2, 3]  # every trade of loss for accuracy is non-dominated
    res = P.multi_front(np.array([[0.1, 0.9], [0.2, 0.8]]), ["min", "max"], reference=[1.0, 0.0])
    assert res["front"] == [0] and res["hypervolume"] == pytest.approx(0.9 * 0.9)


# ------------------------------------------------------------------------------ the command


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two depths x three restarts on digits, each probed with --frobenius."""
    from typer.testing import CliRunner

    from lscape_cli.cli import app

    root = tmp_path_factory.mktemp("sweep")
    runner = CliRunner()
    for depth in (1, 2):
        r = runner.invoke(
            app,
            [
                "train",
                "--model",
                "mlp",
                "--depth",
                str(depth),
                "--width",
                "8",
                "--dataset",
                "digits",
                "--epochs",
                "2",
                "--restarts",
                "3",
                "--out",
                str(root / f"d{depth}"),
                "--quiet",
                "--device",
                "cpu",
            ],
        )
        assert r.exit_code == 0, r.output
        for ckpt in sorted((root / f"d{depth}").glob("*.safetensors")):
            r = runner.invoke(
                app, ["probe", str(ckpt), "--frobenius", "--matvecs", "6", "--quiet", "--device", "cpu"]
            )
            assert r.exit_code == 0, r.output
    return root


def test_pareto_on_a_depth_sweep(cli, sweep: Path, tmp_path: Path) -> None:
    out = tmp_path / "study.json"
    r = cli("pareto", sweep, "--group-by", "model.depth", "--out", out, "--quiet")
    assert r.exit_code == 0, r.output
    rec = json.loads(out.read_text())
    assert rec["schema"] == "lscape.pareto/1"
    validate(rec, "pareto.schema.json")
    res = rec["results"]
    assert set(res["groups"]) == {"1", "2"} and res["num_runs"] == 6
    for g in res["groups"].values():
        assert g["n"] == 3 and g["ellipse_50"] is not None
        p = g["parameters"]
        assert p["rho_rms"] >= p["spread_about_centroid"] >= 0
        assert "spread_after_alignment" in p
    assert "lambda_g" in res["across_groups"]
    for name in ("ellipses", "summary", "proxy"):
        for ext in ("png", "pdf"):
            assert (tmp_path / f"study-{name}.{ext}").stat().st_size > 1000


def test_aligned_spread_of_a_permuted_copy_is_zero(cli, tmp_path: Path) -> None:
    from lscape_cli.core.connectivity import alignment
    from lscape_cli.models.loading import load_model
    from lscape_cli.storage.checkpoint import load_checkpoint, save_checkpoint

    a = tmp_path / "a.safetensors"
    shutil.copy(SAMPLE, a)
    lm = load_model(a)
    ck = load_checkpoint(a)
    perms = alignment.random_permutation(lm.spec, seed=5)
    meta = {k: v for k, v in ck.meta.items() if k != "schema"}
    save_checkpoint(tmp_path / "b.safetensors", alignment.permute(lm.spec, ck.state, perms), meta)
    for name in ("a", "b"):
        r = cli(
            "probe",
            tmp_path / f"{name}.safetensors",
            "--frobenius",
            "--matvecs",
            "6",
            "--quiet",
            "--device",
            "cpu",
        )
        assert r.exit_code == 0, r.output
    out = tmp_path / "p.json"
    r = cli("pareto", tmp_path / "a.probe.json", tmp_path / "b.probe.json", "--out", out, "--quiet")
    assert r.exit_code == 0, r.output
    p = json.loads(out.read_text())["results"]["groups"]["1"]["parameters"]
    assert p["spread_about_centroid"] > 0.1
    assert p["spread_after_alignment"] < 1e-6
    norm_a = math.sqrt(sum(float(t.double().pow(2).sum()) for t in lm.module.parameters()))
    assert p["rho_rms"] == pytest.approx(
        norm_a, rel=1e-6
    )  # a permutation keeps the norm: rho_RMS = ||theta_A||


def test_axis_scales_follow_the_data() -> None:
    """auto: log only where every value is positive and the values span two decades."""
    from lscape_cli.plotting.pareto import axis_scales

    table = {
        1: np.array([[0.01, 5.0, 0.0], [0.5, 9.0, 0.0]]),
        2: np.array([[2.0, 7.0, 0.0], [3.0, 6.0, 0.0]]),
    }
    assert axis_scales(table, "auto") == ("log", "linear")
    assert axis_scales(table, "log") == ("log", "log")
    assert axis_scales(table, "linear") == ("linear", "linear")
    table[2][0, 0] = -1.0  # a non-positive value can not go on a log axis
    assert axis_scales(table, "log") == ("linear", "log")


def test_log_axes_draw_the_ellipse_of_log_values() -> None:
    """On log axes the outline is the 50% ellipse of log10 of the points, mapped back."""
    from lscape_cli.plotting.pareto import _ellipse_outline

    rng = np.random.default_rng(0)
    pts = 10.0 ** rng.normal([0.0, 2.0], [0.5, 0.2], size=(40, 2))
    ring, centre = _ellipse_outline(pts, (True, True))
    z = np.log10(pts)
    assert np.allclose(np.log10(centre), z.mean(axis=0))  # the geometric mean
    mean, cov = P.mean_cov(z)
    d = np.log10(ring) - mean
    r2 = np.einsum("ni,ij,nj->n", d, np.linalg.inv(cov), d)
    assert np.allclose(r2, -2 * math.log(0.5))  # every outline point at the 50% Mahalanobis radius


def test_pareto_axes_option(cli, sweep: Path, tmp_path: Path, error_line) -> None:
    out = tmp_path / "logs.json"
    r = cli("pareto", sweep, "--axes", "log", "--out", out, "--quiet")
    assert r.exit_code == 0, r.output
    rec = json.loads(out.read_text())
    validate(rec, "pareto.schema.json")
    assert rec["results"]["figure_axes"] == {"x": "log", "y": "log"}
    assert (tmp_path / "logs-ellipses.png").stat().st_size > 1000
    r = cli("pareto", sweep, "--axes", "semilog", "--out", tmp_path / "bad.json")
    assert error_line(r) == "Error: unknown value 'semilog': --axes (choose one of: auto, linear, log)"
    assert not (tmp_path / "bad.json").exists()


def test_missing_metric_names_the_command(cli, sweep: Path, tmp_path: Path) -> None:
    r = cli("pareto", sweep, "--y", "lambda_max", "--out", tmp_path / "x.json")
    assert r.exit_code == 1
    assert "metric 'lambda_max' missing for a run" in r.stderr and "--lambda-max" in r.stderr
    assert not (tmp_path / "x.json").exists()


def test_grouping_and_join_errors(cli, sweep: Path, tmp_path: Path) -> None:
    r = cli("pareto", sweep, "--group-by", "model.colour", "--out", tmp_path / "x.json")
    assert r.exit_code == 1 and "unknown group key 'model.colour'" in r.stderr
    mixed = tmp_path / "mixed"
    shutil.copytree(sweep / "d1", mixed / "d1")
    r = cli(
        "train",
        "--model",
        "mlp",
        "--depth",
        "1",
        "--width",
        "8",
        "--dataset",
        "synthetic",
        "--input-dim",
        "8",
        "--num-samples",
        "200",
        "--epochs",
        "1",
        "--out",
        mixed / "syn",
        "--quiet",
        "--device",
        "cpu",
    )
    assert r.exit_code == 0, r.output
    r = cli(
        "probe",
        mixed / "syn" / "model.safetensors",
        "--frobenius",
        "--matvecs",
        "6",
        "--quiet",
        "--device",
        "cpu",
    )
    assert r.exit_code == 0, r.output
    r = cli("pareto", mixed, "--out", tmp_path / "x.json")
    assert r.exit_code == 1 and "runs mix dataset.name values digits, synthetic" in r.stderr
    r = cli("pareto", tmp_path / "nothing-here")
    assert r.exit_code == 1 and "record not found" in r.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    r = cli("pareto", empty)
    assert r.exit_code == 1 and "no probe or train records found" in r.stderr


def test_general_multi_metric_mode(cli, sweep: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.json"
    r = cli(
        "pareto",
        sweep,
        "--metric",
        "train_loss:min",
        "--metric",
        "test_accuracy:max",
        "--metric",
        "frobenius:min",
        "--out",
        out,
        "--quiet",
    )
    assert r.exit_code == 0, r.output
    rec = json.loads(out.read_text())
    validate(rec, "pareto.schema.json")
    multi = rec["results"]["multi"]
    assert multi["metrics"] == ["train_loss", "test_accuracy", "frobenius"] and multi["hypervolume"] > 0
    assert 1 <= len(multi["front"]) <= 6
    r = cli("pareto", sweep, "--metric", "train_loss:low", "--out", out)
    assert r.exit_code == 1 and "invalid metric spec 'train_loss:low'" in r.stderr


def test_two_probe_records_disagreeing_on_the_metric_are_refused(cli, sweep: Path, tmp_path: Path) -> None:
    """A second probe of one checkpoint with another budget must not silently replace the first."""
    root = tmp_path / "sweep"
    shutil.copytree(sweep, root)
    ckpt = sorted((root / "d1").glob("*-r000.safetensors"))[0]
    extra = ckpt.with_name("again.probe.json")
    r = cli("probe", ckpt, "--frobenius", "--matvecs", "12", "--quiet", "--device", "cpu", "--out", extra)
    assert r.exit_code == 0, r.output
    r = cli("pareto", root, "--out", tmp_path / "x.json", "--quiet")
    assert r.exit_code == 1 and "metric 'frobenius' has different values in 2 probe records" in r.stderr
    assert extra.name in r.stderr and not (tmp_path / "x.json").exists()
    r = cli(
        "pareto", root, "--y", "train_loss", "--x", "train_accuracy", "--out", tmp_path / "y.json", "--quiet"
    )
    assert r.exit_code == 0, r.output  # metrics the records agree on (or do not give) are not refused
