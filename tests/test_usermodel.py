"""Your own model and data: --model-def / torchvision builders, --data files, from train to connect.

Models are written into each test's directory as plain Python files, as a user would; data are small
generated tensor files. Every command runs on CPU in a second or two.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

MLP_LN = '''
import torch
from torch import nn


def build(in_features: int = 8, width: int = 8, num_classes: int = 3) -> nn.Module:
    """An MLP with LayerNorm and GELU."""
    return nn.Sequential(
        nn.Linear(in_features, width),
        nn.LayerNorm(width),
        nn.GELU(),
        nn.Linear(width, width),
        nn.GELU(),
        nn.Linear(width, num_classes),
    )
'''

SEQ = '''
import torch
from torch import nn


class SeqNet(nn.Module):
    """A 1D-conv sequence classifier: (N, channels, time) -> (N, classes)."""

    def __init__(self, channels: int, width: int, num_classes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(channels, width, 3, padding=1)
        self.conv2 = nn.Conv1d(width, width, 3, padding=1)
        self.act = nn.ReLU()
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.conv2(self.act(self.conv1(x))))
        return self.head(h.mean(dim=2))


def build(channels: int = 2, width: int = 6, num_classes: int = 3) -> nn.Module:
    return SeqNet(channels, width, num_classes)
'''


def write_model(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


def write_data(path: Path, shape: tuple[int, ...], n: int = 48, classes: int = 3, seed: int = 0) -> Path:
    """x ~ N(0, 1) of ``(n, *shape)``, y from the sign pattern of two features (all classes present)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, *shape)).astype(np.float32)
    flat = x.reshape(n, -1)
    y = ((flat[:, 0] > 0).astype(np.int64) + (flat[:, 1] > 0.5)) % classes
    y[:classes] = np.arange(classes)
    np.savez(path, x=x, y=y)
    return path


def _ok(result: Any) -> None:
    assert result.exit_code == 0, result.output


CASES = {
    "mlp-layernorm-gelu": ("mlp_ln.py", MLP_LN, (8,)),
    "conv1d-sequence": ("seq.py", SEQ, (2, 12)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_train_probe_slice_connect(case: str, tmp_path: Path, cli, read_json) -> None:
    fname, text, shape = CASES[case]
    model = write_model(tmp_path, fname, text)
    data = write_data(tmp_path / "data.npz", shape)
    source = f"{model}:build"
    run = tmp_path / "run"
    common = ("--device", "cpu", "--quiet")
    _ok(
        cli(
            "train", "--model-def", source, "--data", data, "--epochs", "2", "--batch-size", "16",
            "--restarts", "2", "--out", run, *common,
        )
    )  # fmt: skip
    a, b = run / "model-r000.safetensors", run / "model-r001.safetensors"
    rec = read_json(run / "model-r000.train.json")
    model_meta = rec["config"]["model"]
    assert model_meta["name"] == "user"
    assert model_meta["config"]["source"] == source
    assert model_meta["config"]["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    assert rec["config"]["dataset"]["sha256"] == hashlib.sha256(data.read_bytes()).hexdigest()
    assert rec["config"]["dataset"]["sizes"] == {"train": 40, "val": 4, "test": 4}
    # each restart starts from the factory's own initialisation under its seed: different weights
    assert rec["results"]["final"] != read_json(run / "model-r001.train.json")["results"]["final"]
    _ok(cli("probe", a, "--model-def", source, "--lambda-max", "--trace", *common))
    probe = read_json(run / "model-r000.probe.json")
    assert probe["results"]["lambda_max"]["converged"]
    assert probe["config"]["model"]["config"]["source"] == source
    _ok(cli("slice", a, "--trust-model-def", "--dims", "1", "--steps", "3", "--no-plot", *common))
    assert read_json(run / "model-r000.slice.json")["schema"] == "lscape.slice/1"
    _ok(cli("connect", a, b, "--trust-model-def", "--points", "3", "--no-plot", *common))
    path = read_json(run / "model-r000--model-r001.connect.json")["results"]["linear"]
    assert len(path["train"]["loss"]) == 3
    from lscape_cli.storage.schemas import validate

    for name, kind in (
        ("model-r000.train.json", "train"),
        ("model-r000.probe.json", "probe"),
        ("model-r000.slice.json", "slice"),
        ("model-r000--model-r001.connect.json", "connect"),
    ):
        validate(read_json(run / name), f"{kind}.schema.json")
    # the report names the model by its source file and function, the data by its file (never "user" or
    # "file"), and lists the command lines in the order they ran, so they replay the study
    _ok(cli("report", run, "--out", tmp_path / "report.html", "--quiet"))
    with open(tmp_path / "report-tables" / "settings.csv", newline="") as fh:
        settings = list(csv.DictReader(fh))
    assert {(row["model"], row["dataset"]) for row in settings} == {(f"{fname}:build", "data.npz")}
    md = (tmp_path / "report.md").read_text()
    ran = [md.index(f"`lscape {command} ") for command in ("train", "probe", "slice", "connect")]
    assert ran == sorted(ran), md[md.index("in the order they ran") :]


@pytest.mark.slow  # 25 s: an 11M-parameter model through train, probe, slice and connect
# (the cheap torchvision checks, the trust rule and the traced permutations of resnet18, stay in CI)
def test_torchvision_resnet18(tmp_path: Path, cli, read_json) -> None:
    data = write_data(tmp_path / "images.npz", (3, 8, 8), n=24, classes=10)
    run, common = tmp_path / "run", ("--device", "cpu", "--quiet")
    args = ("--model", "torchvision:resnet18", "--model-args", '{"num_classes": 10}', "--data", data)
    _ok(cli("train", *args, "--epochs", "1", "--batch-size", "10", "--restarts", "2", "--out", run, *common))
    a, b = run / "model-r000.safetensors", run / "model-r001.safetensors"
    assert read_json(run / "model-r000.train.json")["config"]["model"]["name"] == "torchvision"
    _ok(cli("probe", a, "--lambda-max", "--max-iter", "2", *common))  # library code: no flag needed
    assert read_json(run / "model-r000.probe.json")["results"]["lambda_max"]["estimate"] > 0
    _ok(cli("slice", a, "--dims", "1", "--steps", "3", "--no-plot", *common))
    _ok(cli("connect", a, b, "--points", "3", "--no-plot", *common))


def test_plain_safetensors_with_model_def_and_data(tmp_path: Path, cli, read_json) -> None:
    """The README's promise: a state dict saved elsewhere, a factory file and a data file."""
    from safetensors.torch import save_file

    model = write_model(tmp_path, "my_model.py", MLP_LN)
    data = write_data(tmp_path / "my_data.npz", (8,))
    torch.manual_seed(0)
    namespace: dict[str, Any] = {}
    exec(MLP_LN, namespace)
    save_file(namespace["build"]().state_dict(), tmp_path / "my.safetensors")
    result = cli(
        "probe", tmp_path / "my.safetensors", "--model-def", f"{model}:build", "--data", data,
        "--lambda-max", "--device", "cpu", "--quiet",
    )  # fmt: skip
    _ok(result)
    rec = read_json(tmp_path / "my.probe.json")
    assert rec["config"]["model"]["config"]["input_shape"] == [8]
    assert rec["config"]["evaluation"]["dataset"]["name"] == "file"


def _loss_of_flat(module: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> Any:
    from lscape_cli.core.objective import loss_mean

    names = [n for n, _ in module.named_parameters()]
    shapes = [p.shape for _, p in module.named_parameters()]

    def f(flat: torch.Tensor) -> torch.Tensor:
        params, i = {}, 0
        for n, s in zip(names, shapes, strict=True):
            params[n] = flat[i : i + math.prod(s)].reshape(s)
            i += math.prod(s)
        return loss_mean(torch.func.functional_call(module, params, (x,)), y, "ce")

    return f


def _dense_hessian(module: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """float64 Hessian by autograd's reverse-over-reverse, checked against central differences.

    (torch 2.14's ``torch.func.hessian`` gets the LayerNorm-weight / first-layer block of this model
    wrong; autograd and the finite differences agree.)
    """
    f = _loss_of_flat(module, x, y)
    flat0 = torch.cat([p.detach().reshape(-1) for p in module.parameters()])
    h = torch.autograd.functional.hessian(f, flat0)
    v = torch.randn(flat0.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    grad = torch.func.grad(f)
    fd = (grad(flat0 + 1e-5 * v) - grad(flat0 - 1e-5 * v)) / 2e-5
    assert float((h @ v - fd).abs().max()) <= 1e-6 * float(fd.abs().max())
    return h


def test_probe_of_a_user_model_equals_the_dense_hessian(tmp_path: Path, cli, read_json) -> None:
    from lscape_cli.models.loading import load_model
    from lscape_cli.models.user import UserInputs

    model = write_model(tmp_path, "tiny.py", MLP_LN)
    data = write_data(tmp_path / "d.npz", (8,), n=40)
    source = f"{model}:build"
    margs = '{"width": 4}'
    run = tmp_path / "run"
    train = ("--model-def", source, "--model-args", margs, "--data", data, "--epochs", "3", "--out", run)
    _ok(cli("train", *train, "--batch-size", "8", "--device", "cpu", "--quiet"))
    ckpt = run / "model.safetensors"
    flags = ("--top-k", "3", "--lambda-min", "--trace", "--frobenius", "--matvecs", "200")
    _ok(cli("probe", ckpt, "--trust-model-def", *flags, "--dtype", "float64", "--device", "cpu", "--quiet"))
    res = read_json(run / "model.probe.json")["results"]
    lm = load_model(ckpt, dtype=torch.float64, user=UserInputs(trust_model_def=True))
    with np.load(data) as d:
        perm = np.random.default_rng(0).permutation(40)  # the split of the file's samples (split_seed 0)
        train_idx = perm[8:]
        x = torch.from_numpy(d["x"][train_idx]).double()
        y = torch.from_numpy(d["y"][train_idx])
    exact = torch.linalg.eigvalsh(_dense_hessian(lm.module, x, y))
    top = exact.flip(0)[:3].tolist()
    for got, want in zip(res["top_k"]["eigenvalues"], top, strict=True):
        assert abs(got - want) <= 1e-6 * abs(want)
    assert abs(res["lambda_min"]["estimate"] - float(exact[0])) <= 1e-6 * float(exact.abs().max())
    assert abs(res["trace"]["estimate"] - float(exact.sum())) <= 1e-6 * float(exact.abs().sum())
    fro = float(exact.pow(2).sum().sqrt())
    assert abs(res["frobenius"]["estimate"] - fro) <= 1e-6 * fro


@pytest.mark.parametrize("strategy", ["fwd_rev", "vmap"])
def test_a_named_torch_func_strategy_is_refused_on_layernorm(
    strategy: str, tmp_path: Path, cli, error_line
) -> None:
    """torch.func's LayerNorm second derivative is wrong: a named strategy is checked and refused."""
    from safetensors.torch import save_file

    model = write_model(tmp_path, "ln.py", MLP_LN)
    data = write_data(tmp_path / "d.npz", (8,))
    namespace: dict[str, Any] = {}
    exec(MLP_LN, namespace)
    torch.manual_seed(0)
    save_file(namespace["build"]().state_dict(), tmp_path / "ln.safetensors")
    args = ("--model-def", f"{model}:build", "--data", data, "--lambda-max", "--device", "cpu")
    line = error_line(cli("probe", tmp_path / "ln.safetensors", *args, "--hvp", strategy))
    assert re.fullmatch(
        rf"Error: --hvp {strategy} disagrees with double_backward by [0-9.e+-]+ \(relative, float64, 8 "
        r"samples\), most at [0-9]\.(weight|bias) of a (LayerNorm|Linear) module \(torch\.func's second "
        rf"derivative is wrong there\): --hvp {strategy} \(use --hvp double_backward or auto\)",
        line,
    ), line
    assert not (tmp_path / "ln.probe.json").exists()


def test_measured_hvp_strategy_agrees_with_autograd_on_layernorm(tmp_path: Path) -> None:
    """torch.func's products are wrong for this model (see _dense_hessian): ``measure`` must not pick them."""
    from lscape_cli.core.linalg._hvp_calibration import _MEASURED, calibrate
    from lscape_cli.core.linalg.hvp import HVP, Objective

    namespace: dict[str, Any] = {}
    exec(MLP_LN, namespace)
    torch.manual_seed(0)
    module = namespace["build"](width=4).double().eval()
    x = torch.randn(16, 8, dtype=torch.float64)
    y = torch.arange(16) % 3
    obj = Objective.from_module(module, x, y)
    _MEASURED.clear()
    cal = calibrate(obj)
    assert cal.seconds_per_product["fwd_rev"] is None and cal.seconds_per_product["vmap"] is None
    h = _dense_hessian(module, x, y)
    v = {n: torch.randn_like(p) for n, p in module.named_parameters()}
    flat_v = torch.cat([t.reshape(-1) for t in v.values()])
    hv = HVP(obj, "measure")(v)
    assert torch.allclose(torch.cat([t.reshape(-1) for t in hv.values()]), h @ flat_v, rtol=0, atol=1e-10)


def test_checkpoint_of_user_code_is_not_imported_without_consent(tmp_path: Path, cli, error_line) -> None:
    model = write_model(tmp_path, "m.py", MLP_LN)
    data = write_data(tmp_path / "d.npz", (8,))
    run = tmp_path / "run"
    _ok(
        cli(
            "train", "--model-def", f"{model}:build", "--data", data, "--epochs", "1", "--out", run, "--quiet"
        )
    )
    ckpt = run / "model.safetensors"
    line = error_line(cli("probe", ckpt, "--device", "cpu"))
    assert line == (
        f"Error: {ckpt} describes a model built by user code {model}:build; reading a file never imports "
        f"code (pass --model-def {model}:build to load it, or --trust-model-def to import the recorded "
        "source)"
    )
    assert not (run / "model.probe.json").exists()
    # a changed file is a warning, not an error
    model.write_text(MLP_LN + "\n# edited\n")
    _ok(cli("probe", ckpt, "--model-def", f"{model}:build", "--lambda-max", "--device", "cpu", "--quiet"))
    warnings = json.loads((run / "model.probe.json").read_text())["warnings"]
    assert any("differs from the file the checkpoint was trained from" in w for w in warnings), warnings


BAD_MODELS = {
    "missing": ("import torch\n", "has no function 'build'"),
    "raising": ("def build():\n    raise RuntimeError('boom')\n", "raised RuntimeError: boom"),
    "not-a-module": ("def build():\n    return 3\n", "returned a int, not a torch.nn.Module"),
    "prints": (
        "from torch import nn\ndef build():\n    print('hello')\n    return nn.Linear(8, 3)\n",
        "printed to stdout while building the model ('hello')",
    ),
    "global-state": (
        "import torch\nfrom torch import nn\ndef build():\n    torch.set_default_dtype(torch.float64)\n"
        "    return nn.Linear(8, 3)\n",
        "changed global state: torch default dtype (torch.float32 -> torch.float64)",
    ),
    "random-forward": (
        "import torch\nfrom torch import nn\nclass M(nn.Linear):\n    def forward(self, x):\n"
        "        return super().forward(x + 0.1 * torch.randn_like(x))\ndef build():\n    return M(8, 3)\n",
        "forward is not deterministic in eval mode",
    ),
    "syntax": ("def build(:\n", "importing"),
    "prints-in-forward": (
        "from torch import nn\nclass M(nn.Linear):\n    def forward(self, x):\n        print(x.shape)\n"
        "        return super().forward(x)\ndef build():\n    return M(8, 3)\n",
        "the model's forward printed to stdout ('torch.Size([2, 8])')",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_MODELS))
def test_bad_model_code_is_one_line(case: str, tmp_path: Path, cli, error_line) -> None:
    text, expected = BAD_MODELS[case]
    model = write_model(tmp_path, "bad.py", text)
    data = write_data(tmp_path / "d.npz", (8,))
    out = tmp_path / "run"
    line = error_line(cli("train", "--model-def", f"{model}:build", "--data", data, "--out", out, "--quiet"))
    assert expected in line, line
    assert not out.exists()
    assert torch.get_default_dtype() == torch.float32  # the guard put it back


BAD_ARGS = {
    "unknown-kwarg": (("--model-args", '{"depth": 3}'), "does not accept these arguments"),
    "not-json": (("--model-args", "{width: 3}"), "not valid JSON"),
    "bad-source": (("--model-def", "my_model"), "invalid model source 'my_model'"),
    "no-file": (("--model-def", "nowhere.py:build"), "model definition file not found"),
    "registry-flag": (("--depth", "3"), "--depth applies to the registry models"),
    "weights": (
        ("--model-def", "torchvision:resnet18", "--model-args", '{"weights": "DEFAULT"}'),
        "lscape never downloads pretrained weights",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_ARGS))
def test_bad_model_arguments_are_one_line(case: str, tmp_path: Path, cli, error_line) -> None:
    model = write_model(tmp_path, "m.py", MLP_LN)
    data = write_data(tmp_path / "d.npz", (8,))
    extra, expected = BAD_ARGS[case]
    argv = ["train", "--model-def", f"{model}:build", "--data", data, "--out", tmp_path / "run", *extra]
    line = error_line(cli(*argv, "--quiet"))
    assert expected in line, line
    assert not (tmp_path / "run").exists()


def _arrays(case: str) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20, 8)).astype(np.float32)
    y = np.arange(20) % 3
    if case == "nan":
        x[7, 2] = np.nan
        return {"x": x, "y": y}
    if case == "wrong-width":
        return {"x": x[:, :5], "y": y}
    if case == "short-y":
        return {"x": x, "y": y[:10]}
    if case == "float-y":
        return {"x": x, "y": y.astype(np.float32)}
    if case == "nan-y":
        return {"x": x, "y": np.where(np.arange(20) == 3, np.nan, 1.0)}
    if case == "bool-y":
        return {"x": x, "y": y > 0}
    if case == "no-y":
        return {"x": x}
    if case == "bad-split":
        return {"x": x, "y": y, "split": np.full(20, 5)}
    raise AssertionError(case)


BAD_DATA = {
    "nan": "x holds 1 NaN/inf value(s), the first in sample 7",
    "wrong-width": "the model fails on inputs of shape (2, 5)",
    "short-y": "y has shape (10,) but x has 20 samples",
    "float-y": "y holds floating regression targets (16,), which loss 'ce' cannot fit",
    "nan-y": "y holds 1 NaN/inf value(s), the first in sample 3",
    "bool-y": "y has dtype bool",
    "no-y": "the data file needs arrays 'x' and 'y' (found: x)",
    "bad-split": "'split' holds values other than 0, 1, 2",
}


@pytest.mark.parametrize("case", sorted(BAD_DATA))
def test_bad_data_is_one_line(case: str, tmp_path: Path, cli, error_line) -> None:
    model = write_model(tmp_path, "m.py", MLP_LN)
    data = tmp_path / "d.npz"
    np.savez(data, **_arrays(case))
    out = tmp_path / "run"
    line = error_line(cli("train", "--model-def", f"{model}:build", "--data", data, "--out", out, "--quiet"))
    assert BAD_DATA[case] in line, line
    assert not out.exists()


@pytest.mark.parametrize("suffix", [".safetensors", ".pt", ".npz"])
def test_data_files_with_their_own_splits(suffix: str, tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    from lscape_cli import datasets

    rng = np.random.default_rng(1)
    arrays = {
        "x": rng.standard_normal((30, 4)).astype(np.float32),
        "y": np.arange(30) % 2,
        "x_test": rng.standard_normal((6, 4)).astype(np.float32),
        "y_test": np.arange(6) % 2,
        "x_val": rng.standard_normal((5, 4)).astype(np.float32),
        "y_val": np.arange(5) % 2,
    }
    path = tmp_path / f"d{suffix}"
    if suffix == ".safetensors":
        save_file(arrays, str(path))
    elif suffix == ".pt":
        torch.save({k: torch.from_numpy(v) for k, v in arrays.items()}, path)
    else:
        np.savez(path, **arrays)
    splits = datasets.load(datasets.DatasetSpec("file", path=str(path)), tmp_path)
    assert splits.sizes() == {"train": 30, "val": 5, "test": 6}
    assert torch.equal(splits.x["test"], torch.from_numpy(arrays["x_test"]))
    assert torch.equal(splits.x["val"], torch.from_numpy(arrays["x_val"]))
    assert splits.num_classes == 2
    assert splits.describe()["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_split_array_assigns_samples(tmp_path: Path) -> None:
    from lscape_cli import datasets

    x = np.arange(20, dtype=np.float32).reshape(10, 2)
    split = np.array([0, 0, 1, 2, 0, 0, 2, 1, 0, 0])
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(10) % 2, split=split)
    splits = datasets.load(datasets.DatasetSpec("file", path=str(tmp_path / "d.npz")), tmp_path)
    assert splits.sizes() == {"train": 6, "val": 2, "test": 2}
    assert splits.x["test"][:, 0].tolist() == [6.0, 12.0]


def test_permuted_copy_of_a_user_mlp_aligns_to_zero_barrier(tmp_path: Path, cli, read_json) -> None:
    from lscape_cli.core.connectivity import alignment as al
    from lscape_cli.core.connectivity.permutation_trace import traced_spec
    from lscape_cli.storage.checkpoint import load_checkpoint, save_checkpoint

    model = write_model(tmp_path, "m.py", MLP_LN)
    data = write_data(tmp_path / "d.npz", (8,))
    run = tmp_path / "run"
    train = ("--model-def", f"{model}:build", "--data", data, "--epochs", "3", "--batch-size", "8")
    _ok(cli("train", *train, "--out", run, "--device", "cpu", "--quiet"))
    a = run / "model.safetensors"
    ckpt = load_checkpoint(a)
    namespace: dict[str, Any] = {}
    exec(MLP_LN, namespace)
    spec = traced_spec(namespace["build"](), torch.zeros(1, 8))
    assert sorted(spec.sizes.values()) == [8, 8]  # two hidden layers; the LayerNorm follows the first
    b = run / "permuted.safetensors"
    save_checkpoint(b, al.permute(spec, ckpt.state, al.random_permutation(spec, 3)), ckpt.meta)
    out = tmp_path / "ab.connect.json"
    args = ("--trust-model-def", "--align", "weights", "--points", "5", "--no-plot", "--out", out)
    _ok(cli("connect", a, b, *args, "--device", "cpu", "--quiet"))
    res = read_json(out)["results"]
    assert res["linear"]["barriers"]["train"]["loss"]["max_minus_mean_ends"]["value"] > 1e-3
    aligned = res["aligned"]
    assert aligned["alignment"]["function_check"]["passed"]
    assert aligned["distance"] == 0.0
    assert aligned["barriers"]["train"]["loss"]["max_minus_mean_ends"]["value"] == 0.0


SHUFFLE = """
import torch
from torch import nn


class Shuffle(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 6)
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.fc(x)).flip(-1))


def build() -> nn.Module:
    return Shuffle()
"""


def test_refused_alignment_is_one_line(tmp_path: Path, cli, error_line) -> None:
    from safetensors.torch import save_file

    model = write_model(tmp_path, "shuffle.py", SHUFFLE)
    data = write_data(tmp_path / "d.npz", (8,))
    namespace: dict[str, Any] = {}
    exec(SHUFFLE, namespace)
    for name in ("a", "b"):
        save_file(namespace["build"]().state_dict(), tmp_path / f"{name}.safetensors")
    argv = [
        "connect",
        tmp_path / "a.safetensors",
        tmp_path / "b.safetensors",
        "--model-def",
        f"{model}:build",
    ]
    line = error_line(cli(*argv, "--data", data, "--align", "weights", "--device", "cpu"))
    assert line == (
        f"Error: cannot align {model}:build: an operation not known to commute with a permutation of units "
        "at node 'flip' (call_method flip): --align weights (connect without --align (the linear path only))"
    )
    assert not list(tmp_path.glob("*.connect.json"))


def _traced_cases() -> dict[str, tuple[Any, tuple[int, ...], int]]:
    """name -> (factory, input shape, number of groups the structure has)."""
    import torchvision

    from lscape_cli import models

    def registry(name: str, **opts: Any) -> Any:
        return lambda: models.build(models.make_spec(name, {**opts, "input_shape": (1, 8, 8)}))

    def source(text: str, **kwargs: Any) -> Any:
        namespace: dict[str, Any] = {}
        exec(text, namespace)
        return lambda: namespace["build"](**kwargs)

    return {
        "mlp-layernorm-gelu": (source(MLP_LN), (8,), 2),
        "conv1d-sequence": (source(SEQ), (2, 12), 2),
        "registry-mlp": (registry("mlp", depth=3, width=6), (1, 8, 8), 3),
        "registry-cnn": (registry("cnn", width=3, hidden=5), (1, 8, 8), 3),
        "registry-resnet": (registry("resnet", width=4, blocks=2), (1, 8, 8), 6),
        # stem+layer1 stream, 3 more streams, 2 inner groups per stage
        "torchvision-resnet18": (lambda: torchvision.models.resnet18(num_classes=10), (3, 8, 8), 12),
    }


@pytest.mark.parametrize("case", sorted(_traced_cases()))
def test_traced_permutations_keep_the_function(case: str) -> None:
    from lscape_cli.core.connectivity import alignment as al
    from lscape_cli.core.connectivity.permutation_trace import traced_spec

    factory, shape, groups = _traced_cases()[case]
    torch.manual_seed(0)
    model = factory().double().eval()
    x = torch.randn(4, *shape, dtype=torch.float64)
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    spec = traced_spec(model, x)
    assert len(spec.sizes) == groups
    params = {n: p.detach() for n, p in model.named_parameters()}
    buffers = {n: b.detach() for n, b in model.named_buffers()}
    al.check_spec(spec, {**params, **buffers})
    perms = al.random_permutation(spec, 1)
    moved = (al.permute(spec, params, perms), al.permute(spec, buffers, perms))
    gap = al.function_gap(model, (params, buffers), moved, x)
    assert gap.passed, gap
    assert any(not torch.equal(moved[0][n], params[n]) for n in params)


def _write_idx(path: Path, arr: np.ndarray) -> None:
    """The MNIST idx format: magic (0, 0, 0x08 unsigned byte, ndim), big-endian int32 dims, bytes."""
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    path.write_bytes(header + arr.astype(np.uint8).tobytes())


def test_any_torchvision_dataset_class(tmp_path: Path, cli, read_json, error_line) -> None:
    """``--dataset torchvision:KMNIST`` (none of the three named ones), files in torchvision's layout."""
    raw = tmp_path / "kmnist" / "KMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 40), ("t10k", 10)):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    run = tmp_path / "run"
    args = ("--dataset", "torchvision:KMNIST", "--data-root", tmp_path, "--val-size", "8", "--epochs", "1")
    _ok(cli("train", "--model", "mlp", "--width", "8", *args, "--out", run, "--device", "cpu", "--quiet"))
    dataset = read_json(run / "model.train.json")["config"]["dataset"]
    assert dataset["name"] == "torchvision:KMNIST"
    assert dataset["sizes"] == {"train": 32, "val": 8, "test": 10} and dataset["num_classes"] == 10
    _ok(cli("probe", run / "model.safetensors", "--lambda-max", "--data-root", tmp_path, "--quiet"))
    empty, run = tmp_path / "empty", tmp_path / "run2"
    line = error_line(cli("train", "--dataset", "torchvision:KMNIST", "--data-root", empty, "--out", run))
    assert line == (
        f"Error: dataset 'torchvision:KMNIST' not found: {empty / 'kmnist'} (pass --download to fetch it, "
        "point --data-root/LSCAPE_DATA at a copy, or use the bundled offline dataset mnist-5k)"
    )
    line = error_line(cli("train", "--dataset", "torchvision:Nope", "--out", run))
    assert "torchvision has no dataset class 'Nope'" in line
    line = error_line(cli("train", "--dataset", "torchvision:SVHN", "--data-root", empty, "--out", run))
    assert "torchvision.datasets.SVHN does not take root/train/download" in line
    assert not run.exists()


def test_pareto_aligns_restarts_of_a_user_model(tmp_path: Path, cli, read_json, error_line) -> None:
    model = write_model(tmp_path, "m.py", MLP_LN)
    data = write_data(tmp_path / "d.npz", (8,))
    run = tmp_path / "run"
    train = ("--model-def", f"{model}:build", "--data", data, "--epochs", "2", "--restarts", "3")
    _ok(cli("train", *train, "--out", run, "--device", "cpu", "--quiet"))
    for ckpt in sorted(run.glob("*.safetensors")):
        _ok(cli("probe", ckpt, "--trust-model-def", "--frobenius", "--device", "cpu", "--quiet"))
    out = tmp_path / "pareto.json"
    _ok(cli("pareto", run, "--group-by", "training.lr", "--trust-model-def", "--out", out, "--quiet"))
    stats = read_json(out)["results"]["groups"]["0.01"]["parameters"]
    assert 0 < stats["spread_after_alignment"] < stats["spread_about_centroid"]
    line = error_line(cli("pareto", run, "--group-by", "training.lr", "--out", tmp_path / "p2.json"))
    assert "describes a model built by user code" in line


def test_package_module_source(tmp_path: Path, cli, read_json, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "lab_models_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(MLP_LN)
    monkeypatch.syspath_prepend(str(tmp_path))
    data = write_data(tmp_path / "d.npz", (8,))
    run = tmp_path / "run"
    source = "lab_models_pkg.nets:build"
    (tmp_path / "args.json").write_text('{"width": 5}')  # --model-args also takes a JSON file
    margs = ("--model-args", tmp_path / "args.json")
    _ok(cli("train", "--model-def", source, *margs, "--data", data, "--epochs", "1", "--out", run, "--quiet"))
    cfg = read_json(run / "model.train.json")["config"]["model"]["config"]
    assert cfg["kwargs"] == {"width": 5}
    assert cfg["file"] == str((pkg / "nets.py").resolve())
    assert cfg["sha256"] == hashlib.sha256((pkg / "nets.py").read_bytes()).hexdigest()
    _ok(cli("probe", run / "model.safetensors", "--model-def", source, "--grad-norm", "--quiet"))
