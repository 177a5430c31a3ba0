"""Schedules follow torch.optim.lr_scheduler, convergence rules say which fired, --restore-best keeps the
best validation state, --shard splits a sweep, and batched restarts equal their sequential runs."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from lscape_cli import models
from lscape_cli.core.objective import loss_mean
from lscape_cli.core.training.engine import TrainConfig, init_parameters, train_restarts
from lscape_cli.core.training.train_rules import LossWindow, Schedule, parse_schedule, parse_tol_rule

CPU = torch.device("cpu")
Sched = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]


def _reference(
    spec: Any, splits: Any, cfg: TrainConfig, seed: int, make_opt: Any, make_sched: Sched, per_step: bool
) -> dict[str, torch.Tensor]:
    """A plain torch.optim loop with a torch scheduler stepped per step or per epoch."""
    module = models.build(spec).float()
    init_parameters(module, cfg.init, seed)
    module = module.to(splits.x["train"].dtype)
    opt = make_opt(module.parameters())
    sched = make_sched(opt)
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
            if per_step:
                sched.step()
        if not per_step:
            sched.step()
    return {k: v.detach() for k, v in module.state_dict().items()}


SCHEDULES = {
    "step-sgd-momentum": (
        dict(optimizer="sgd", lr=0.1, momentum=0.9, schedule="step:2:0.5", batch_size=32),
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
        lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=2, gamma=0.5),
        False,
    ),
    "cosine-adam-full-batch": (
        dict(optimizer="adam", lr=1e-2, schedule="cosine", batch_size=None, epochs=6),
        lambda p: torch.optim.Adam(p, lr=1e-2),
        lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=6),
        True,
    ),
}


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_schedules_follow_torch_schedulers_in_float64(name: str, digits64: Any, spec_for) -> None:
    kwargs, make_opt, make_sched, per_step = SCHEDULES[name]
    spec = spec_for("mlp", digits64, depth=1, width=8)
    cfg = TrainConfig(**{"epochs": 4, **kwargs})
    (res,) = train_restarts(models.build(spec), digits64, cfg, [2], CPU, torch.float64)
    ref = _reference(spec, digits64, cfg, 2, make_opt, make_sched, per_step)
    for k, v in ref.items():
        assert torch.allclose(res.state[k], v, rtol=0, atol=1e-12), (k, float((res.state[k] - v).abs().max()))
    # and the schedule did something: a constant rate ends elsewhere
    const = train_restarts(
        models.build(spec),
        digits64,
        TrainConfig(**{**cfg.to_dict(), "schedule": "constant"}),
        [2],
        CPU,
        torch.float64,
    )[0]
    assert not torch.allclose(const.state["head.weight"], res.state["head.weight"])


def test_warmup_then_cosine_factors() -> None:
    s = parse_schedule("linear-warmup:4+cosine")
    assert s == Schedule("cosine", warmup=4)
    factors = [s.factor(t, 1, 12) for t in range(1, 13)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert factors[4] == 1.0  # the cosine starts at its top after the warm-up
    assert factors[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 7 / 8)))
    assert all(a > b for a, b in zip(factors[4:], factors[5:], strict=False))
    assert parse_schedule("step:3:0.1").factor(50, 7, 100) == pytest.approx(0.01)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("warm", "unknown schedule"),
        ("cosine:3", "unknown schedule"),
        ("linear-warmup:5", "linear-warmup:STEPS+BASE needs STEPS"),
        ("linear-warmup:0+cosine", "linear-warmup:STEPS+BASE needs STEPS"),
        ("linear-warmup:²+cosine", "linear-warmup:STEPS+BASE needs STEPS"),  # a digit int() would refuse
        ("linear-warmup:10000000000+cosine", "linear-warmup:STEPS+BASE needs STEPS"),
        ("step:2", "step:EVERY:GAMMA needs"),
        ("step:0:0.5", "step:EVERY:GAMMA needs"),
        ("step:1:inf", "step:EVERY:GAMMA needs"),  # the learning rate would become infinite
        ("step:1:1e400", "step:EVERY:GAMMA needs"),
        ("step:1:nan", "step:EVERY:GAMMA needs"),
        ("step:1:-0.5", "step:EVERY:GAMMA needs"),
        ("linear-warmup:10+step:1:inf", "step:EVERY:GAMMA needs"),
    ],
)
def test_bad_schedules_are_refused(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_schedule(text)


def test_bad_schedule_is_one_error_line(cli, tiny_args, error_line, tmp_path: Path) -> None:
    line = error_line(cli(*tiny_args(tmp_path / "o", "--schedule", "cosine:9")))
    assert line.startswith("Error: unknown schedule 'cosine:9': --schedule")


def test_window_rule_ignores_one_flat_step_the_step_rule_stops_on() -> None:
    """A falling loss with one oscillating step: |l_t - l_(t-1)| < tol fires, the window rule does not."""
    losses = [1.0, 0.8, 0.8000001, 0.6, 0.45, 0.35, 0.3]
    step, window = LossWindow(parse_tol_rule("step")), LossWindow(parse_tol_rule("window:2"))
    fired_step = [step.push(v, 1e-6) for v in losses]
    fired_window = [window.push(v, 1e-6) for v in losses]
    assert fired_step.index(True) == 2
    assert not any(fired_window)
    flat = LossWindow(parse_tol_rule("window:2"))
    assert [flat.push(v, 1e-3) for v in [1.0, 0.5, 0.3, 0.3, 0.3, 0.3]] == [False] * 5 + [True]


def _run(digits: Any, spec_for, seeds: list[int] | None = None, model: str = "mlp", **cfg: Any) -> list[Any]:
    opts = {"depth": 1, "width": 8} if model == "mlp" else {"width": 4, "hidden": 16}
    spec = spec_for(model, digits, **opts)
    return train_restarts(models.build(spec), digits, TrainConfig(**cfg), seeds or [0], CPU, torch.float32)


def test_stop_reasons_name_the_rule_that_fired(digits: Any, spec_for) -> None:
    (window,) = _run(digits, spec_for, epochs=200, batch_size=None, tol=1e-2, tol_rule="window:3")
    assert window.stop_reason == "tol_window" and 6 <= window.epochs < 200
    (grad,) = _run(digits, spec_for, epochs=200, batch_size=None, grad_tol=1e3)
    assert grad.stop_reason == "grad_tol" and grad.epochs == 1
    (budget,) = _run(digits, spec_for, epochs=3, tol=1e-12, tol_rule="window:5")
    assert budget.stop_reason == "epochs"


def test_restore_best_keeps_the_best_validation_epoch(digits: Any, spec_for) -> None:
    """lr 2 overshoots: the last epoch is not the best, and the saved state is the best epoch's."""
    kw = dict(optimizer="sgd", lr=2.0, epochs=8, batch_size=16, trajectory_every=1)
    (best,) = _run(digits, spec_for, **kw, restore_best=True)
    (last,) = _run(digits, spec_for, **kw)
    vals = [e["val_loss"] for e in best.history]
    assert best.best_epoch == 1 + vals.index(min(vals)) and best.best_epoch < best.epochs
    assert best.final["val_loss"] == pytest.approx(min(vals), rel=1e-6)
    assert best.final["val_loss"] < last.final["val_loss"]
    at = best.trajectory_epochs.index(best.best_epoch)
    for name, snaps in best.trajectory.items():  # type: ignore[union-attr]
        assert torch.equal(best.state[name], snaps[at]), name
    assert last.best_epoch is None


CASES = {
    "adam-mlp": ("mlp", dict(optimizer="adam", lr=1e-2, batch_size=32)),
    "sgd-momentum-mlp": ("mlp", dict(optimizer="sgd", lr=0.1, momentum=0.9, batch_size=32)),
    "adamw-mlp": ("mlp", dict(optimizer="adamw", lr=1e-2, weight_decay=0.1, batch_size=32)),
    "sgd-nesterov-cnn": ("cnn", dict(optimizer="sgd", lr=0.05, momentum=0.9, nesterov=True, batch_size=64)),
    "adam-cnn": ("cnn", dict(optimizer="adam", lr=1e-3, batch_size=64)),
    "adam-mlp-full-batch": ("mlp", dict(optimizer="adam", lr=1e-2, batch_size=None, schedule="cosine")),
}


@pytest.mark.parametrize("case", list(CASES))
def test_batched_restarts_equal_sequential_runs(case: str, digits: Any, spec_for) -> None:
    """Three restarts trained together equal three runs of one restart each, to float rounding."""
    model, kw = CASES[case]
    together = _run(digits, spec_for, [5, 6, 7], model, epochs=2, **kw)
    for res in together:
        (alone,) = _run(digits, spec_for, [res.seed], model, epochs=2, **kw)
        for k, v in alone.state.items():
            assert torch.allclose(res.state[k], v, rtol=1e-5, atol=1e-6), (case, k)
        assert res.final == pytest.approx(alone.final, rel=1e-5, abs=1e-6)
    last = list(together[0].state)[-1]
    assert not torch.equal(together[0].state[last], together[1].state[last])  # the seeds do differ


def test_shards_write_what_one_run_writes(tmp_path: Path, cli, tiny_args, read_json) -> None:
    """With minibatches, two shards write byte for byte the files of one run (records less timings)."""
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert cli(*tiny_args(whole, "--restarts", "3")).exit_code == 0
    for shard in ("0/2", "1/2"):
        result = cli(*tiny_args(parts, "--restarts", "3", "--shard", shard))
        assert result.exit_code == 0, result.output
    names = sorted(p.name for p in whole.iterdir())
    assert names == sorted(p.name for p in parts.iterdir()) and len(names) == 6
    for name in names:
        if name.endswith(".safetensors"):
            assert (whole / name).read_bytes() == (parts / name).read_bytes(), name
        else:
            a, b = read_json(whole / name), read_json(parts / name)
            assert a["config"] == b["config"]
            strip = lambda h: [{k: v for k, v in e.items() if k != "wall_time_s"} for e in h]  # noqa: E731
            assert strip(a["results"].pop("history")) == strip(b["results"].pop("history"))
            assert a["results"] == b["results"]


def test_full_batch_shards_equal_one_run_to_float_rounding(tmp_path: Path, cli, tiny_args) -> None:
    """Full batch: one product serves every restart's first layer, so its width (the restarts in the
    process) can change the last bits; the shards agree with the run to float rounding."""
    from lscape_cli.storage.checkpoint import load_checkpoint

    whole, parts = tmp_path / "whole", tmp_path / "parts"
    args = ["--restarts", "3", "--batch-size", "full", "--epochs", "5"]
    assert cli(*tiny_args(whole, *args)).exit_code == 0
    for shard in ("0/2", "1/2"):
        assert cli(*tiny_args(parts, *args, "--shard", shard)).exit_code == 0
    for r in range(3):
        a = load_checkpoint(whole / f"model-r00{r}.safetensors")
        b = load_checkpoint(parts / f"model-r00{r}.safetensors")
        assert a.meta["training"] == b.meta["training"]
        for k, v in a.state.items():
            assert torch.allclose(v, b.state[k], rtol=1e-5, atol=1e-6), (r, k)


@pytest.mark.parametrize("shard", ["2/2", "1", "a/b", "0/4"])
def test_bad_shard_is_one_error_line(shard: str, cli, tiny_args, error_line, tmp_path: Path) -> None:
    line = error_line(cli(*tiny_args(tmp_path / "o", "--restarts", "3", "--shard", shard)))
    assert "--shard" in line


def test_pareto_flags_runs_that_stopped_on_their_budget(tmp_path: Path, cli, tiny_args, read_json) -> None:
    """A run given --tol that ran out of epochs is flagged; one whose --grad-tol fired is not."""
    runs = {"budget": ["--tol", "1e-12"], "converged": ["--grad-tol", "1e6"], "no-rule": []}
    for name, extra in runs.items():
        assert cli(*tiny_args(tmp_path / name, "--name", name, *extra)).exit_code == 0
    assert read_json(tmp_path / "budget" / "budget.train.json")["results"]["stopped_on_budget"] is True
    assert read_json(tmp_path / "converged" / "converged.train.json")["results"]["stop_reason"] == "grad_tol"
    out = tmp_path / "p.json"
    result = cli(
        "pareto",
        tmp_path,
        "--group-by",
        "model.depth",
        "--x",
        "train_loss",
        "--y",
        "val_loss",
        "--target",
        "test_loss",
        "--no-params",
        "--out",
        out,
        "--quiet",
    )
    assert result.exit_code == 0, result.output
    record = read_json(out)
    (group,) = record["results"]["groups"].values()
    assert [Path(p).name for p in group["stopped_on_budget"]] == ["budget.safetensors"]
    assert "1 of 3 runs stopped on their budget before their convergence rule fired" in record["warnings"]


def test_restore_best_without_a_validation_split_is_one_error_line(
    cli, tiny_args, error_line, tmp_path: Path
) -> None:
    line = error_line(cli(*tiny_args(tmp_path / "o", "--restore-best", "--val-size", "0")))
    assert line == (
        "Error: --patience and --restore-best need a validation split: --val-size 0 "
        "(give --val-size > 0 or drop them)"
    )


@pytest.mark.parametrize(
    "rule", ["window", "window:0", "steps", "window:x", "window:²", "window:10000000000", "window:-3"]
)
def test_bad_tol_rule_is_one_error_line(rule: str, cli, tiny_args, error_line, tmp_path: Path) -> None:
    line = error_line(cli(*tiny_args(tmp_path / "o", "--tol", "1e-3", "--tol-rule", rule)))
    assert line.startswith(f"Error: unknown tolerance rule {rule!r}: use step or window:K with K a count")
    assert ": --tol-rule (" in line
