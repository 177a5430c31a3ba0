"""The Python API: its docstring examples run, and it gives the numbers the commands write."""

from __future__ import annotations

import doctest
import sys
from pathlib import Path

import numpy as np
import torch

from lscape_cli import api


def test_every_docstring_example_runs() -> None:
    result = doctest.testmod(sys.modules["lscape_cli.api"], optionflags=doctest.ELLIPSIS)
    names = [n for n in ("probe", "slice", "connect", "train") if ">>>" in (getattr(api, n).__doc__ or "")]
    assert names == ["probe", "slice", "connect", "train"]
    assert result.attempted >= 20 and result.failed == 0, result


def test_api_probe_and_connect_equal_the_commands(tmp_path: Path, cli, read_json) -> None:
    from lscape_cli.models.loading import load_model
    from lscape_cli.models.user import UserInputs

    model_file = tmp_path / "m.py"
    model_file.write_text(
        "from torch import nn\n\ndef build(width: int = 6):\n"
        "    return nn.Sequential(nn.Linear(5, width), nn.GELU(), nn.Linear(width, 3))\n"
    )
    rng = np.random.default_rng(0)
    data = tmp_path / "d.npz"
    np.savez(data, x=rng.standard_normal((60, 5)).astype(np.float32), y=np.arange(60) % 3)
    run = tmp_path / "run"
    train = ("--model-def", f"{model_file}:build", "--data", data, "--restarts", "2", "--epochs", "2")
    assert cli("train", *train, "--out", run, "--device", "cpu", "--quiet").exit_code == 0
    a, b = run / "model-r000.safetensors", run / "model-r001.safetensors"
    flags = ("--lambda-max", "--trace", "--device", "cpu", "--quiet", "--trust-model-def")
    assert cli("probe", a, *flags).exit_code == 0
    from_cli = read_json(run / "model-r000.probe.json")["results"]
    trusted = UserInputs(trust_model_def=True)
    ma, mb = (load_model(p, user=trusted).module for p in (a, b))
    from_api = api.probe(ma, data, lambda_max=True, trace=True)
    for key in ("loss", "lambda_max", "trace"):
        assert from_api[key] == from_cli[key], key
    connect = ("--points", "5", "--no-plot", "--device", "cpu", "--quiet", "--trust-model-def")
    assert cli("connect", a, b, *connect, "--align", "weights").exit_code == 0
    record = read_json(run / "model-r000--model-r001.connect.json")["results"]
    splits = api.splits_of(data, ma)
    got = api.connect(ma, mb, {s: splits[s] for s in ("train", "test")}, points=5, align="weights")
    for path in ("linear", "aligned"):
        assert got[path]["train"]["loss"] == record[path]["train"]["loss"]
        assert got[path]["barriers"] == record[path]["barriers"]


def test_api_train_leaves_the_model_alone() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.randn(32, 4), torch.arange(32) % 2
    runs = api.train(model, {"train": (x, y), "test": (x[:8], y[:8])}, epochs=2, batch_size=8, seeds=(0, 1))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert len(runs) == 2 and runs[0].history[0]["train_loss"] != runs[1].history[0]["train_loss"]
    assert set(runs[0].final) >= {"train_loss", "test_loss", "test_accuracy"}


def test_api_and_command_share_the_default_measurements_and_choice_checks() -> None:
    import dataclasses

    import pytest

    from lscape_cli.core.probe.engine import DEFAULT_MEASUREMENTS, ProbeRequest
    from lscape_cli.errors import LscapeError

    req = ProbeRequest().with_defaults()
    on = {f.name for f in dataclasses.fields(req) if getattr(req, f.name) is True}
    assert on == set(DEFAULT_MEASUREMENTS)
    asked = ProbeRequest(sharpness_eps=(0.05,))
    assert asked.with_defaults() == asked  # a flatness measure alone is a request: no defaults added
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
    x, y = torch.randn(30, 4), torch.arange(30) % 3
    res = api.probe(model, (x, y), trace_matvecs=9)
    assert set(DEFAULT_MEASUREMENTS) <= set(res)  # what `lscape probe` with no flag measures
    with pytest.raises(LscapeError, match="--trace-method"):
        api.probe(model, (x, y), trace=True, trace_method="hutch")
