"""Every `lscape train` command in the README's Training section and in `lscape train --help` runs, at
tiny scale (digits, 64 samples, 2 epochs; later options override earlier ones)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
TINY = "--dataset digits --train-size 64 --val-size 32 --test-size 32 --epochs 2 --device cpu --quiet"


def _commands(text: str, program: str) -> list[str]:
    """Shell commands starting with ``program`` (continuation lines joined, comments dropped)."""
    joined = re.sub(r"\\\n\s*", " ", text)
    return [line.strip() for line in joined.splitlines() if line.strip().startswith(program)]


def _training_section() -> str:
    text = README.read_text()
    start = text.index("### Training")
    return text[start : text.index("\n### ", start + 1)]


def _help_examples() -> list[str]:
    from typer.testing import CliRunner

    from lscape_cli.cli import app

    result = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "400", "TERMINAL_WIDTH": "400"})
    return _commands(result.stdout, "lscape train")


def _tiny(command: str, out: Path) -> list[str]:
    argv = shlex.split(command)[1:]
    extra = shlex.split(TINY) + ["--out", str(out)]
    if "--track" in argv:
        extra += ["--track-samples", "16"]
    if "--restarts" in argv and "--shard" not in argv:
        extra += ["--restarts", "2"]
    return argv + extra


README_TRAIN = _commands(_training_section(), "lscape train")


def test_the_readme_shows_every_training_option() -> None:
    text = " ".join(README_TRAIN)
    for option in (
        "--track ",
        "--track-every",
        "--track-split",
        "--track-samples",
        "--track-seed",
        "--schedule",
        "--restore-best",
        "--tol-rule",
        "--grad-tol",
        "--shard",
        "--restarts",
    ):
        assert option in text, option


@pytest.mark.parametrize("command", README_TRAIN, ids=range(len(README_TRAIN)))
def test_readme_training_command_runs(command: str, cli, tmp_path: Path) -> None:
    result = cli(*_tiny(command, tmp_path / "run"))
    assert result.exit_code == 0, f"{command}\n{result.output}"
    assert list((tmp_path / "run").glob("*.train.json"))


def test_train_help_shows_seed_003_and_its_examples_run(cli, tmp_path: Path) -> None:
    examples = _help_examples()
    assert any("--batch-size 64" in c and "--track lambda_max" in c for c in examples), examples
    assert any("--batch-size 2048" in c and "--track lambda_max" in c for c in examples), examples
    for i, command in enumerate(examples):
        result = cli(*_tiny(command, tmp_path / f"run{i}"))
        assert result.exit_code == 0, f"{command}\n{result.output}"


def test_readme_snapshot_probe_runs(cli, tiny_run: Path, tmp_path: Path) -> None:
    text = README.read_text()
    (command,) = [c for c in _commands(text, "lscape probe") if "--snapshot" in c]
    argv = [a.replace("run/", f"{tiny_run}/") for a in shlex.split(command.split("#")[0])[1:]]
    result = cli(*argv, "--out", tmp_path / "s.json", "--quiet")
    assert result.exit_code == 0, f"{command}\n{result.output}"
