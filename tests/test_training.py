"""Training engine: batched restarts follow torch.optim exactly, restarts are independent, stop rules fire."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch

from lscape_cli import models
from lscape_cli.core.objective import loss_mean
from lscape_cli.core.training.engine import TrainConfig, init_parameters, train_restarts

CPU = torch.device("cpu")


def _reference(
    spec: Any, splits: Any, cfg: TrainConfig, seed: int, make_opt: Callable[[Any], torch.optim.Optimizer]
) -> dict[str, torch.Tensor]:
    """A plain single-model torch.optim loop from the same initialisation and minibatch order.

    The engine documents: initialise in float32 on CPU from ``seed``; restart r draws its minibatch order
    from ``torch.Generator().manual_seed(seed)``, one ``randperm`` per epoch.
    """
    module = models.build(spec).float()
    init_parameters(module, cfg.init, seed)
    module = module.to(splits.x["train"].dtype)
    opt = make_opt(module.parameters())
    x, y = splits.x["train"], splits.y["train"]
    gen = torch.Generator().manual_seed(seed)
    for _ in range(cfg.epochs):
        order = (
            [torch.arange(len(y))]
            if cfg.batch_size is None
            else torch.randperm(len(y), generator=gen).split(cfg.batch_size)
        )
        for idx in order:
            opt.zero_grad()
            loss_mean(module(x[idx]), y[idx], cfg.loss).backward()
            opt.step()
    return {k: v.detach() for k, v in module.state_dict().items()}


OPTIMIZERS = {
    "sgd-momentum": (
        dict(optimizer="sgd", lr=0.1, momentum=0.9),
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
    ),
    "sgd-nesterov-wd": (
        dict(optimizer="sgd", lr=0.1, momentum=0.8, nesterov=True, weight_decay=1e-2),
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.8, nesterov=True, weight_decay=1e-2),
    ),
    "adam-l2": (
        dict(optimizer="adam", lr=1e-2, beta1=0.8, beta2=0.99, weight_decay=1e-3),
        lambda p: torch.optim.Adam(p, lr=1e-2, betas=(0.8, 0.99), weight_decay=1e-3),
    ),
    "adamw": (
        dict(optimizer="adamw", lr=1e-2, weight_decay=0.1),
        lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1),
    ),
}


@pytest.mark.parametrize("batch_size", [None, 32], ids=["full-batch", "minibatch"])
@pytest.mark.parametrize("opt", list(OPTIMIZERS))
def test_single_restart_matches_plain_torch_optim_in_float64(
    opt: str, batch_size: int | None, digits64: Any, spec_for
) -> None:
    kwargs, make_opt = OPTIMIZERS[opt]
    spec = spec_for("mlp", digits64, depth=2, width=16)
    loss = "mse" if opt.startswith("adam") else "ce"
    cfg = TrainConfig(loss=loss, epochs=3, batch_size=batch_size, **kwargs)
    (res,) = train_restarts(models.build(spec), digits64, cfg, [7], CPU, torch.float64)
    ref = _reference(spec, digits64, cfg, 7, make_opt)
    assert res.steps == (3 if batch_size is None else 12)
    assert set(res.state) == set(ref)
    init = _reference_init(spec, 7)
    for k, v in ref.items():
        assert res.state[k].dtype == torch.float64
        assert not torch.equal(v, init[k].to(torch.float64)), f"{k} did not move"
        assert torch.allclose(res.state[k], v, rtol=0, atol=1e-12), (k, float((res.state[k] - v).abs().max()))


def _reference_init(spec: Any, seed: int) -> dict[str, torch.Tensor]:
    module = models.build(spec).float()
    init_parameters(module, "default", seed)
    return module.state_dict()


def test_batched_restart_equals_its_single_run(digits: Any, spec_for) -> None:
    """Restarts [3, 4] trained together: restart 4 is bit for bit the run of seed 4 alone (float32)."""
    spec = spec_for("mlp", digits, depth=2, width=16)
    cfg = TrainConfig(optimizer="adam", lr=1e-2, epochs=2, batch_size=32)
    both = train_restarts(models.build(spec), digits, cfg, [3, 4], CPU, torch.float32)
    alone = train_restarts(models.build(spec), digits, cfg, [4], CPU, torch.float32)[0]
    assert [r.seed for r in both] == [3, 4] and [r.restart for r in both] == [0, 1]
    for k, v in alone.state.items():
        assert torch.equal(both[1].state[k], v), k
    assert both[1].final == alone.final
    drop_time = lambda h: [{k: v for k, v in e.items() if k != "wall_time_s"} for e in h]  # noqa: E731
    assert drop_time(both[1].history) == drop_time(alone.history)
    assert not torch.equal(both[0].state["head.weight"], both[1].state["head.weight"])  # seeds do differ


def test_batched_batchnorm_restarts_equal_their_single_runs(digits: Any, spec_for) -> None:
    """Models with BatchNorm take the per-restart loop path; running statistics stay per restart too."""
    spec = spec_for("resnet", digits, width=4)
    cfg = TrainConfig(optimizer="sgd", lr=0.05, momentum=0.9, epochs=1, batch_size=32)
    both = train_restarts(models.build(spec), digits, cfg, [3, 4], CPU, torch.float32)
    alone = train_restarts(models.build(spec), digits, cfg, [4], CPU, torch.float32)[0]
    for k, v in alone.state.items():
        assert torch.equal(both[1].state[k], v), k


def _run(digits: Any, spec_for, seeds: list[int] | None = None, model: str = "mlp", **cfg: Any) -> list[Any]:
    opts = {"depth": 1, "width": 8} if model == "mlp" else {}
    spec = spec_for(model, digits, **opts)
    return train_restarts(models.build(spec), digits, TrainConfig(**cfg), seeds or [0], CPU, torch.float32)


def test_stop_reason_epochs(digits: Any, spec_for) -> None:
    (res,) = _run(digits, spec_for, epochs=2, batch_size=32)
    assert (res.stop_reason, res.epochs, res.steps, len(res.history)) == ("epochs", 2, 8, 2)


def test_stop_reason_max_steps(digits: Any, spec_for) -> None:
    (res,) = _run(digits, spec_for, epochs=10, batch_size=32, max_steps=6)  # 4 steps per epoch
    assert (res.stop_reason, res.epochs, res.steps) == ("max_steps", 2, 6)


def test_stop_reason_tol(digits: Any, spec_for) -> None:
    # lr=0 with full batches: the training loss is the same every epoch, so |change| = 0 < tol at epoch 2
    (res,) = _run(digits, spec_for, epochs=10, batch_size=None, lr=0.0, tol=1e-12)
    assert (res.stop_reason, res.epochs, res.steps) == ("tol", 2, 2)
    # a real run with a tiny tol does not stop early
    (busy,) = _run(digits, spec_for, epochs=3, batch_size=None, lr=0.1, tol=1e-12)
    assert busy.stop_reason == "epochs"


def test_stop_reason_patience(digits: Any, spec_for) -> None:
    # lr=0: the validation loss never improves after epoch 1; patience 2 stops at epoch 3
    (res,) = _run(digits, spec_for, epochs=10, batch_size=32, lr=0.0, patience=2)
    assert (res.stop_reason, res.epochs) == ("patience", 3)
    # min_delta larger than any possible gain also exhausts patience while the loss falls
    (strict,) = _run(
        digits, spec_for, epochs=10, batch_size=32, optimizer="adam", lr=1e-2, patience=1, min_delta=1e6
    )
    assert (strict.stop_reason, strict.epochs) == ("patience", 2)


def test_stop_reason_diverged(digits: Any, spec_for) -> None:
    (res,) = _run(digits, spec_for, model="linear", loss="mse", lr=1e6, epochs=20, batch_size=None)
    assert res.stop_reason == "diverged" and res.epochs < 20
    assert all(torch.isfinite(v).all() for v in res.state.values())  # frozen at the last finite step


def test_a_diverged_restart_stops_alone(digits: Any, spec_for) -> None:
    """N(0, 1e9^2) weights overflow float32 for some seeds only; lr=0 keeps the others finite forever."""
    spec = spec_for("mlp", digits, depth=1, width=1, bias=False)
    cfg = TrainConfig(loss="mse", lr=0.0, epochs=3, batch_size=None, init="normal:1e9")
    res = train_restarts(models.build(spec), digits, cfg, [0, 1, 2], CPU, torch.float32)
    reasons = [r.stop_reason for r in res]
    assert "diverged" in reasons and "epochs" in reasons, reasons
    for r in res:
        if r.stop_reason == "diverged":
            assert (r.steps, r.epochs, len(r.history)) == (0, 1, 1)
        else:
            assert (r.steps, r.epochs, len(r.history)) == (3, 3, 3)
            assert math.isfinite(r.final["train_loss"])


def test_trajectory_snapshots_start_at_init_and_end_at_the_saved_state(digits: Any, spec_for) -> None:
    spec = spec_for("mlp", digits, depth=1, width=8)
    cfg = TrainConfig(optimizer="sgd", lr=0.1, epochs=3, batch_size=None, trajectory_every=1)
    (res,) = train_restarts(models.build(spec), digits, cfg, [2], CPU, torch.float32)
    assert res.trajectory_epochs == [0, 1, 2, 3] and res.trajectory_steps == [0, 1, 2, 3]
    init = _reference_init(spec, 2)
    for name, snaps in res.trajectory.items():
        assert snaps.shape == (4, *res.state[name].shape)
        assert torch.equal(snaps[-1], res.state[name])  # the last snapshot is the saved state
        assert torch.equal(snaps[0], init[name])  # the first is the initialisation
        assert not torch.equal(snaps[1], snaps[0])


def test_trajectory_every_two_epochs_keeps_the_last(digits: Any, spec_for) -> None:
    spec = spec_for("mlp", digits, depth=1, width=8)
    cfg = TrainConfig(epochs=5, batch_size=64, trajectory_every=2)
    (res,) = train_restarts(models.build(spec), digits, cfg, [0], CPU, torch.float32)
    assert res.trajectory_epochs == [0, 2, 4, 5] and res.trajectory_steps == [0, 4, 8, 10]
    assert {k: tuple(v.shape) for k, v in res.trajectory.items()} == {
        "hidden.0.weight": (4, 8, 64),
        "hidden.0.bias": (4, 8),
        "head.weight": (4, 10, 8),
        "head.bias": (4, 10),
    }


def test_final_metrics_are_the_eval_mode_whole_split_means(digits: Any, spec_for) -> None:
    from lscape_cli.core.objective import evaluate

    spec = spec_for("mlp", digits, depth=1, width=8)
    cfg = TrainConfig(epochs=2, batch_size=32, max_batch=50)  # chunked evaluation
    (res,) = train_restarts(models.build(spec), digits, cfg, [0], CPU, torch.float32)
    module = models.build(spec)
    module.load_state_dict(res.state)
    module.eval()
    for split in ("train", "val", "test"):
        loss, acc = evaluate(module, digits.x[split], digits.y[split], "ce")
        assert math.isclose(res.final[f"{split}_loss"], loss, rel_tol=1e-5), split
        assert math.isclose(res.final[f"{split}_accuracy"], acc, abs_tol=1e-6), split
    assert res.history[-1]["train_loss"] == res.final["train_loss"]
