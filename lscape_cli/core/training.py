"""Training engine: R restarts of one configuration trained as one batched computation.

Parameters of the R restarts are stacked along a leading dimension (``name -> (R, *shape)``). The
forward pass is ``torch.func.vmap`` of ``functional_call`` over that dimension (a Python loop over
restarts for models whose BatchNorm updates running statistics in train mode, which vmap cannot batch).
One backward pass of the summed per-restart losses gives every restart its own gradient, because the
restarts share no computation. The optimizers below are element-wise (SGD with momentum/Nesterov, Adam,
AdamW, with torch.optim's update rules), so each restart follows exactly the trajectory it would follow
alone, up to float rounding of the batched kernels.

Restart ``r`` uses seed ``seed + r`` for its initialisation and its minibatch order; it stops on its own
(tolerance, patience, divergence) while the others go on, its parameters frozen from then on.

Stopping rules (first that fires wins; the reason is recorded):

- ``epochs``: the epoch budget is spent.
- ``max_steps``: the step budget is spent.
- ``tol``: ``|l_e - l_{e-1}| < tol`` for consecutive epochs' training loss (the mean minibatch loss of the
  epoch; with full batch an epoch is one step, which is seed 000's ``|l_t - l_{t-1}| < 1e-6`` rule).
- ``patience``: the validation loss has not improved by ``min_delta`` for ``patience`` evaluations.
- ``diverged``: a non-finite training loss.
- ``interrupted``: Ctrl-C; the finished state is still returned so nothing is lost.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, vmap

from lscape_cli.core.objective import chunked_mean, loss_mean, loss_sum, num_correct
from lscape_cli.core.progress import ProgressFn

OPTIMIZERS = ("sgd", "adam", "adamw")


@dataclass(frozen=True)
class TrainConfig:
    """Every training option; stored verbatim in checkpoints and train records."""

    loss: str = "ce"  # "ce" or "mse" (seed 000 convention)
    optimizer: str = "sgd"  # "sgd", "adam", "adamw"
    lr: float = 0.01
    momentum: float = 0.0  # sgd only
    nesterov: bool = False  # sgd only
    beta1: float = 0.9  # adam/adamw
    beta2: float = 0.999  # adam/adamw
    eps: float = 1e-8  # adam/adamw
    weight_decay: float = 0.0  # L2 added to the gradient (sgd, adam); decoupled (adamw)
    batch_size: int | None = 128  # None: full batch (one step per epoch)
    epochs: int = 10
    max_steps: int | None = None
    tol: float | None = None  # stop when |train loss change between epochs| < tol
    patience: int | None = None  # stop after this many evaluations without val improvement
    min_delta: float = 0.0  # improvement that resets patience
    eval_every: int = 1  # evaluate train/val/test every this many epochs (and at the end)
    trajectory_every: int | None = None  # snapshot parameters every this many epochs
    init: str = "default"  # "default" (framework) or "normal:STD" (every parameter ~ N(0, STD^2))
    max_batch: int = 4096  # evaluation chunk size (memory bound; does not change results)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return asdict(self)


@dataclass
class RunResult:
    """One restart's outcome."""

    restart: int
    seed: int
    state: dict[str, torch.Tensor]  # full state_dict (parameters and buffers), on CPU
    stop_reason: str
    steps: int
    epochs: int
    final: dict[str, float]  # {split}_loss / {split}_accuracy, eval mode, whole split
    history: list[dict[str, float]] = field(default_factory=list)
    trajectory: dict[str, torch.Tensor] | None = None  # name -> (T, *shape)
    trajectory_epochs: list[int] = field(default_factory=list)
    trajectory_steps: list[int] = field(default_factory=list)


def init_parameters(model: nn.Module, init: str, seed: int) -> None:
    """Re-initialise ``model`` in place from ``seed`` alone (framework default or ``normal:STD``)."""
    if init == "default":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for module in model.modules():
                if module is not model and hasattr(module, "reset_parameters"):
                    module.reset_parameters()  # type: ignore[operator]
        return
    kind, _, arg = init.partition(":")
    if kind != "normal" or not arg:
        raise ValueError(f"unknown init {init!r}; use 'default' or 'normal:STD'")
    std = float(arg)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float32) * std)


def has_batchnorm(model: nn.Module) -> bool:
    """True when train-mode forward passes mutate running statistics."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


class StackedModel:
    """R copies of one architecture as stacked tensors, evaluated together."""

    def __init__(self, model: nn.Module, states: list[dict[str, torch.Tensor]]) -> None:
        self.model = model
        names = dict(model.named_parameters())
        self.params = {n: torch.stack([s[n] for s in states]).requires_grad_(True) for n in names}
        self.buffers = {n: torch.stack([s[n] for s in states]) for n, _ in model.named_buffers()}
        self.loop_train = has_batchnorm(model)
        self.r = len(states)

    def logits(self, x: torch.Tensor, train: bool, per_restart_x: bool) -> torch.Tensor:
        """(R, N, C) outputs; ``x`` is (N, ...) shared or (R, N, ...) per restart."""
        self.model.train(train)
        if train and self.loop_train:  # running-stat updates write into views of the stacked buffers
            outs = []
            for r in range(self.r):
                p = {n: t[r] for n, t in self.params.items()}
                b = {n: t[r] for n, t in self.buffers.items()}
                outs.append(functional_call(self.model, (p, b), (x[r] if per_restart_x else x,)))
            return torch.stack(outs)

        def one(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], xb: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = functional_call(self.model, (p, b), (xb,))
            return out

        return vmap(one, in_dims=(0, 0, 0 if per_restart_x else None))(self.params, self.buffers, x)

    @torch.no_grad()
    def evaluate(
        self, x: torch.Tensor, y: torch.Tensor, loss: str, max_batch: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-restart mean loss and accuracy over a split, eval mode, chunked: two (R,) tensors."""

        def fn(xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            out = self.logits(xb, train=False, per_restart_x=False)
            sums = torch.stack([loss_sum(out[r], yb, loss) for r in range(self.r)])
            return sums, num_correct(out, yb)

        return chunked_mean(fn, x, y, max_batch)

    def state(self, r: int) -> dict[str, torch.Tensor]:
        """Restart ``r``'s state_dict in the module's key order, on CPU."""
        merged = {**self.params, **self.buffers}
        return {k: merged[k][r].detach().to("cpu").clone() for k in self.model.state_dict()}


class Optimizer:
    """Element-wise optimizers on stacked parameters, following torch.optim's update rules."""

    def __init__(self, cfg: TrainConfig, params: dict[str, torch.Tensor]) -> None:
        self.cfg = cfg
        self.t = 0
        self.m = {n: torch.zeros_like(p) for n, p in params.items()}
        self.v = {n: torch.zeros_like(p) for n, p in params.items()} if cfg.optimizer != "sgd" else {}

    @torch.no_grad()
    def step(self, params: dict[str, torch.Tensor], active: torch.Tensor) -> None:
        """Update the restarts where ``active`` (R,) is True; the others stay frozen."""
        c = self.cfg
        self.t += 1
        for n, p in params.items():
            g = p.grad
            assert g is not None  # step() follows backward()
            mask = active.view(-1, *([1] * (p.dim() - 1)))
            if c.optimizer == "adamw":
                new_p = p * (1 - c.lr * c.weight_decay)
            else:
                new_p = p.clone()
                g = g + c.weight_decay * p if c.weight_decay else g
            if c.optimizer == "sgd":
                if c.momentum:
                    buf = g.clone() if self.t == 1 else self.m[n] * c.momentum + g
                    self.m[n] = torch.where(mask, buf, self.m[n])
                    g = g + c.momentum * buf if c.nesterov else buf
                new_p = new_p - c.lr * g
            else:
                m = self.m[n].lerp(g, 1 - c.beta1)
                v = self.v[n] * c.beta2 + (1 - c.beta2) * g * g
                self.m[n] = torch.where(mask, m, self.m[n])
                self.v[n] = torch.where(mask, v, self.v[n])
                bc1 = 1 - c.beta1**self.t
                bc2 = 1 - c.beta2**self.t
                new_p = new_p - (c.lr / bc1) * m / (v.sqrt() / math.sqrt(bc2) + c.eps)
            p.copy_(torch.where(mask, new_p, p))
            p.grad = None


@dataclass
class _Track:
    """Per-restart bookkeeping during training."""

    stop: list[str | None]
    steps: list[int]
    epochs: list[int]
    prev_loss: list[float]
    best_val: list[float]
    bad_evals: list[int]
    history: list[list[dict[str, float]]]
    snaps: list[list[dict[str, torch.Tensor]]]
    snap_epochs: list[list[int]]
    snap_steps: list[list[int]]


def train_restarts(
    model: nn.Module,
    splits: Any,
    cfg: TrainConfig,
    seeds: list[int],
    device: torch.device,
    dtype: torch.dtype,
    on_epoch: ProgressFn | None = None,
    initial_state: Callable[[int], dict[str, torch.Tensor]] | None = None,
) -> list[RunResult]:
    """Train one restart per seed, all together; returns one :class:`RunResult` per seed.

    Args:
        model: an instance of the architecture (its own weights are ignored).
        splits: a :class:`~lscape_cli.datasets.Splits` on ``device``/``dtype``.
        cfg: the training configuration.
        seeds: one seed per restart (initialisation and minibatch order).
        device: where to train.
        dtype: parameter dtype.
        on_epoch: called after every epoch with a summary dict (for progress bars).
        initial_state: seed -> the restart's initial ``state_dict`` (e.g. a user factory's own
            initialisation); default: ``cfg.init`` applied to ``model``.
    """
    if splits.x["train"].dtype != dtype:
        raise ValueError(f"data dtype {splits.x['train'].dtype} differs from parameter dtype {dtype}")
    states = []
    model.to(
        device="cpu", dtype=torch.float32
    )  # initialise in float32 on CPU: same draws on every device/dtype
    for s in seeds:
        if initial_state is None:
            init_parameters(model, cfg.init, s)
        else:
            model.load_state_dict(initial_state(s))
        states.append(
            {
                k: v.detach().clone().to(device=device, dtype=dtype if v.is_floating_point() else v.dtype)
                for k, v in model.state_dict().items()
            }
        )
    model.to(device=device, dtype=dtype)
    stacked = StackedModel(model, states)
    opt = Optimizer(cfg, stacked.params)
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    r = len(seeds)
    tr = _Track(
        stop=[None] * r,
        steps=[0] * r,
        epochs=[0] * r,
        prev_loss=[math.inf] * r,
        best_val=[math.inf] * r,
        bad_evals=[0] * r,
        history=[[] for _ in range(r)],
        snaps=[[] for _ in range(r)],
        snap_epochs=[[] for _ in range(r)],
        snap_steps=[[] for _ in range(r)],
    )
    if cfg.trajectory_every:
        _snapshot(stacked, tr, 0, range(r))
    start = time.perf_counter()
    try:
        for epoch in range(1, cfg.epochs + 1):
            ran = [i for i, s in enumerate(tr.stop) if s is None]
            for i in ran:
                tr.epochs[i] = epoch
            active = torch.tensor([s is None for s in tr.stop], device=device)
            run_loss, grad_norm = _train_epoch(stacked, opt, splits, cfg, gens, active, tr)
            _end_epoch(stacked, splits, cfg, tr, epoch, ran, run_loss, grad_norm, start)
            if on_epoch is not None:
                on_epoch(
                    {
                        "epoch": epoch,
                        "epochs": cfg.epochs,
                        "active": sum(s is None for s in tr.stop),
                        "train_loss": [float(v) for v in run_loss],
                    }
                )
            if all(s is not None for s in tr.stop):
                break
    except KeyboardInterrupt:
        tr.stop = [s or "interrupted" for s in tr.stop]
    tr.stop = [s or "epochs" for s in tr.stop]
    return _finish(stacked, splits, cfg, seeds, tr, start)


def _train_epoch(
    stacked: StackedModel,
    opt: Optimizer,
    splits: Any,
    cfg: TrainConfig,
    gens: list[torch.Generator],
    active: torch.Tensor,
    tr: _Track,
) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = splits.x["train"], splits.y["train"]
    n = y.shape[0]
    bs = n if cfg.batch_size is None else min(cfg.batch_size, n)
    full = bs == n and cfg.batch_size is None
    perms = None if full else torch.stack([torch.randperm(n, generator=g) for g in gens]).to(x.device)
    loss_acc = torch.zeros(stacked.r, device=x.device, dtype=x.dtype)
    gnorm_acc = torch.zeros_like(loss_acc)
    n_steps = torch.zeros_like(loss_acc)  # per restart: a restart stopped mid-epoch averages its own steps
    went_bad = torch.zeros(stacked.r, dtype=torch.bool, device=x.device)
    for start in range(0, n, bs):
        if cfg.max_steps is not None and max(tr.steps) >= cfg.max_steps:
            break
        if full:
            out = stacked.logits(x, train=True, per_restart_x=False)
            losses = torch.stack([loss_mean(out[i], y, cfg.loss) for i in range(stacked.r)])
        else:
            idx = perms[:, start : start + bs]  # type: ignore[index]
            out = stacked.logits(x[idx], train=True, per_restart_x=True)
            yb = y[idx]
            losses = torch.stack([loss_mean(out[i], yb[i], cfg.loss) for i in range(stacked.r)])
        finite = torch.isfinite(losses.detach())
        newly_bad = active & ~finite
        went_bad |= newly_bad
        for i in torch.nonzero(newly_bad).flatten().tolist():
            tr.stop[i] = "diverged"
        active = active & finite
        torch.where(active, losses, torch.zeros_like(losses)).sum().backward()  # type: ignore[no-untyped-call]
        gnorm = torch.sqrt(sum(p.grad.flatten(1).pow(2).sum(1) for p in stacked.params.values()))  # type: ignore[union-attr, arg-type, misc]
        opt.step(stacked.params, active)
        loss_acc += torch.where(active, losses.detach(), 0.0)
        gnorm_acc += torch.where(active, gnorm, 0.0)
        n_steps += active.to(n_steps.dtype)
        for i in torch.nonzero(active).flatten().tolist():
            tr.steps[i] += 1
    nan = torch.full_like(loss_acc, math.nan)  # an epoch that ended in a non-finite loss has no finite mean
    steps = n_steps.clamp(min=1)
    return torch.where(went_bad, nan, loss_acc / steps), torch.where(went_bad, nan, gnorm_acc / steps)


def _end_epoch(
    stacked: StackedModel,
    splits: Any,
    cfg: TrainConfig,
    tr: _Track,
    epoch: int,
    ran: list[int],
    run_loss: torch.Tensor,
    grad_norm: torch.Tensor,
    start: float,
) -> None:
    """History entries for the restarts that ran this epoch, then their stopping rules."""
    do_eval = epoch % cfg.eval_every == 0 or epoch == cfg.epochs
    metrics = _eval_all(stacked, splits, cfg) if do_eval else None
    for i in ran:
        if tr.stop[i] is None:
            tr.stop[i] = _stop_rule(cfg, tr, i, float(run_loss[i]), metrics)
        if metrics is None and tr.stop[i] is None:
            continue  # history is kept on evaluation epochs and the epoch a restart stops
        entry = {
            "epoch": epoch,
            "step": tr.steps[i],
            "train_loss_running": float(run_loss[i]),
            "grad_norm": float(grad_norm[i]),
            "wall_time_s": time.perf_counter() - start,
        }
        if metrics is not None:
            entry.update({k: float(v[i]) for k, v in metrics.items()})
        tr.history[i].append(entry)
    if cfg.trajectory_every and (epoch % cfg.trajectory_every == 0 or epoch == cfg.epochs):
        _snapshot(stacked, tr, epoch, ran)


def _stop_rule(
    cfg: TrainConfig, tr: _Track, i: int, loss: float, metrics: dict[str, torch.Tensor] | None
) -> str | None:
    """Which rule, if any, stops restart ``i`` after this epoch."""
    reason = None
    if cfg.tol is not None and abs(loss - tr.prev_loss[i]) < cfg.tol:
        reason = "tol"
    tr.prev_loss[i] = loss
    if cfg.patience is not None and metrics is not None and "val_loss" in metrics:
        val = float(metrics["val_loss"][i])
        if val < tr.best_val[i] - cfg.min_delta:
            tr.best_val[i], tr.bad_evals[i] = val, 0
        else:
            tr.bad_evals[i] += 1
            if tr.bad_evals[i] >= cfg.patience:
                reason = reason or "patience"
    if cfg.max_steps is not None and tr.steps[i] >= cfg.max_steps:
        reason = reason or "max_steps"
    return reason


def _eval_all(stacked: StackedModel, splits: Any, cfg: TrainConfig) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for split in ("train", "val", "test"):
        if splits.y[split].shape[0] == 0:
            continue
        loss, acc = stacked.evaluate(splits.x[split], splits.y[split], cfg.loss, cfg.max_batch)
        out[f"{split}_loss"], out[f"{split}_accuracy"] = loss, acc
    return out


def _snapshot(stacked: StackedModel, tr: _Track, epoch: int, which: Any) -> None:
    for i in which:
        if tr.snap_epochs[i] and tr.snap_epochs[i][-1] == epoch:
            continue
        tr.snap_epochs[i].append(epoch)
        tr.snap_steps[i].append(tr.steps[i])
        tr.snaps[i].append({n: p[i].detach().to("cpu").clone() for n, p in stacked.params.items()})


def _finish(
    stacked: StackedModel, splits: Any, cfg: TrainConfig, seeds: list[int], tr: _Track, start: float
) -> list[RunResult]:
    metrics = _eval_all(stacked, splits, cfg)
    if cfg.trajectory_every:
        for i in range(stacked.r):
            _snapshot(stacked, tr, tr.epochs[i], [i])
    results = []
    for i, seed in enumerate(seeds):
        traj = None
        if cfg.trajectory_every:
            traj = {n: torch.stack([s[n] for s in tr.snaps[i]]) for n in stacked.params}
        results.append(
            RunResult(
                restart=i,
                seed=seed,
                state=stacked.state(i),
                stop_reason=tr.stop[i] or "epochs",
                steps=tr.steps[i],
                epochs=tr.epochs[i],
                final={k: float(v[i]) for k, v in metrics.items()},
                history=tr.history[i],
                trajectory=traj,
                trajectory_epochs=tr.snap_epochs[i],
                trajectory_steps=tr.snap_steps[i],
            )
        )
    return results
