"""`lscape train` end to end: files that load back, JSON records (schema-valid, JSON Lines on stdout),
byte-for-byte determinism, divergence handling, trajectories."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from lscape_cli import datasets
from lscape_cli.core.objective import evaluate
from lscape_cli.storage.checkpoint import TRAJECTORY_SCHEMA, load_checkpoint, load_trajectory, read_metadata

# The command, cut down to one epoch on 500 images.
MNIST_ARGS = shlex.split(
    "train --model mlp --depth 4 --width 48 --dataset mnist-5k --loss mse --optimizer adam --lr "
    "1e-3 --restarts 3 --epochs 1 --train-size 500 --device cpu --json"
)


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory: pytest.TempPathFactory, cli) -> tuple[Path, Any]:
    out = tmp_path_factory.mktemp("mnist") / "d4"
    result = cli(*MNIST_ARGS, "--out", out)
    assert result.exit_code == 0, result.output
    return out, result


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_mnist_run_writes_three_loadable_checkpoints(
    mnist_run: tuple[Path, Any], rebuild, same_bits, lscape_data: Path
) -> None:
    out, _ = mnist_run
    assert sorted(p.name for p in out.iterdir()) == [
        f"model-r{r:03d}.{ext}" for r in range(3) for ext in ("safetensors", "train.json")
    ]
    states = []
    for r in range(3):
        path = out / f"model-r{r:03d}.safetensors"
        module, ckpt = rebuild(path)  # metadata alone rebuilds the model; tensors load strictly
        meta = ckpt.meta
        assert meta["model"]["name"] == "mlp" and meta["model"]["config"]["depth"] == 4
        assert meta["model"]["config"]["width"] == 48 and meta["model"]["config"]["input_shape"] == [
            1,
            28,
            28,
        ]
        assert (meta["training"]["seed"], meta["training"]["restart"], meta["training"]["restarts"]) == (
            r,
            r,
            3,
        )
        assert (meta["training"]["optimizer"], meta["training"]["loss"], meta["training"]["lr"]) == (
            "adam",
            "mse",
            1e-3,
        )
        assert meta["dataset"]["sizes"] == {"train": 500, "val": 500, "test": 500}
        for k, v in module.state_dict().items():
            assert same_bits(v, ckpt.state[k]), k
        # The checkpoint's dataset description rebuilds the exact data its metrics were measured on.
        splits = datasets.load(datasets.DatasetSpec.from_dict(meta["dataset"]), lscape_data)
        module.eval()
        for split in ("train", "test"):
            loss, acc = evaluate(module, splits.x[split], splits.y[split], "mse")
            assert math.isclose(loss, meta["metrics"][f"{split}_loss"], rel_tol=1e-5), split
            assert math.isclose(acc, meta["metrics"][f"{split}_accuracy"], abs_tol=1e-6), split
        states.append(ckpt.state)
    assert not torch.equal(states[0]["head.weight"], states[1]["head.weight"])  # restarts differ


def test_mnist_run_records(mnist_run: tuple[Path, Any], read_json) -> None:
    out, result = mnist_run
    lines = result.stdout.splitlines()
    assert len(lines) == 3, result.stdout  # JSON Lines: one record per restart, nothing else on stdout
    assert result.stderr == ""  # --json is quiet on stderr
    for r, line in enumerate(lines):
        record = read_json(line)
        on_disk = read_json(out / f"model-r{r:03d}.train.json")
        assert record == on_disk
        assert record["schema"] == "lscape.train/1"
        res = record["results"]
        assert (res["restart"], res["seed"], res["stop_reason"], res["epochs"]) == (r, r, "epochs", 1)
        assert res["steps"] == 4  # 500 samples, batch 128
        ckpt = out / f"model-r{r:03d}.safetensors"
        assert res["checkpoint"] == {"path": ckpt.name, "sha256": _sha256(ckpt)}
        assert res["trajectory"] is None
        assert res["final"] == read_metadata(ckpt)["metrics"]
        assert record["config"]["model"] == read_metadata(ckpt)["model"]
        assert record["config"]["seed"] == r and record["config"]["restarts"] == 3
        assert record["warnings"] == []
    # a record that ends in an indented, newline-terminated document (DESIGN: indent=2)
    text = (out / "model-r000.train.json").read_text()
    assert text.startswith('{\n  "schema": "lscape.train/1"') and text.endswith("}\n")


def test_train_records_validate_against_the_json_schema(
    mnist_run: tuple[Path, Any], tiny_run: Path, diverged_record: dict[str, Any], read_json, train_validator
) -> None:
    validator = train_validator
    paths = [*mnist_run[0].glob("*.train.json"), *tiny_run.glob("*.train.json")]
    assert len(paths) == 4
    records = {p.name: read_json(p) for p in paths} | {"diverged": diverged_record}
    for name, rec in records.items():
        errors = sorted(validator.iter_errors(rec), key=str)
        assert not errors, f"{name}: {errors[0].message} at {list(errors[0].absolute_path)}"
    # the schema is not vacuous: a record missing its results, or with a bad stop reason, fails
    record = read_json(paths[0])
    assert not validator.is_valid({k: v for k, v in record.items() if k != "results"})
    assert not validator.is_valid({**record, "results": {**record["results"], "stop_reason": "bored"}})


@pytest.mark.slow  # two fresh processes: ~20 s (make test-slow)
def test_same_seed_gives_the_same_bytes_across_processes(tmp_path: Path, cli, tiny_args) -> None:
    """Two in-process runs and one fresh process: identical checkpoints and trajectories on CPU."""
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for out in (a, b):
        result = cli(*tiny_args(out, "--save-trajectory", "1", "--seed", "3"))
        assert result.exit_code == 0, result.output
    env = {**os.environ, "PYTHONHASHSEED": "random"}
    proc = subprocess.run(
        [sys.executable, "-m", "lscape_cli", *tiny_args(c, "--save-trajectory", "1", "--seed", "3")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    for name in ("model.safetensors", "model.trajectory.safetensors"):
        assert (a / name).read_bytes() == (b / name).read_bytes() == (c / name).read_bytes(), name
    other = tmp_path / "other"
    assert cli(*tiny_args(other, "--seed", "4")).exit_code == 0
    assert (other / "model.safetensors").read_bytes() != (a / "model.safetensors").read_bytes()


def test_human_output_goes_to_stderr(tmp_path: Path, cli, tiny_args) -> None:
    args = [a for a in tiny_args(tmp_path / "run") if a != "--quiet"]
    result = cli(*args)
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert "lscape train" in result.stderr and "stop" in result.stderr and "epochs" in result.stderr


def test_outputs_get_ordinary_permissions(tiny_run: Path) -> None:
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in tiny_run.iterdir()}
    assert len(set(modes.values())) == 1, modes  # the checkpoints are as readable as the JSON record


# ------------------------------------------------------------------------------------------ divergence

DIVERGE = shlex.split(
    "train --model linear --loss mse --lr 1e6 --batch-size full --epochs 20 --dataset digits "
    "--train-size 64 --val-size 32 --test-size 32 --device cpu --quiet"
)


@pytest.fixture(scope="module")
def diverged(tmp_path_factory: pytest.TempPathFactory, cli) -> tuple[Path, Any]:
    out = tmp_path_factory.mktemp("diverged") / "run"
    return out, cli(*DIVERGE, "--out", out, "--json")


@pytest.fixture
def diverged_record(diverged: tuple[Path, Any], read_json) -> dict[str, Any]:
    """The record of a run whose every restart diverged: printed with --json, never written."""
    return read_json(diverged[1].stdout)


def test_diverged_run_writes_nothing_and_prints_its_record(
    diverged: tuple[Path, Any], diverged_record: dict[str, Any], error_line
) -> None:
    diverged_run, result = diverged
    line = error_line(result, allow_stdout=True)  # exit 1, one line, no traceback
    record = diverged_record  # no NaN/Infinity tokens
    steps = record["results"]["steps"]
    assert line == (
        f"Error: 1 of 1 restart(s) diverged: non-finite training loss: restart 0 (step {steps}) "
        "(lower --lr or change --init; nothing was written)"
    )
    assert not diverged_run.exists()  # a failed run leaves no file and no directory behind
    res = record["results"]
    assert res["stop_reason"] == "diverged" and res["checkpoint"] is None and res["epochs"] < 20
    assert any("diverged" in w for w in record["warnings"])
    assert res["final"]["train_loss"] is None  # inf is written as null ...
    assert any(
        w.startswith("results.final.train_loss: non-finite") for w in record["warnings"]
    )  # ... and listed


def test_diverged_epoch_is_not_recorded_as_a_zero_loss(diverged_record: dict[str, Any]) -> None:
    """The epoch whose loss became non-finite must not claim a running loss (and gradient norm) of 0.0."""
    last = diverged_record["results"]["history"][-1]
    assert last["train_loss_running"] is None, last
    assert last["grad_norm"] is None or last["grad_norm"] > 0, last


MIXED = shlex.split(
    "train --model mlp --depth 1 --width 1 --no-bias --dataset digits --train-size 100 --loss "
    "mse --lr 0 --init normal:1e9 --batch-size full --epochs 2 --restarts 3 --seed 0 --device "
    "cpu --json"
)


def test_finite_restarts_are_saved_when_another_diverges(
    tmp_path: Path, cli, error_line, rebuild, read_json
) -> None:
    """N(0, 1e9^2) weights overflow float32 for seed 0 but not for seeds 1 and 2 (lr=0 keeps them there)."""
    out = tmp_path / "run"
    result = cli(*MIXED, "--out", out)
    assert error_line(result, allow_stdout=True) == (
        "Error: 1 of 3 restart(s) diverged: non-finite training loss: restart 0 (step 0) "
        "(lower --lr or change --init; the other restarts were saved)"
    )
    assert len(result.stdout.splitlines()) == 3  # every record, the diverged one included, still printed
    assert sorted(p.name for p in out.iterdir()) == [
        "model-r000.train.json",
        "model-r001.safetensors",
        "model-r001.train.json",
        "model-r002.safetensors",
        "model-r002.train.json",
    ]
    assert read_json(out / "model-r000.train.json")["results"]["stop_reason"] == "diverged"
    for r in (1, 2):
        record = read_json(out / f"model-r{r:03d}.train.json")
        assert record["results"]["stop_reason"] == "epochs"
        module, ckpt = rebuild(out / f"model-r{r:03d}.safetensors")
        assert ckpt.meta["training"]["seed"] == r
        assert all(torch.isfinite(v).all() for v in module.state_dict().values())


# ---------------------------------------------------------------------------------------- trajectories


def test_trajectory_file_holds_t_snapshots_of_every_parameter(tiny_run: Path, read_json, cli) -> None:
    ckpt = read_metadata(tiny_run / "model.safetensors")
    traj = load_trajectory(tiny_run / "model.trajectory.safetensors")
    state = load_checkpoint(tiny_run / "model.safetensors").state
    assert traj.meta["schema"] == TRAJECTORY_SCHEMA
    assert traj.meta["epochs"] == [0, 1, 2] and traj.meta["steps"] == [0, 2, 4]  # 64 samples, batch 32
    assert traj.meta["model"] == ckpt["model"]
    assert set(traj.state) == set(state)  # an MLP has no buffers: every tensor is a parameter
    for name, snaps in traj.state.items():
        assert snaps.shape == (3, *state[name].shape), name
        assert torch.equal(snaps[-1], state[name]), name
        assert not torch.equal(snaps[0], snaps[-1]), name
    entry = read_json(tiny_run / "model.train.json")["results"]["trajectory"]
    path = tiny_run / "model.trajectory.safetensors"
    assert entry == {"path": path.name, "sha256": _sha256(path), "snapshots": 3, "epochs": [0, 1, 2]}
    shown = cli("info", path, "--json")
    assert shown.exit_code == 0 and json.loads(shown.stdout)["lscape_schema"] == TRAJECTORY_SCHEMA


def test_record_command_is_the_invocation(tmp_path: Path, cli, tiny_args, read_json) -> None:
    """`command` is "the argv that produced it, starting with lscape" (docs/formats.md) -- also in-process."""
    args = tiny_args(tmp_path / "run", "--seed", "2")
    assert cli(*args).exit_code == 0
    assert read_json(tmp_path / "run" / "model.train.json")["command"] == ["lscape", *args]


@pytest.mark.parametrize("every", ["30", "0"])
def test_ctrl_c_writes_nothing_and_keeps_the_previous_run(
    every: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cli, tiny_args, error_line
) -> None:
    """A KeyboardInterrupt during epoch 2 of an --overwrite run: exit 130, the earlier run's files intact.

    With ``--resume-every 0`` the state after epoch 1 is kept, and the error says where.
    """
    from lscape_cli.core.training import engine as training

    out = tmp_path / "run"
    assert cli(*tiny_args(out, "--epochs", "1")).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real, calls = training._train_epoch, []

    def interrupt_second_epoch(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "_train_epoch", interrupt_second_epoch)
    line = error_line(cli(*tiny_args(out, "--epochs", "5", "--overwrite", "--resume-every", every)), code=130)
    state = out / "model.resume.pt"
    kept = (
        f"the state after epoch 1 is in {state} (re-run with --resume to continue)"
        if every == "0"
        else "no epoch was saved yet (run it again)"
    )
    assert line == f"Error: training interrupted: no output file was written or changed; {kept}"
    after = {p.name: p.read_bytes() for p in out.iterdir()}
    assert after.pop(state.name, None) is not None if every == "0" else state.name not in after
    assert after == before


def test_restart_of_a_batched_run_equals_the_single_run(tmp_path: Path, cli, tiny_args) -> None:
    """`--seed 3 --restarts 2` trains seed 4 as restart 1: same tensors and metrics as `--seed 4` alone."""
    assert cli(*tiny_args(tmp_path / "both", "--seed", "3", "--restarts", "2")).exit_code == 0
    assert cli(*tiny_args(tmp_path / "one", "--seed", "4")).exit_code == 0
    batched = load_checkpoint(tmp_path / "both" / "model-r001.safetensors")
    alone = load_checkpoint(tmp_path / "one" / "model.safetensors")
    assert batched.meta["training"]["seed"] == alone.meta["training"]["seed"] == 4
    assert set(batched.state) == set(alone.state)
    for k, v in alone.state.items():
        assert torch.equal(batched.state[k], v), k
    assert batched.meta["metrics"] == alone.meta["metrics"]
