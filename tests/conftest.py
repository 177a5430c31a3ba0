"""Shared problems for the lscape test suite.

Everything here is tiny on purpose (scikit-learn's 8x8 digits, a few dozen samples, one or two epochs)
so the whole suite runs in well under a minute or two on a 2-core CPU.

- ``LSCAPE_DATA`` points at one session-wide directory, so the mnist-5k ``.npz`` cache is built once.
- ``cli`` runs the Typer app in-process (``typer.testing.CliRunner``; stdout and stderr are separate,
  ``result.output`` is both interleaved).
- ``error_line`` checks the error contract: exit code, exactly one ``Error:`` line, no traceback.
- ``tiny_args`` is the argv of a tiny ``lscape train`` run; ``tiny_run`` is one such run, made once.

Torch runs single-threaded unless OMP_NUM_THREADS says otherwise: these models are far too small to
gain from threads, and two spinning threads on a 2-core machine shared with another job ran the suite
3x slower. Subprocesses inherit the setting, so in-process and subprocess runs use the same kernels.
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from lscape_cli.cli import app

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before anything imports torch (lscape_cli.cli does not)


@pytest.fixture(scope="session", autouse=True)
def lscape_data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One data directory for the session (mnist-5k's cache is made once) and no debug re-raising."""
    root = tmp_path_factory.mktemp("lscape-data")
    mp = pytest.MonkeyPatch()
    mp.setenv("LSCAPE_DATA", str(root))
    mp.delenv("LSCAPE_DEBUG", raising=False)
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))  # in case torch was imported earlier
    yield root
    mp.undo()


# ---------------------------------------------------------------------------------------------- CLI


@pytest.fixture(scope="session")
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(scope="session")
def cli(runner: CliRunner) -> Callable[..., Result]:
    """``cli("train", "--model", "mlp", ...)`` -> the CliRunner result (arguments are str()-ed)."""

    def invoke(*args: Any, env: dict[str, str] | None = None) -> Result:
        return runner.invoke(app, [str(a) for a in args], env=env)

    return invoke


def _error_line(result: Result, code: int = 1, allow_stdout: bool = False) -> str:
    """The single ``Error:`` line of a failed command, after checking the whole error contract."""
    out = result.output
    assert result.exit_code == code, f"exit code {result.exit_code}, wanted {code}\n{out}"
    assert "Traceback" not in out, out
    # CliRunner reports an exception that escaped the app as exit code 1 too: insist on a clean exit.
    assert isinstance(result.exception, SystemExit), f"uncaught {result.exception!r}\n{out}"
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, f"wanted exactly one Error: line on stderr, got:\n{result.stderr}"
    if code != 2:  # our funnel (Typer's usage errors add a Usage: header): the line is all of stderr
        assert result.stderr.strip() == errors[0], result.stderr
        assert allow_stdout or result.stdout == "", result.stdout  # --json records may precede a failure
    return errors[0]


@pytest.fixture(scope="session")
def error_line() -> Callable[..., str]:
    return _error_line


TINY_TRAIN = tuple(
    shlex.split(
        "--model mlp --depth 1 --width 8 --dataset digits --train-size 64 --val-size 32 --test-size "
        "32 --batch-size 32 --epochs 2 --device cpu --quiet"
    )
)


@pytest.fixture(scope="session")
def tiny_args() -> Callable[..., list[str]]:
    """argv of a tiny ``lscape train`` into OUT; later options override earlier ones (Click: last wins)."""

    def make(out: Path, *extra: Any) -> list[str]:
        return ["train", *TINY_TRAIN, "--out", str(out), *[str(e) for e in extra]]

    return make


@pytest.fixture(scope="session")
def tiny_run(
    tmp_path_factory: pytest.TempPathFactory, cli: Callable[..., Result], tiny_args: Callable[..., list[str]]
) -> Path:
    """A run directory holding model.safetensors / model.train.json / model.trajectory.safetensors.

    Session-wide and read-only by convention: tests that damage a file copy it first (``copy_of``).
    """
    out = tmp_path_factory.mktemp("tiny") / "run"
    result = cli(*tiny_args(out, "--save-trajectory", "1"))
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture
def tiny_ckpt(tiny_run: Path) -> Path:
    return tiny_run / "model.safetensors"


@pytest.fixture
def copy_of(tmp_path: Path) -> Callable[[Path], Path]:
    """Copy a file into this test's tmp_path (so the session's files stay intact)."""

    def copy(src: Path, name: str | None = None) -> Path:
        dst = tmp_path / (name or src.name)
        shutil.copyfile(src, dst)
        return dst

    return copy


# ------------------------------------------------------------------------------------ data, models


@pytest.fixture(scope="session")
def digits(lscape_data: Path) -> Any:
    """128/64/64 digits samples, float32, CPU."""
    from lscape_cli import datasets

    return datasets.load(
        datasets.DatasetSpec("digits", train_size=128, val_size=64, test_size=64), lscape_data
    )


@pytest.fixture(scope="session")
def digits64(lscape_data: Path) -> Any:
    """The same split in float64 (for comparisons to ~1e-12)."""
    import torch

    from lscape_cli import datasets

    return datasets.load(
        datasets.DatasetSpec("digits", train_size=128, val_size=64, test_size=64),
        lscape_data,
        dtype=torch.float64,
    )


@pytest.fixture(scope="session")
def spec_for() -> Callable[..., Any]:
    """``spec_for("mlp", splits, depth=2)``: a ModelSpec sized for the splits' inputs."""
    from lscape_cli import models

    def make(name: str, splits: Any, **opts: Any) -> Any:
        return models.make_spec(
            name, {**opts, "input_shape": splits.input_shape, "num_classes": splits.num_classes}
        )

    return make


def _rebuild(path: Path) -> tuple[Any, Any]:
    """Checkpoint file -> (module with its weights, Checkpoint), using only storage + models APIs."""
    from lscape_cli import models
    from lscape_cli.models.loading import load_state_strict
    from lscape_cli.storage.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    module = models.build(models.ModelSpec.from_dict(ckpt.meta["model"], where=str(path)))
    load_state_strict(module, ckpt.state, str(path))
    return module, ckpt


@pytest.fixture(scope="session")
def rebuild() -> Callable[[Path], tuple[Any, Any]]:
    return _rebuild


def strict_json(text: str) -> Any:
    """json.loads that refuses NaN/Infinity (DESIGN: metric files hold no NaN)."""
    import json

    def refuse(token: str) -> Any:
        raise AssertionError(f"non-standard JSON constant {token} in a metric record")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="session")
def read_json() -> Callable[[Path | str], Any]:
    """Parse a metric record (a path or the text itself), refusing NaN/Infinity."""

    def read(src: Path | str) -> Any:
        return strict_json(src.read_text() if isinstance(src, Path) else src)

    return read


def bitwise_equal(a: Any, b: Any) -> bool:
    """Same dtype, shape and bytes (torch.equal alone calls -0.0 == 0.0 and NaN != NaN)."""
    import torch

    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if not torch.equal(a, b) and not (a.is_floating_point() and torch.isnan(a).any()):
        return False
    return bytes(a.contiguous().reshape(-1).view(torch.uint8).numpy()) == bytes(
        b.contiguous().reshape(-1).view(torch.uint8).numpy()
    )


@pytest.fixture(scope="session")
def same_bits() -> Callable[[Any, Any], bool]:
    return bitwise_equal


@pytest.fixture(scope="session")
def train_validator() -> Any:
    """A JSON Schema validator of ``lscape.train/1`` records (train.schema.json and what it references)."""
    import json

    import lscape_cli

    jsonschema = pytest.importorskip("jsonschema")
    from referencing import Registry, Resource

    schema_dir = Path(lscape_cli.__file__).parent / "storage" / "schemas"
    path = schema_dir / "train.schema.json"
    assert path.is_file(), f"{path} is missing (the train record's JSON Schema)"
    resources = [
        (p.name, Resource.from_contents(json.loads(p.read_text()))) for p in schema_dir.glob("*.schema.json")
    ]
    schema = json.loads(path.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, registry=Registry().with_resources(resources))


# ------------------------------------------------------------------------------------------ torchrun


@pytest.fixture(scope="session")
def torchrun() -> Callable[..., subprocess.CompletedProcess[str]]:
    """``torchrun(*lscape_args)``: ``lscape`` under torchrun with 2 CPU processes on a free port."""

    def run(*args: Any) -> subprocess.CompletedProcess[str]:
        with socket.socket() as s:  # a port no other job holds right now (fixed ports clash across runs)
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        exe = Path(sys.executable).with_name("torchrun")
        argv = [str(exe), "--nproc-per-node", "2", "--master-port", str(port), "-m", "lscape_cli"]
        return subprocess.run(
            [*argv, *[str(a) for a in args]],
            capture_output=True,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            timeout=240,
        )

    return run
