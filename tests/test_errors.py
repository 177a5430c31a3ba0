"""Bad input: one ``Error: what: where (fix)`` line on stderr, exit 1 (2 for Typer usage errors), no
traceback, and nothing written or overwritten."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from lscape_cli.errors import LscapeError
from lscape_cli.storage.checkpoint import load_checkpoint, read_metadata, read_raw_metadata

NOT_ST_FIX = "(pass a .safetensors checkpoint written by `lscape train` or safetensors.save_file)"
TRUNCATED = "truncated safetensors file: {p} (the file is incomplete; re-create or re-copy it)"


def _header_end(data: bytes) -> int:
    return 8 + int.from_bytes(data[:8], "little")


# kind -> (make the file from a real checkpoint's bytes, expected error line without "Error: ")
BAD_FILES: dict[str, tuple[Callable[[Path, bytes], None], str]] = {
    "missing": (lambda p, d: None, "checkpoint not found: {p} (check the path)"),
    "directory": (lambda p, d: p.mkdir(), "checkpoint is not a file: {p} (pass a file, not a directory)"),
    "empty": (lambda p, d: p.write_bytes(b""), "not a safetensors file: {p} (0 bytes) " + NOT_ST_FIX),
    "random-bytes": (
        lambda p, d: p.write_bytes(np.random.default_rng(0).bytes(1000)),
        "not a safetensors file: {p} (1000 bytes) " + NOT_ST_FIX,
    ),
    "text": (
        lambda p, d: p.write_text("model weights, honest\n" * 3),
        "not a safetensors file: {p} (66 bytes) " + NOT_ST_FIX,
    ),
    "cut-in-header": (lambda p, d: p.write_bytes(d[: _header_end(d) // 2]), TRUNCATED),
    "cut-in-data": (lambda p, d: p.write_bytes(d[: (_header_end(d) + len(d)) // 2]), TRUNCATED),
    "last-byte-missing": (lambda p, d: p.write_bytes(d[:-1]), TRUNCATED),
}


@pytest.fixture(params=list(BAD_FILES))
def bad_file(request: pytest.FixtureRequest, tiny_ckpt: Path, tmp_path: Path) -> tuple[Path, str]:
    make, expected = BAD_FILES[request.param]
    path = tmp_path / "bad.safetensors"
    make(path, tiny_ckpt.read_bytes())
    return path, expected.format(p=path)


def test_info_rejects_a_bad_file_in_one_line(bad_file: tuple[Path, str], cli, error_line) -> None:
    path, expected = bad_file
    before = path.read_bytes() if path.is_file() else None
    assert error_line(cli("info", path)) == f"Error: {expected}"
    assert (path.read_bytes() if path.is_file() else None) == before


@pytest.mark.parametrize("reader", [read_raw_metadata, read_metadata, load_checkpoint])
def test_storage_readers_raise_the_same_error(bad_file: tuple[Path, str], reader) -> None:
    path, expected = bad_file
    with pytest.raises(LscapeError) as info:
        reader(path)
    assert info.value.line() == expected


def test_info_on_a_good_checkpoint(tiny_ckpt: Path, cli) -> None:
    result = cli("info", tiny_ckpt, "--json")
    assert result.exit_code == 0, result.output
    meta = read_metadata(tiny_ckpt)
    shown = __import__("json").loads(result.stdout)
    assert shown["lscape_schema"] == meta["schema"]
    assert {k: shown[k] for k in ("model", "dataset", "training", "metrics")} == {
        k: meta[k] for k in ("model", "dataset", "training", "metrics")
    }
    human = cli("info", tiny_ckpt)
    assert human.exit_code == 0 and human.stdout == "", human.output  # human output goes to stderr
    assert "lscape.checkpoint/1" in human.stderr and '"name": "mlp"' in human.stderr


def test_info_on_a_plain_safetensors_file_says_so(tmp_path: Path, cli) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    result = cli("info", path)
    assert result.exit_code == 0, result.output
    assert "without lscape metadata" in result.stderr


def test_info_without_an_argument_is_a_usage_error(cli, error_line) -> None:
    assert error_line(cli("info"), code=2) == "Error: Missing argument 'checkpoint'."


# ------------------------------------------------------------------------------------ lscape train

DATASETS = "digits, mnist-5k, mnist, fashion-mnist, cifar10, synthetic, torchvision:CLASS, or --data FILE"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--optimizer", "foo"], "unknown optimizer 'foo': --optimizer (choose one of: sgd, adam, adamw)"),
        (
            ["--loss", "foo"],
            "unknown loss 'foo': --loss (choose one of: ce, mse, bce, e.g. ce:label_smoothing=0.1)",
        ),
        (["--model", "foo"], "unknown model 'foo': --model (choose one of: mlp, cnn, resnet, linear)"),
        (["--dataset", "foo"], f"unknown dataset 'foo': --dataset (choose one of: {DATASETS})"),
        (
            ["--activation", "foo"],
            "unknown activation 'foo': --activation (choose one of: relu, tanh, gelu, sigmoid, leaky_relu)",
        ),
        (["--normalization", "foo"], "unknown normalization 'foo': --normalization (use unit or standard)"),
        (["--dtype", "float16"], "unknown dtype 'float16': --dtype (use float32 or float64)"),
        (["--device", "tpu"], "unknown device 'tpu': --device (use auto, cpu, cuda or cuda:N)"),
        (
            ["--init", "normal:abc"],
            "invalid init 'normal:abc': --init (use 'default' or 'normal:STD', e.g. normal:1)",
        ),
        (
            ["--init", "uniform"],
            "invalid init 'uniform': --init (use 'default' or 'normal:STD', e.g. normal:1)",
        ),
        (["--batch-size", "0"], "invalid batch size '0': --batch-size (give a positive integer or 'full')"),
        (
            ["--batch-size", "half"],
            "invalid batch size 'half': --batch-size (give a positive integer or 'full')",
        ),
        (
            ["--model", "cnn"],
            "model 'cnn' has no option(s) depth: --model "
            "(its options are: activation, bias, hidden, input_shape, num_classes, width)",
        ),
        (
            ["--train-size", "5000"],
            "split sizes do not fit dataset 'digits' (1797 samples): train=5000 val=32 test=32 "
            "(lower --train-size/--val-size/--test-size)",
        ),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else "",
)
def test_train_rejects_a_bad_value(
    args: list[str], expected: str, tmp_path: Path, cli, tiny_args, error_line
) -> None:
    out = tmp_path / "run"
    assert error_line(cli(*tiny_args(out, *args))) == f"Error: {expected}"
    assert not out.exists()


def test_train_rejects_an_image_model_on_flat_data(tmp_path: Path, cli, error_line) -> None:
    out = tmp_path / "run"
    result = cli(
        "train", "--model", "cnn", "--dataset", "synthetic", "--epochs", "1", "--out", out, "--quiet"
    )
    assert error_line(result) == (
        "Error: model 'cnn' needs image inputs (C, H, W): --model (use an image dataset "
        "(digits, mnist-5k, mnist, ...) or the mlp/linear model)"
    )
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_train_on_cuda_without_cuda(tmp_path: Path, cli, tiny_args, error_line) -> None:
    out = tmp_path / "run"
    assert (
        error_line(cli(*tiny_args(out, "--device", "cuda")))
        == "Error: CUDA is not available on this machine: --device cuda (use --device cpu or auto)"
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--epochs", "0"], "Error: Invalid value for '--epochs': "),
        (["--restarts", "0"], "Error: Invalid value for '--restarts': "),
        (["--save-trajectory", "0"], "Error: Invalid value for '--save-trajectory': "),
        (["--epochs", "abc"], "Error: Invalid value for '--epochs': "),
        (["--bogus"], "Error: No such option: --bogus"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else "",
)
def test_typer_usage_errors_exit_2(
    args: list[str], expected: str, tmp_path: Path, cli, tiny_args, error_line
) -> None:
    out = tmp_path / "run"
    assert error_line(cli(*tiny_args(out, *args)), code=2).startswith(expected)
    assert not out.exists()


def test_output_parents_are_created(tmp_path: Path, cli, tiny_args) -> None:
    """`--out a/b/run` makes the missing directories, as `mkdir -p` users expect."""
    out = tmp_path / "missing" / "deeper" / "run"
    assert cli(*tiny_args(out)).exit_code == 0
    assert sorted(p.name for p in out.iterdir()) == ["model.safetensors", "model.train.json"]


def test_output_that_is_a_file(tmp_path: Path, cli, tiny_args, error_line) -> None:
    out = tmp_path / "run"
    out.write_text("keep me")
    assert (
        error_line(cli(*tiny_args(out)))
        == f"Error: --out exists and is not a directory: {out} (choose a directory path)"
    )
    assert out.read_text() == "keep me"


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_existing_output_is_not_overwritten(
    tiny_run: Path, tmp_path: Path, cli, tiny_args, error_line
) -> None:
    out = tmp_path / "run"
    shutil.copytree(tiny_run, out)
    before = _snapshot(out)
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    expected = (
        f"Error: output exists: {out / 'model.safetensors'} and 1 more "
        "(pass --overwrite to replace, or choose another --out/--name)"
    )
    assert error_line(cli(*tiny_args(out, "--seed", "5"))) == expected
    with_traj = error_line(cli(*tiny_args(out, "--seed", "5", "--save-trajectory", "1")))
    assert with_traj == expected.replace("and 1 more", "and 2 more")
    assert _snapshot(out) == before
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == mtimes


def test_one_clashing_restart_blocks_the_whole_run(tmp_path: Path, cli, tiny_args, error_line) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "model-r001.train.json").write_text("{}")
    assert error_line(cli(*tiny_args(out, "--restarts", "3"))) == (
        f"Error: output exists: {out / 'model-r001.train.json'} "
        "(pass --overwrite to replace, or choose another --out/--name)"
    )
    assert sorted(p.name for p in out.iterdir()) == ["model-r001.train.json"]


def test_overwrite_replaces_the_outputs(tiny_run: Path, tmp_path: Path, cli, tiny_args) -> None:
    out = tmp_path / "run"
    shutil.copytree(tiny_run, out)
    old = (out / "model.safetensors").read_bytes()
    result = cli(*tiny_args(out, "--seed", "5", "--overwrite", "--save-trajectory", "1"))
    assert result.exit_code == 0, result.output
    assert (out / "model.safetensors").read_bytes() != old
    assert read_metadata(out / "model.safetensors")["training"]["seed"] == 5
    assert read_metadata(out / "model.trajectory.safetensors", "lscape.trajectory/1")["training"]["seed"] == 5
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "model.safetensors",
        "model.train.json",
        "model.trajectory.safetensors",
    ]


def test_unexpected_failures_are_one_line_too(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cli, tiny_args, error_line
) -> None:
    from lscape_cli.core.training import engine as training

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("kaboom")

    monkeypatch.setattr(training, "train_restarts", broken)
    out = tmp_path / "run"
    assert (
        error_line(cli(*tiny_args(out)))
        == "Error: RuntimeError: kaboom (set LSCAPE_DEBUG=1 for the traceback)"
    )
    assert not out.exists()
    debug = cli(*tiny_args(out), env={"LSCAPE_DEBUG": "1"})
    assert isinstance(debug.exception, RuntimeError) and str(debug.exception) == "kaboom"


def test_lscape_debug_re_raises_lscape_errors(tmp_path: Path, cli, tiny_args) -> None:
    result = cli(*tiny_args(tmp_path / "run", "--optimizer", "foo"), env={"LSCAPE_DEBUG": "1"})
    assert isinstance(result.exception, LscapeError)
    assert result.exception.line() == "unknown optimizer 'foo': --optimizer (choose one of: sgd, adam, adamw)"
