"""Every `lscape` command in the README runs, in README order, at tiny scale.

The README's bash blocks are parsed (continuation lines joined, ``for`` loops expanded, ``| jq PATH``
checked against the ``--json`` output), each command gets overrides that shrink it (Click keeps the last
value of a repeated option: digits, 64 training samples, one epoch, a few grid points) and runs in a
sandbox holding the files the README assumes (``run/model.safetensors``, ``a``/``b``/``ckpt``). Lines
that are not lscape commands are listed in ``NOT_RUN`` so a new README line cannot go untested silently.
"""

from __future__ import annotations

import glob
import json
import re
import shlex
import shutil
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOT_RUN = {  # (prefix of the line, why it is not run here)
    "make ": "Makefile targets (CI runs them itself)",
    "source ": "shell setup",
    "torchrun ": "multi-process runs: tests/test_slice.py and tests/test_probe.py (marked slow)",
    "python scripts/": "a development script",
    "pre-commit ": "tooling",
    "SCALE=": "the study scripts: tests/test_studies.py runs them at SCALE=smoke",
    "python examples/charlm/": "the language-model example: tests/test_readme_charlm.py runs it",
    "lscape train --model-def examples/charlm/": "the language-model example (tests/test_readme_charlm.py)",
    "lscape probe runs/charlm/": "the language-model example (tests/test_readme_charlm.py)",
    "lscape slice runs/charlm/": "the language-model example (tests/test_readme_charlm.py)",
    "lscape connect runs/charlm/": "the language-model example (tests/test_readme_charlm.py)",
    "lscape report runs/charlm": "the language-model example (tests/test_readme_charlm.py)",
}
TINY_DATA = "--dataset digits --train-size 64 --val-size 32 --test-size 32"
SHRINK = {
    "train": f"{TINY_DATA} --epochs 1 --eval-every 1 --device cpu --quiet",
    "probe": "--device cpu --quiet --max-iter 30",
    "slice": "--device cpu --quiet --steps 5",
    "connect": "--device cpu --quiet --points 5 --curve-epochs 1",
    "pareto": "--quiet",
    "report": "--quiet",
}


def readme_blocks() -> list[tuple[str, str]]:
    """``(language, text)`` of every bash and python block of the README, in order."""
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```(bash|python)\n(.*?)```", text, flags=re.S)


def bash_lines(block: str) -> list[str]:
    """A bash block's command lines, continuation lines joined, comments dropped, loops on one line."""
    lines: list[str] = []
    for line in block.replace("\\\n", " ").splitlines():
        line = line.split(" # ")[0].strip() if not line.lstrip().startswith("#") else ""
        if line:
            lines.append(line)
    return _join_loops(lines)


def readme_commands() -> list[str]:
    """Every command line of the README's bash blocks."""
    return [line for lang, block in readme_blocks() if lang == "bash" for line in bash_lines(block)]


def _join_loops(lines: list[str]) -> list[str]:
    """Multi-line ``for ...; do`` / body / ``done`` become one ``for ...; do body; done`` line."""
    out: list[str] = []
    while lines:
        line = lines.pop(0)
        if line.startswith("for ") and line.endswith("do"):
            body = []
            while (nxt := lines.pop(0)) != "done":
                body.append(nxt)
            line = f"{line} {'; '.join(body)}; done"
        out.append(line)
    return out


def _expand(line: str, cwd: Path) -> list[str]:
    """``for X in WORDS; do BODY; done`` -> BODY per word (globs expanded in ``cwd``); else ``[line]``."""
    m = re.fullmatch(r"for (\w+) in (.+?); do (.+); done", line)
    if m is None:
        return [line]
    var, words, body = m.groups()
    values: list[str] = []
    for w in words.split():
        values += sorted(str(Path(p).relative_to(cwd)) for p in glob.glob(str(cwd / w))) if "*" in w else [w]
    assert values, f"the loop matches nothing: {line}"
    return [body.replace(f'"${var}"', v).replace(f"${var}", v) for v in values]


def _shrink(argv: list[str]) -> list[str]:
    """Append the tiny-scale overrides for this command (restarts capped at 2, or one per shard)."""
    command = argv[1]
    extra = shlex.split(SHRINK.get(command, ""))
    if command == "train" and "--data" in argv:
        extra = [e for e in extra if e not in shlex.split(TINY_DATA)]  # the user's own data stays
    if "--restarts" in argv:
        shards = int(argv[argv.index("--shard") + 1].split("/")[1]) if "--shard" in argv else 1
        cap = max(2, shards)  # every shard keeps a restart
        extra += ["--restarts", str(min(cap, int(argv[argv.index("--restarts") + 1])))]
    if command == "probe" and "--batch-size" in argv:
        extra += ["--batch-size", "6"]  # 5 disjoint batches of a 32-sample split
    if command == "probe" and "--density" in argv:
        extra += ["--density-runs", "2", "--density-steps", "8"]
    if command == "probe" and "--matvecs" in argv:
        extra += ["--matvecs", "12"]
    return argv + extra


def _first_record(stdout: str) -> Any:
    """One record printed with --json (indented), or the first of JSON Lines (one per restart)."""
    try:
        return json.loads(stdout)
    except ValueError:
        return json.loads(stdout.splitlines()[0])


def _jq(data: Any, path: str) -> Any:
    for key in path.strip(".").split("."):
        assert isinstance(data, dict) and key in data, f"jq {path}: no {key!r}"
        data = data[key]
    return data


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory, cli, tiny_args) -> Path:
    """The files the README's examples assume, made small."""
    box = tmp_path_factory.mktemp("readme")
    assert cli(*tiny_args(box / "run", "--save-trajectory", "1")).exit_code == 0
    for name, seed in (("a", 1), ("b", 2), ("ckpt", 3)):
        assert cli(*tiny_args(box / "tmp", "--seed", seed, "--name", name)).exit_code == 0
        shutil.move(box / "tmp" / f"{name}.safetensors", box / f"{name}.safetensors")
    shutil.copytree(ROOT / "sample_checkpoints", box / "sample_checkpoints")
    return box


def test_every_readme_line_is_run_or_listed() -> None:
    for line in readme_commands():
        assert line.startswith(("lscape ", "for ")) or line.startswith(tuple(NOT_RUN)), line


def test_readme_examples_run(sandbox: Path, cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """Python blocks headed ``# NAME.py`` are written as that file, other Python blocks are run."""
    monkeypatch.chdir(sandbox)
    monkeypatch.syspath_prepend(str(sandbox))
    ran = 0
    for lang, block in readme_blocks():
        if lang == "python":
            _python_block(block, sandbox)
            continue
        for line in bash_lines(block):
            if not line.startswith(tuple(NOT_RUN)):
                ran += _run_line(line, sandbox, cli)
    assert ran >= 35


def _python_block(block: str, sandbox: Path) -> None:
    first = block.splitlines()[0]
    if re.fullmatch(r"# [\w.]+\.py", first):
        (sandbox / first[2:]).write_text(block)
    else:
        exec(compile(block, "README.md", "exec"), {"__name__": "__readme__"})  # noqa: S102


def _run_line(line: str, sandbox: Path, cli: Any) -> int:
    """Run one README line (a loop runs its body per value); the number of commands run."""
    commands = _expand(line, sandbox)
    for command in commands:
        command, _, jq = command.partition(" | jq ")
        argv = _shrink(shlex.split(command))
        result = cli(*argv[1:])
        ok = (0, 3) if "--check" in argv else (0,)  # a CI gate may fail on a tiny model
        assert result.exit_code in ok, f"{command}\n{result.output}"
        if jq:
            _jq(_first_record(result.stdout), jq.strip())
    return len(commands)


def test_the_seed_001_batches_fit_the_default_test_split() -> None:
    """`--num-batches 5 --batch-size B --split test` must fit mnist-5k's default 500 test samples."""
    from lscape_cli.datasets import REGISTRY

    line = next(c for c in readme_commands() if "--num-batches" in c)
    argv = shlex.split(line)
    batches, size = (int(argv[argv.index(o) + 1]) for o in ("--num-batches", "--batch-size"))
    assert batches * size <= REGISTRY["mnist-5k"].default_test
