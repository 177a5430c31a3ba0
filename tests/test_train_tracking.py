"""`lscape train --track`: curvature per epoch from the probe engine, equal to `lscape probe` afterwards."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from lscape_cli.core.probe.engine import ProbeRequest
from lscape_cli.core.training.tracking import parse_track

TRACK = "lambda_max,top_k:2,trace,frobenius,grad_norm,sharpness:0.05,noise:0.01"
NAMES = ["lambda_max", "top_k", "trace", "frobenius", "grad_norm", "sharpness", "noise"]
PROBE_FLAGS = ["--lambda-max", "--top-k", "2", "--trace", "--frobenius", "--grad-norm"]
PROBE_FLAGS += ["--sharpness", "0.05", "--noise", "0.01"]


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory: pytest.TempPathFactory, cli, tiny_args) -> Path:
    """Two restarts, 5 epochs, every quantity tracked every 2 epochs on the first 40 training samples."""
    out = tmp_path_factory.mktemp("tracked") / "run"
    args = ["--epochs", "5", "--restarts", "2", "--track", TRACK, "--track-every", "2"]
    result = cli(*tiny_args(out, *args, "--track-samples", "40", "--track-seed", "3"))
    assert result.exit_code == 0, result.output
    return out


def test_tracked_epochs_are_the_first_every_n_and_the_last(tracked_run: Path, read_json) -> None:
    record = read_json(tracked_run / "model-r000.train.json")
    tracked = [e["epoch"] for e in record["results"]["history"] if "tracked" in e]
    assert tracked == [1, 2, 4, 5]
    assert record["results"]["tracking"]["epochs"] == tracked
    for entry in record["results"]["history"]:
        if "tracked" in entry:
            assert list(entry["tracked"]) == NAMES
            assert entry["tracking_cost"]["num_matvecs"] >= entry["tracked"]["lambda_max"]["num_matvecs"] + 45


def test_tracking_protocol_and_cost_are_recorded(tracked_run: Path, read_json, train_validator) -> None:
    records = [read_json(p) for p in sorted(tracked_run.glob("*.train.json"))]
    for record in records:
        errors = sorted(train_validator.iter_errors(record), key=str)
        assert not errors, f"{errors[0].message} at {list(errors[0].absolute_path)}"
        proto = record["config"]["tracking"]
        assert proto["split"] == "train" and proto["samples"] == 40 and proto["num_samples"] == 40
        assert proto["mode"] == "eval" and proto["seed"] == 3 and proto["request"]["seed"] == 3
        cost = record["results"]["tracking"]
        assert 0 < cost["restart_wall_time_s"] <= cost["wall_time_s"]
        assert 0 < cost["share_of_training"] <= 1
    # the run-wide total is the same in every restart's record; each restart was probed on its own
    assert (
        records[0]["results"]["tracking"]["wall_time_s"] == records[1]["results"]["tracking"]["wall_time_s"]
    )
    last = [r["results"]["history"][-1]["tracked"]["lambda_max"]["estimate"] for r in records]
    assert last[0] != last[1]


def test_last_tracked_values_equal_lscape_probe_of_the_final_checkpoint(
    tracked_run: Path, cli, read_json
) -> None:
    """Same samples (first 40 of train), split, seed and request: the same numbers, key for key."""
    for r in (0, 1):
        ckpt = tracked_run / f"model-r00{r}.safetensors"
        out = tracked_run / f"r{r}.probe.json"
        args = ["probe", ckpt, *PROBE_FLAGS, "--samples", "40", "--seed", "3", "--out", out, "--quiet"]
        result = cli(*args, "--device", "cpu")
        assert result.exit_code == 0, result.output
        probed = read_json(out)["results"]
        tracked = read_json(tracked_run / f"model-r00{r}.train.json")["results"]["history"][-1]["tracked"]
        assert probed["loss"]["num_samples"] == 40
        for name, value in tracked.items():
            assert set(value if isinstance(value, dict) else value[0]) == set(
                probed[name] if isinstance(probed[name], dict) else probed[name][0]
            ), name
        lam, ref = tracked["lambda_max"], probed["lambda_max"]
        assert lam["converged"] and math.isclose(lam["estimate"], ref["estimate"], rel_tol=1e-6)
        assert math.isclose(tracked["trace"]["estimate"], probed["trace"]["estimate"], rel_tol=1e-5)
        assert math.isclose(tracked["frobenius"]["estimate"], probed["frobenius"]["estimate"], rel_tol=1e-5)
        assert math.isclose(tracked["grad_norm"]["estimate"], probed["grad_norm"]["estimate"], rel_tol=1e-5)
        s, p = tracked["sharpness"][0]["random"], probed["sharpness"][0]["random"]
        assert math.isclose(s["base_loss"], p["base_loss"], rel_tol=1e-6)
        assert tracked["top_k"]["eigenvalues"] == pytest.approx(probed["top_k"]["eigenvalues"], rel=1e-5)


def test_probe_samples_keeps_the_first_m_samples(tiny_ckpt: Path, cli, read_json, tmp_path: Path) -> None:
    out = tmp_path / "p.json"
    result = cli("probe", tiny_ckpt, "--grad-norm", "--samples", "10", "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    record = read_json(out)
    assert record["config"]["evaluation"]["num_samples"] == 10
    assert record["config"]["evaluation"]["samples"] == 10


def test_parse_track_builds_the_probe_request() -> None:
    names, req = parse_track("lambda_max,top_k:3,sharpness:0.01:0.05,noise:0.1", seed=5)
    assert names == ("lambda_max", "top_k", "sharpness", "noise")
    assert req == ProbeRequest(
        lambda_max=True, top_k=3, sharpness_eps=(0.01, 0.05), noise_sigmas=(0.1,), seed=5
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("hessian", "unknown quantity 'hessian'"),
        ("top_k", "top_k needs a count"),
        ("sharpness:-1", "sharpness needs finite positive values"),
        ("sharpness:inf", "sharpness needs finite positive values"),
        ("noise:1e400", "noise needs finite positive values"),
        ("top_k:²", "top_k needs a count"),
        ("top_k:99999999999", "top_k needs a count"),
        ("trace:3", "trace takes no argument"),
        ("trace,trace", "'trace' given twice"),
    ],
)
def test_bad_track_is_one_error_line(
    value: str, message: str, cli, tiny_args, error_line, tmp_path: Path
) -> None:
    line = error_line(cli(*tiny_args(tmp_path / "o", "--track", value)))
    assert line.startswith(f"Error: {message}") and "--track" in line
    assert not (tmp_path / "o").exists()


def test_tracking_an_empty_split_is_refused(cli, tiny_args, error_line, tmp_path: Path) -> None:
    args = tiny_args(tmp_path / "o", "--track", "trace", "--track-split", "val", "--val-size", "0")
    line = error_line(cli(*args))
    assert "the val split is empty" in line and "--track-split" in line


def _tracked_values(record: dict[str, Any]) -> list[float]:
    return [e["tracked"]["lambda_max"]["estimate"] for e in record["results"]["history"] if "tracked" in e]


def test_batch_64_and_full_batch_lambda_max_during_training(
    tmp_path: Path, cli, tiny_args, read_json
) -> None:
    """Seed 003's figure from --track alone: two runs, one lambda_max series each."""
    series = {}
    for bs in ("16", "full"):
        out = tmp_path / bs
        args = ["--batch-size", bs, "--epochs", "3", "--lr", "0.1", "--track", "lambda_max"]
        result = cli(*tiny_args(out, *args, "--track-samples", "64"))
        assert result.exit_code == 0, result.output
        series[bs] = _tracked_values(read_json(out / "model.train.json"))
    assert len(series["16"]) == len(series["full"]) == 3
    assert series["16"] != series["full"]
    assert all(v > 0 for v in series["16"] + series["full"])


def test_probe_snapshot_all_gives_a_series_equal_to_tracking(
    tmp_path: Path, cli, tiny_args, read_json
) -> None:
    """Curvature after the fact: probing every stored snapshot gives what --track gave during training."""
    from lscape_cli.storage.schemas import validate

    out = tmp_path / "run"
    args = ["--epochs", "3", "--save-trajectory", "1", "--track", "lambda_max", "--track-samples", "40"]
    assert cli(*tiny_args(out, *args)).exit_code == 0
    traj, rec = out / "model.trajectory.safetensors", tmp_path / "series.json"
    result = cli("probe", traj, "--snapshot", "all", "--lambda-max", "--samples", "40", "--out", rec, "-q")
    assert result.exit_code == 0, result.output
    record = read_json(rec)
    validate(record, "probe.schema.json")
    series = record["results"]["snapshots"]["series"]
    assert [s["epoch"] for s in series] == [0, 1, 2, 3] and [s["index"] for s in series] == [0, 1, 2, 3]
    history = read_json(out / "model.train.json")["results"]["history"]
    for entry, point in zip(history, series[1:], strict=True):
        assert point["step"] == entry["step"]
        tracked = entry["tracked"]["lambda_max"]["estimate"]
        assert math.isclose(point["lambda_max"]["estimate"], tracked, rel_tol=1e-5)
    some = cli("probe", traj, "--snapshot", "0,3", "--lambda-max", "--out", tmp_path / "s.json", "-q")
    assert some.exit_code == 0, some.output
    assert [s["epoch"] for s in read_json(tmp_path / "s.json")["results"]["snapshots"]["series"]] == [0, 3]


def test_probe_snapshot_of_a_missing_epoch_is_one_error_line(tiny_run: Path, cli, error_line) -> None:
    traj = tiny_run / "model.trajectory.safetensors"
    line = error_line(cli("probe", traj, "--snapshot", "7", "--out", traj.parent / "x.json"))
    assert line == "Error: no snapshot at epoch 7: --snapshot (give 'all' or epochs from [0, 1, 2])"
    assert not (traj.parent / "x.json").exists()


def test_tracking_a_batchnorm_model_uses_its_running_statistics(tmp_path: Path, cli, read_json) -> None:
    """Eval mode with each restart's own BatchNorm statistics: the probe of the checkpoint agrees."""
    out = tmp_path / "res"
    args = "--model resnet --width 4 --dataset digits --train-size 64 --val-size 32 --test-size 32 --epochs 2"
    args += " --restarts 2 --device cpu --quiet --track lambda_max,trace --track-samples 32"
    result = cli("train", *args.split(), "--out", out)
    assert result.exit_code == 0, result.output
    rec = tmp_path / "p.json"
    result = cli(
        "probe", out / "model-r001.safetensors", "--lambda-max", "--trace", "--samples", "32", "--out", rec
    )
    assert result.exit_code == 0, result.output
    probed = read_json(rec)["results"]
    tracked = read_json(out / "model-r001.train.json")["results"]["history"][-1]["tracked"]
    assert math.isclose(tracked["lambda_max"]["estimate"], probed["lambda_max"]["estimate"], rel_tol=1e-6)
    assert math.isclose(tracked["trace"]["estimate"], probed["trace"]["estimate"], rel_tol=1e-5)
