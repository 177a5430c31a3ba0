"""Every command answers --help with an example, and help never imports torch."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main

import lscape_cli.cli
from lscape_cli import __version__
from lscape_cli.cli import app

COMMANDS = sorted(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


def test_the_app_has_its_commands() -> None:
    assert {"train", "info"} <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_command_help_shows_an_example(command: str, cli) -> None:
    result = cli(command, "--help")
    assert result.exit_code == 0, result.output
    assert "Example" in result.stdout, result.stdout
    assert f"lscape {command}" in result.stdout  # the example is a real invocation of this command


def test_root_help_and_version(cli) -> None:
    result = cli("--help")
    assert result.exit_code == 0 and "Example" in result.stdout, result.output
    assert all(c in result.stdout for c in COMMANDS)
    version = cli("--version")
    assert version.exit_code == 0 and version.stdout.strip() == f"lscape {__version__}"


def _imported_modules(*args: str) -> tuple[set[str], subprocess.CompletedProcess[str]]:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", *args], capture_output=True, text=True, timeout=60
    )
    names = {
        line.rsplit("|", 1)[-1].strip()
        for line in proc.stderr.splitlines()
        if line.startswith("import time:")
    }
    return names, proc


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["info", "--help"]], ids=" ".join)
def test_help_does_not_import_torch(argv: list[str]) -> None:
    names, proc = _imported_modules("-m", "lscape_cli", *argv)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Example" in proc.stdout
    assert "lscape_cli.cli" in names  # the import log is being read correctly
    heavy = sorted(n for n in names if n.split(".")[0] in ("torch", "torchvision", "numpy", "safetensors"))
    assert not heavy, f"--help imported {heavy[:5]}"


def test_importing_the_cli_does_not_import_torch() -> None:
    code = "import sys; import lscape_cli.cli; print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


CLI_DIR = Path(lscape_cli.cli.__file__).parent
NUMERICAL = re.compile(r"^\s*(import|from)\s+(torch|numpy|scipy)\b", re.M)
SETUP_ONLY = {"options.py"}  # --threads sets torch's thread pool; no numerics


@pytest.mark.parametrize("module", sorted(p.name for p in CLI_DIR.glob("*.py")))
def test_cli_modules_are_thin_and_hold_no_numerical_code(module: str) -> None:
    """Commands assemble options into core calls: a few hundred lines at most, no tensor library imported."""
    text = (CLI_DIR / module).read_text()
    assert len(text.splitlines()) <= 250, f"{module}: move logic into core/ or storage/"
    if module not in SETUP_ONLY:
        assert not NUMERICAL.search(text), f"{module} imports a numerical library; that code belongs in core/"


def _numeric_options() -> list[tuple[str, str, type, object]]:
    """(command, flag, int or float, the option) for every numeric option of every command."""
    found = []
    for name, command in sorted(typer.main.get_command(app).commands.items()):  # type: ignore[attr-defined]
        for param in command.params:
            annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
            kinds = set(getattr(annotation, "__args__", (annotation,))) & {int, float}
            if kinds and param.opts[0].startswith("--"):
                found.append((name, param.opts[0], kinds.pop(), param))
    return found


def test_the_numeric_options_are_found() -> None:
    flags = {(c, f) for c, f, _, _ in _numeric_options()}
    assert {
        ("train", "--lr"),
        ("train", "--grad-tol"),
        ("probe", "--fisher-samples"),
        ("slice", "--steps"),
    } <= flags
    assert len(flags) >= 60


NUMERIC = _numeric_options()


@pytest.mark.parametrize(
    ("command", "flag", "kind", "option"), NUMERIC, ids=[f"{c} {f}" for c, f, _, _ in NUMERIC]
)
def test_every_numeric_option_has_its_domain_at_the_cli(command: str, flag: str, kind: type, option) -> None:
    """A count has a least value (Typer's min=), a real number the finite-range callback of options.domain."""
    if kind is int:
        assert option.min is not None, f"lscape {command} {flag}: give the count a min= (and max= if bounded)"
    else:
        check = getattr(option.callback, "__qualname__", "")
        assert check == "domain.<locals>.check", (
            f"lscape {command} {flag}: give it callback=options.domain(...)"
        )
