"""The README's "Your own model and data" section is a promise: run it, block by block, as written.

Python blocks whose first line is ``# NAME.py`` are written to that file; other Python blocks run; every
``lscape ...`` line of a bash block runs in-process. All in one scratch directory, in README order.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _section() -> str:
    text = README.read_text()
    start = text.index("## Your own model and data")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def _blocks() -> list[tuple[str, str]]:
    return re.findall(r"```(python|bash)\n(.*?)```", _section(), flags=re.S)


def test_the_section_has_what_the_issue_promises() -> None:
    commands = [line for kind, body in _blocks() if kind == "bash" for line in body.splitlines()]
    assert (
        "lscape probe my.safetensors --model-def my_model.py:build --data my_data.npz --lambda-max"
        in commands
    )
    assert any(c.startswith("lscape connect") and "--align weights" in c for c in commands)
    assert any("torchvision:resnet18" in c for c in commands)
    assert any(c.startswith("lscape train") and "--loss mse" in c and "my_targets.npz" in c for c in commands)


def test_readme_your_own_model_runs(tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    ran = 0
    try:
        for kind, body in _blocks():
            first = body.splitlines()[0]
            if kind == "python" and re.fullmatch(r"# [\w/]+\.py", first):
                (tmp_path / first[2:]).write_text(body)
            elif kind == "python":
                exec(compile(body, "README.md", "exec"), {"__name__": "readme"})
            else:
                for line in body.splitlines():
                    if not line.strip() or line.startswith("#"):
                        continue
                    argv = shlex.split(line)
                    assert argv[0] == "lscape", line
                    result = cli(*argv[1:], "--quiet")
                    assert result.exit_code == 0, f"{line}\n{result.output}"
                    ran += 1
    finally:
        sys.modules.pop("my_model", None)
    assert ran == 10
    assert (tmp_path / "my.probe.json").is_file()
    assert (tmp_path / "mine/model-r000--model-r001.connect.json").is_file()
    _regression_records_have_no_accuracy(tmp_path / "reg")


def _regression_records_have_no_accuracy(run: Path) -> None:
    """The regression example: every record says so, has null accuracies and no warnings about them."""
    names = ["model-r000.train.json", "model-r000.probe.json", "model-r000.slice.json"]
    names.append("model-r000--model-r001.connect.json")
    for name in names:
        rec = json.loads((run / name).read_text())
        config = rec["config"]
        dataset = config.get("dataset") or config["evaluation"]["dataset"]
        assert dataset["task"] == "regression", name
        assert rec["warnings"] == [], (name, rec["warnings"])
    probe = json.loads((run / "model-r000.probe.json").read_text())["results"]
    assert probe["loss"]["accuracy"] is None and probe["lambda_max"]["converged"]
