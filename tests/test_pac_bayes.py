"""The PAC-Bayes bound of `probe --pac-bayes`: its formula, the prior centre theta_0, and the record."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from lscape_cli import models
from lscape_cli.core.probe import pac_bayes as pb
from lscape_cli.core.training.engine import initial_states
from lscape_cli.models.initial import initial_prior
from lscape_cli.models.loading import load_model
from lscape_cli.storage.schemas import validate


def _sigma_result(sigma: float, error: float | None, grid: int) -> dict:
    return {"sigma": sigma, "error_at_sigma": error, "error_stderr": 0.001, "grid_size": grid}


def test_the_bound_on_a_hand_computed_case() -> None:
    # ||theta - theta_0|| = ||(0, 3)|| = 3, sigma = 0.5: KL = 9 / (2 * 0.25) = 18.
    # m = 10000, delta = 0.05, G = 3: ln 3 = 1.0986122887, ln(2 * 100 / 0.05) = ln 4000 = 8.2940496401,
    # numerator 27.3926619288, rhs = 0.00273926619288; Pinsker: 0.02 + sqrt(rhs / 2) = 0.0570085544.
    theta = {"w": torch.tensor([1.0, 5.0])}
    prior = pb.Prior("init", {"w": torch.tensor([1.0, 2.0])}, "test")
    res = pb.bound({**_sigma_result(0.5, 0.02, 3), "samples": 10, "seed": 0}, theta, prior, 10000, 0.05)
    assert res["distance"] == 3.0 and res["kl"] == 18.0
    assert res["ln_grid_size"] == pytest.approx(1.0986122887, abs=1e-10)
    assert res["complexity"] == pytest.approx(0.00273926619288, abs=1e-13)
    assert res["bound"] == pytest.approx(0.0570085544, abs=1e-10)
    assert res["bound_stderr"] == 0.001 and res["draws"] == 10
    # the kl form is tighter than Pinsker's and meets kl(q || p) = rhs at its value
    assert res["train_error"] < res["kl_inverse_bound"] < res["bound"]
    assert pb.binary_kl(0.02, res["kl_inverse_bound"]) == pytest.approx(res["complexity"], rel=1e-9)
    assert res["kl_inverse_bound_stderr"] > 0 and res["vacuous"] is False
    assert res["prior_mean"] == "init" and res["m"] == 10000 and res["delta"] == 0.05


def test_kl_inverse_at_zero_error_has_a_closed_form() -> None:
    # kl(0 || p) = -ln(1 - p), so the inverse at rhs c is 1 - exp(-c).
    for c in (1e-4, 0.1, 2.0):
        assert pb.kl_inverse(0.0, c) == pytest.approx(1.0 - math.exp(-c), abs=1e-11)
    assert pb.kl_inverse(0.3, 50.0) == 1.0  # kl(0.3 || 1) is infinite, but every p < 1 fits: sup is 1


def test_the_bound_refuses_what_the_theorem_excludes() -> None:
    theta = {"w": torch.ones(2)}
    zero = pb.Prior.zero("test")
    few = pb.bound({**_sigma_result(0.1, 0.1, 3), "samples": 4, "seed": 0}, theta, zero, 7, 0.05)
    assert few["bound"] is None and "m >= 8" in few["note"]
    regression = pb.bound({**_sigma_result(0.1, None, 3), "samples": 4, "seed": 0}, theta, zero, 100, 0.05)
    assert regression["bound"] is None and "no error rate" in regression["note"]
    assert regression["distance"] == pytest.approx(math.sqrt(2.0))  # a zero prior: ||theta||
    with pytest.raises(ValueError, match="delta"):
        pb.complexity(1.0, 100, 1.0)


def test_theta0_is_the_initialisation_lscape_train_drew(tiny_run: Path) -> None:
    from lscape_cli.storage.checkpoint import load_trajectory

    loaded = load_model(tiny_run / "model.safetensors")
    prior = initial_prior(loaded)
    assert prior.mean == "init" and prior.warning is None and prior.params is not None
    training = loaded.checkpoint.meta["training"]
    fresh = models.build(loaded.spec)
    want = initial_states(fresh, training["init"], [training["seed"]], torch.device("cpu"), torch.float32)[0]
    traj = load_trajectory(tiny_run / "model.trajectory.safetensors")
    assert traj.meta["epochs"][0] == 0  # the snapshot taken before the first step: the actual init
    for name, p in loaded.module.named_parameters():
        assert torch.equal(prior.params[name], want[name].double())
        assert torch.equal(prior.params[name], traj.state[name][0].double())
        assert not torch.equal(prior.params[name], p.detach().double())  # training moved every tensor


def test_a_user_factory_that_is_not_seed_reproducible_gets_a_zero_prior(tmp_path: Path) -> None:
    from lscape_cli.models.user import build_user, make_config

    src = tmp_path / "noisy.py"
    src.write_text(
        "import os, torch\n"
        "def build():\n"
        "    m = torch.nn.Linear(4, 2)\n"
        "    g = torch.Generator().manual_seed(int.from_bytes(os.urandom(4), 'little'))\n"
        "    with torch.no_grad():\n"
        "        m.weight.copy_(torch.randn(2, 4, generator=g))\n"
        "    return m\n"
    )
    cfg = make_config(f"{src}:build", {})
    module = build_user(cfg, [])
    meta = {
        "training": {"seed": 0, "init": "default"},
        "model": {"name": "user", "config": {"sha256": cfg.sha256}},
    }
    loaded = SimpleNamespace(
        module=module, spec=models.ModelSpec("user", cfg), checkpoint=SimpleNamespace(meta=meta)
    )
    prior = initial_prior(loaded)
    assert prior.mean == "zero" and prior.params is None
    assert prior.warning == (
        "PAC-Bayes prior centred at 0, not at the initialisation: "
        f"{src}:build does not draw the same initial weights twice from one seed"
    )
    src.write_text("import torch\ndef build():\n    return torch.nn.Linear(4, 2)\n")  # now reproducible
    assert initial_prior(loaded).warning.endswith(f"{src} changed since the checkpoint was written")
    meta["model"]["config"]["sha256"] = make_config(f"{src}:build", {}).sha256
    assert initial_prior(loaded).mean == "init"


def _bound_record(rec: dict) -> dict:
    validate(rec, "probe.schema.json")
    return rec["results"]["pac_bayes"]["bound"]


def test_the_record_holds_the_bound_and_its_terms(cli, tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "p.json"
    r = cli("probe", tiny_run / "model.safetensors", "--pac-bayes", "--pac-bayes-delta", "0.1",
            "--device", "cpu", "--out", out)  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "pac_bayes_bound_kl" in r.stderr and "Warning" not in r.stderr
    rec = json.loads(out.read_text())
    b = _bound_record(rec)
    iso = rec["results"]["pac_bayes"]["isotropic"]
    assert b["prior_mean"] == "init" and b["delta"] == 0.1 and b["m"] == 64 and b["draws"] == 10
    assert b["sigma"] == iso["sigma"] and b["train_error"] == iso["error_at_sigma"]
    assert b["grid_size"] == 2 ** iso["iterations"] + 1
    assert b["kl"] == pytest.approx(b["distance"] ** 2 / (2 * b["sigma"] ** 2), rel=1e-12)
    rhs = (b["kl"] + math.log(b["grid_size"]) + math.log(2 * math.sqrt(64) / 0.1)) / 64
    assert b["complexity"] == pytest.approx(rhs, rel=1e-12)
    assert b["bound"] == pytest.approx(b["train_error"] + math.sqrt(rhs / 2), rel=1e-12)
    assert b["kl_inverse_bound"] <= b["bound"] and b["train_error_stderr"] > 0
    assert set(b) >= {"formula", "statement", "prior_source", "bound_stderr", "kl_inverse_bound_stderr"}
    assert rec["warnings"] == []


def test_a_plain_file_gets_a_zero_prior_and_says_so(cli, tiny_run: Path, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    loaded = load_model(tiny_run / "model.safetensors")
    plain = tmp_path / "plain.safetensors"
    save_file(loaded.module.state_dict(), str(plain))
    spec = tmp_path / "spec.json"
    meta = loaded.checkpoint.meta
    spec.write_text(json.dumps({"model": meta["model"], "dataset": meta["dataset"]}))
    r = cli("probe", plain, "--model-config", spec, "--pac-bayes", "--device", "cpu", "--quiet")
    assert r.exit_code == 0, r.output
    why = (
        "PAC-Bayes prior centred at 0, not at the initialisation: the checkpoint has no training "
        "metadata (seed, init) to rebuild theta_0 from"
    )
    assert f"Warning: {why}" in r.stderr.splitlines()
    rec = json.loads(tmp_path.joinpath("plain.probe.json").read_text())
    b = _bound_record(rec)
    assert b["prior_mean"] == "zero" and why in rec["warnings"]
    norm = math.sqrt(
        sum(float((p.detach().double() ** 2).sum()) for _, p in loaded.module.named_parameters())
    )
    assert b["distance"] == pytest.approx(norm, rel=1e-12)


def test_the_python_api_takes_the_initial_parameters() -> None:
    from lscape_cli import api

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 4, generator=g), torch.arange(40) % 3
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    at_start = api.probe(model, (x, y), pac_bayes=True, pac_bayes_samples=2, initial_params=start)
    b = at_start["pac_bayes"]["bound"]
    assert b["prior_mean"] == "init" and b["distance"] == 0.0 and b["kl"] == 0.0 and b["m"] == 40
    zero = api.probe(model, (x, y), pac_bayes=True, pac_bayes_samples=2)["pac_bayes"]["bound"]
    assert zero["prior_mean"] == "zero" and zero["prior_source"] == "no initial parameters were given"
    assert zero["kl"] > 0 and zero["bound"] > b["bound"]  # the same draws, a larger KL
    with pytest.raises(ValueError, match="do not match theta at: 0.weight"):
        api.probe(model, (x, y), pac_bayes=True, initial_params={**start, "0.weight": torch.zeros(1)})


def test_theta0_of_a_user_model_is_its_factory_under_the_training_seed(cli, tmp_path: Path) -> None:
    from lscape_cli.models.user import UserInputs
    from lscape_cli.storage.checkpoint import load_trajectory

    src = tmp_path / "um.py"
    src.write_text(
        "import torch\nfrom torch import nn\n\n\ndef build(width: int = 8):\n"
        "    m = nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.ReLU(), nn.Linear(width, 10))\n"
        "    with torch.no_grad():\n        m[1].weight.mul_(2.0)  # the factory's own init\n    return m\n"
    )
    out = tmp_path / "run"
    r = cli("train", "--model-def", f"{src}:build", "--dataset", "digits", "--train-size", "64",
            "--val-size", "32", "--test-size", "32", "--epochs", "1", "--seed", "3", "--device", "cpu",
            "--quiet", "--save-trajectory", "1", "--out", out)  # fmt: skip
    assert r.exit_code == 0, r.output
    prior = initial_prior(load_model(out / "model.safetensors", user=UserInputs(trust_model_def=True)))
    assert prior.mean == "init" and "um.py:build's own initialisation" in prior.source
    traj = load_trajectory(out / "model.trajectory.safetensors")
    assert traj.meta["epochs"][0] == 0 and prior.params is not None
    for name, first in traj.state.items():
        assert torch.equal(prior.params[name], first[0].double())
