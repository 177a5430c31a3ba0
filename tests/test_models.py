"""Model registry: every architecture builds, rebuilds from its spec, and trains on digits."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from lscape_cli import models
from lscape_cli.core.objective import evaluate
from lscape_cli.core.training.engine import TrainConfig, init_parameters, train_restarts
from lscape_cli.errors import LscapeError

CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "mlp": ("mlp", {"depth": 2, "width": 16}),
    "mlp-tanh-nobias": ("mlp", {"depth": 1, "width": 16, "activation": "tanh", "bias": False}),
    "cnn": ("cnn", {"width": 4, "hidden": 16}),
    "resnet": ("resnet", {"width": 4}),
    "resnet-noskip": ("resnet", {"width": 4, "skip": False}),
    "resnet-nobn": ("resnet", {"width": 4, "batchnorm": False}),
    "resnet-plain": ("resnet", {"width": 4, "skip": False, "batchnorm": False}),
    "linear": ("linear", {}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_model_builds_and_trains_on_digits(case: str, digits: Any, spec_for) -> None:
    name, opts = CASES[case]
    spec = spec_for(name, digits, **opts)
    module = models.build(spec)
    out = module(digits.x["val"])
    assert out.shape == (digits.sizes()["val"], 10)
    assert models.num_parameters(module) == sum(p.numel() for p in module.parameters()) > 0

    init_parameters(module, "default", 0)
    module.eval()
    initial_loss, _ = evaluate(module, digits.x["train"], digits.y["train"], "ce")

    cfg = TrainConfig(optimizer="adam", lr=1e-2, epochs=3, batch_size=32)
    (res,) = train_restarts(models.build(spec), digits, cfg, [0], torch.device("cpu"), torch.float32)
    assert res.stop_reason == "epochs" and res.steps == 12 and res.epochs == 3
    assert all(math.isfinite(v) for v in res.final.values()), res.final
    running = [h["train_loss_running"] for h in res.history]
    assert running[-1] < running[0], running
    if not spec.config.__dict__.get("batchnorm", False):
        # eval mode == train mode without BatchNorm, so the whole-split loss must have gone down too
        assert res.final["train_loss"] < initial_loss
    assert set(res.state) == set(module.state_dict())


def test_resnet_switches_change_the_architecture(digits: Any, spec_for) -> None:
    keys = {
        case: set(models.build(spec_for(CASES[case][0], digits, **CASES[case][1])).state_dict())
        for case in ("resnet", "resnet-noskip", "resnet-nobn", "resnet-plain")
    }
    assert any("shortcut" in k for k in keys["resnet"]) and not any(
        "shortcut" in k for k in keys["resnet-noskip"]
    )
    assert any("running_mean" in k for k in keys["resnet"])
    assert not any("running_mean" in k or "bn" in k for k in keys["resnet-nobn"] | keys["resnet-plain"])
    assert len({frozenset(k) for k in keys.values()}) == 4


def test_batchnorm_buffers_are_trained_and_saved(digits: Any, spec_for) -> None:
    spec = spec_for("resnet", digits, width=4)
    cfg = TrainConfig(optimizer="sgd", lr=0.05, epochs=2, batch_size=32)
    (res,) = train_restarts(models.build(spec), digits, cfg, [1], torch.device("cpu"), torch.float32)
    counters = {k: int(v) for k, v in res.state.items() if k.endswith("num_batches_tracked")}
    assert counters and set(counters.values()) == {res.steps}
    means = [v for k, v in res.state.items() if k.endswith("running_mean")]
    assert all(not torch.equal(m, torch.zeros_like(m)) for m in means)


@pytest.mark.parametrize("case", list(CASES))
def test_spec_round_trips_through_json(case: str, spec_for, digits: Any) -> None:
    import json

    name, opts = CASES[case]
    spec = spec_for(name, digits, **opts)
    again = models.ModelSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec
    shapes = {k: v.shape for k, v in models.build(spec).state_dict().items()}
    assert {k: v.shape for k, v in models.build(again).state_dict().items()} == shapes


@pytest.mark.parametrize(
    ("name", "opts", "expected"),
    [
        (
            "mlp",
            {"depth": 2, "kernel": 3},
            "model 'mlp' has no option(s) kernel: --model "
            "(its options are: activation, bias, depth, input_shape, num_classes, width)",
        ),
        (
            "mlp",
            {"depth": -1},
            "invalid depth=-1 for model 'mlp': --model (depth must be a positive integer)",
        ),
        (
            "resnet",
            {"stages": 0},
            "invalid stages=0 for model 'resnet': --model (stages must be a positive integer)",
        ),
        (
            "cnn",
            {"input_shape": (20,)},
            "model 'cnn' needs image inputs (C, H, W): --model "
            "(use an image dataset (digits, mnist-5k, mnist, ...) or the mlp/linear model)",
        ),
        (
            "mlp",
            {"activation": "swish"},
            "unknown activation 'swish': --activation (choose one of: relu, tanh, gelu, sigmoid, leaky_relu)",
        ),
        ("vit", {}, "unknown model 'vit': --model (choose one of: mlp, cnn, resnet, linear)"),
    ],
)
def test_bad_model_specs(name: str, opts: dict[str, Any], expected: str) -> None:
    with pytest.raises(LscapeError) as info:
        models.make_spec(name, opts)
    assert info.value.line() == expected


def test_resnet_flags_reach_the_checkpoint(tmp_path: Path, cli, rebuild) -> None:
    out = tmp_path / "run"
    result = cli(*_resnet_args(out))
    assert result.exit_code == 0, result.output
    module, ckpt = rebuild(out / "model.safetensors")
    assert (
        ckpt.meta["model"]["config"]["skip"] is False and ckpt.meta["model"]["config"]["batchnorm"] is False
    )
    assert not any("bn" in k or "shortcut" in k for k in ckpt.state)
    assert isinstance(module, torch.nn.Module)


def _resnet_args(out: Path) -> list[str]:
    words = (
        "train --model resnet --width 4 --no-skip --no-batchnorm --dataset digits --train-size 64 "
        "--val-size 32 --test-size 32 --epochs 1 --device cpu --quiet"
    )
    return [*words.split(), "--out", str(out)]
