"""The README's "Language models and your own loss" section runs as written, at tiny scale.

``python examples/...`` lines run the script (smaller data), ``lscape`` lines run in-process with a
tinier model (``--model-args``), fewer epochs, points and products; ``# NAME.py`` Python blocks are
written to that file. The records then show token weighting, the per-layer blocks, the GGN of a user
loss, the trust rule for a recorded user loss, and one-line errors for bad input.
"""

from __future__ import annotations

import json
import re
import runpy
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY_MODEL = '{"d_model": 8, "heads": 2, "layers": 1, "context": 8}'
SHRINK = {
    "train": ["--epochs", "2", "--batch-size", "16", "--model-args", TINY_MODEL, "--quiet"],
    "probe": ["--max-iter", "20", "--quiet"],
    "slice": ["--steps", "3", "--quiet", "--no-plot"],
    "connect": ["--points", "3", "--quiet", "--no-plot"],
    "report": ["--quiet"],
}


def _section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("## Language models and your own loss")
    return text[start : text.index("\n## ", start + 1)]


def _blocks() -> list[tuple[str, str]]:
    return re.findall(r"```(python|bash)\n(.*?)```", _section(), flags=re.S)


@pytest.fixture(scope="module")
def charlm(tmp_path_factory: pytest.TempPathFactory, cli) -> Path:
    box = tmp_path_factory.mktemp("charlm")
    (box / "examples").symlink_to(ROOT / "examples")
    mp = pytest.MonkeyPatch()
    mp.chdir(box)
    ran = 0
    try:
        for kind, body in _blocks():
            first = body.splitlines()[0]
            if kind == "python" and re.fullmatch(r"# [\w/]+\.py", first):
                (box / first[2:]).write_text(body)
                continue
            if kind == "python":
                continue  # the API block runs in tests/test_readme.py with the other Python blocks
            for line in filter(None, body.splitlines()):
                argv = shlex.split(line)
                if argv[0] == "python":
                    mp.setattr(sys, "argv", [argv[1], *argv[2:], "--context", "8", "--max-sequences", "40"])
                    runpy.run_path(argv[1], run_name="__main__")
                    continue
                result = cli(*argv[1:], *SHRINK[argv[1]])
                assert result.exit_code == 0, f"{line}\n{result.output}"
                ran += 1
    finally:
        mp.undo()
    assert ran == 7
    return box / "runs" / "charlm"


def test_the_example_trains_on_tokens_with_padding_left_out(charlm: Path) -> None:
    data = np.load(charlm / "text.npz")
    assert data["x"].shape == data["y"].shape == (40, 8) and (data["y"] == -100).any()
    rec = json.loads((charlm / "model-r000.train.json").read_text())
    definition = rec["config"]["training"]["loss_definition"]
    assert definition["kind"] == "ce" and definition["ignore_index"] == -100
    assert "tokens" in definition["units"]
    assert rec["results"]["history"][-1]["tracked"]["lambda_max"]["converged"] in (True, False)


def test_the_probes_record_blocks_attention_and_units(charlm: Path) -> None:
    probe = json.loads((charlm / "model-r000.probe.json").read_text())
    res = probe["results"]
    blocks = [b["block"] for b in res["per_layer"]["blocks"]]
    assert blocks == [
        "embed", "pos", "blocks.layers.0.self_attn", "blocks.layers.0.mlp", "blocks.layers.0.norm1",
        "blocks.layers.0.norm2", "norm", "head",
    ]  # fmt: skip
    traces = sum(b["trace"]["estimate"] for b in res["per_layer"]["blocks"])
    assert traces == pytest.approx(res["trace"]["estimate"], rel=0.5)  # block traces add up (estimates)
    assert res["hvp"]["attention_backend"] == "math"
    tokens = int((np.load(charlm / "text.npz")["y"] != -100).sum())
    assert probe["config"]["evaluation"]["num_units"] < tokens  # the train split's tokens, padding left out
    ggn = json.loads((charlm / "model-r000.ggn.probe.json").read_text())["results"]
    assert ggn["curvature"]["kind"] == "ggn" and ggn["lambda_max"]["estimate"] > 0
    html = (charlm / "report.html").read_text()
    assert "Per-layer curvature" in html and "blocks.layers.0.self_attn" in html


def test_a_user_loss_is_recorded_and_imported_only_when_trusted(charlm: Path, cli, tmp_path: Path) -> None:
    mine = json.loads((charlm / "model-r000.my-loss.probe.json").read_text())
    assert mine["results"]["curvature"]["kind"] == "ggn" and mine["results"]["lambda_max"]["estimate"] > 0
    assert mine["config"]["evaluation"]["loss_definition"]["definition"]["source"] == "my_loss.py:sequence_ce"
    loss_file = charlm.parent.parent / "my_loss.py"
    data = charlm / "text.npz"
    out = tmp_path / "u"
    model = str(ROOT / "examples/charlm/model.py") + ":build"
    args = ["train", "--model-def", model, "--model-args", '{"d_model": 8, "layers": 1, "context": 8}']
    args += [
        "--data",
        str(data),
        "--loss-def",
        f"{loss_file}:sequence_ce",
        "--epochs",
        "1",
        "--out",
        str(out),
    ]
    assert cli(*args, "--quiet").exit_code == 0
    rec = json.loads((out / "model.train.json").read_text())
    definition = rec["config"]["training"]["loss_definition"]["definition"]
    assert len(definition["sha256"]) == 64 and definition["file"] == str(loss_file.resolve())
    ckpt = str(out / "model.safetensors")
    refused = cli("probe", ckpt, "--model-def", model, "--quiet")
    assert refused.exit_code == 1 and "--loss-def" in refused.output
    trusted = cli(
        "probe",
        ckpt,
        "--model-def",
        model,
        "--trust-model-def",
        "--curvature",
        "ggn",
        "--max-iter",
        "20",
        "--json",
    )
    assert trusted.exit_code == 0, trusted.output
    got = json.loads(trusted.stdout)
    assert got["config"]["evaluation"]["loss_definition"]["kind"] == "user"
    fisher = cli("probe", ckpt, "--model-def", model, "--trust-model-def", "--curvature", "fisher", "--quiet")
    assert fisher.exit_code == 1 and "predictive distribution" in fisher.output


def test_bad_sequence_input_is_one_error_line(charlm: Path, cli, tmp_path: Path, error_line) -> None:
    model = str(ROOT / "examples/charlm/model.py") + ":build"
    base = [
        "train",
        "--model-def",
        model,
        "--model-args",
        TINY_MODEL,
        "--epochs",
        "1",
        "--out",
        str(tmp_path / "o"),
    ]
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((8, 8), np.int64), y=np.zeros((8, 8, 2), np.int64))
    line = error_line(cli(*base, "--data", str(bad)))
    assert "y has shape (8, 8, 2)" in line and "(8, T) token targets" in line
    (tmp_path / "vec.py").write_text("def loss(z, y):\n    return z.sum((1, 2))\n")
    line = error_line(
        cli(*base, "--data", str(charlm / "text.npz"), "--loss-def", f"{tmp_path / 'vec.py'}:loss")
    )
    assert "not a scalar tensor" in line and "--loss-def" in line
    line = error_line(cli(*base, "--data", str(charlm / "text.npz"), "--output", "logits"))
    assert "no tensor 'logits'" in line and "--output" in line
