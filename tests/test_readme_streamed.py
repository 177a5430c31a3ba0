"""The README's "Data larger than memory" section runs as written, block by block, in README order."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks() -> list[tuple[str, str]]:
    text = README.read_text()
    start = text.index("## Data larger than memory")
    section = text[start : text.index("\n## ", start + 1)]
    return re.findall(r"```(python|bash)\n(.*?)```", section, flags=re.S)


def test_readme_streamed_data_runs(tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    ran = 0
    for kind, body in _blocks():
        if kind == "python":
            exec(compile(body, "README.md", "exec"), {"__name__": "readme"})
            continue
        for line in body.splitlines():
            argv = shlex.split(line)
            assert argv[0] == "lscape", line
            result = cli(*argv[1:], "--quiet")
            assert result.exit_code == 0, f"{line}\n{result.output}"
            ran += 1
    assert ran == 6
    probe = json.loads((tmp_path / "big/model-r000.probe.json").read_text())
    dataset = probe["config"]["evaluation"]["dataset"]
    assert dataset["stream"]["format"] == "npy-shards" and dataset["sizes"] == {
        "train": 480,
        "val": 60,
        "test": 60,
    }
    assert probe["results"]["lambda_max"]["converged"]
    pics = json.loads((tmp_path / "pics/model.probe.json").read_text())["config"]["evaluation"]["dataset"]
    assert pics["stream"]["classes"] == ["cat", "dog"] and pics["input_shape"] == [3, 32, 32]
