"""Training engine: R restarts of one configuration trained as one batched computation.

The R restarts are stacked (:mod:`.stacked`: one forward over all of them, element-wise
optimizers with torch.optim's update rules). One backward pass of the summed per-restart losses gives
every restart its own gradient, because the restarts share no computation, so each restart follows the
trajectory it would follow alone, up to float rounding of the batched kernels.

Restart ``r`` uses seed ``seed + r`` for its initialisation and its minibatch order; it stops on its own
(tolerance, patience, divergence) while the others go on, its parameters frozen from then on.

Stopping rules (first that fires wins; the reason is recorded):

- ``epochs``: the epoch budget is spent.
- ``max_steps``: the step budget is spent.
- ``tol`` / ``tol_window`` / ``grad_tol``: the convergence rules of :mod:`.train_rules`
  (``--tol-rule step``: ``|l_e - l_{e-1}| < tol`` for consecutive epochs' training loss, the mean minibatch
  loss of the epoch, which with full batch is seed 000's ``|l_t - l_{t-1}| < 1e-6`` rule; ``window:K``: the
  relative change of the K-epoch mean loss; ``grad_tol``: the epoch's mean gradient norm below a threshold).
- ``patience``: the validation loss has not improved by ``min_delta`` for ``patience`` evaluations.
- ``diverged``: a non-finite training loss.
- ``interrupted``: Ctrl-C; the finished state is still returned so nothing is lost.

With ``restore_best`` a restart's returned state is the one of its best validation evaluation
(``best_epoch``), and its final metrics are measured on that state.

With a :class:`~lscape_cli.core.training.tracking.Tracker`, each restart is probed on epoch 1, every
``spec.every`` epochs and on the epoch it stops; the probe results go into that epoch's history entry
under ``tracked`` (and the cost under ``tracking_cost``).

With a :class:`ResumeStore`, the run saves a :class:`TrainState` at the end of an epoch whenever the store
says one is due (``lscape train`` keeps it in ``OUT/NAME.resume.pt``, every ``--resume-every`` seconds)
and, when the store holds one, continues after that epoch: parameters, buffers, optimizer moments and
step count, every restart's minibatch generator and all bookkeeping are put back, so the run ends with
the state an uninterrupted run reaches (bit for bit on CPU; only wall times differ).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Protocol, TypedDict, cast

import torch
from torch import nn

from lscape_cli.core.losses import LossDefinition, as_loss
from lscape_cli.core.objective import loss_mean
from lscape_cli.core.progress import ProgressFn
from lscape_cli.core.training.stacked import Optimizer, StackedModel
from lscape_cli.core.training.tracking import Tracker, TrackingCost
from lscape_cli.core.training.train_rules import LossWindow, parse_schedule, parse_tol_rule

OPTIMIZERS = ("sgd", "adam", "adamw")


class TrainConfigDict(TypedDict):
    """:meth:`TrainConfig.to_dict`: every field (see :class:`TrainConfig` for each one's meaning)."""

    loss: str
    optimizer: str
    lr: float
    momentum: float
    nesterov: bool
    beta1: float
    beta2: float
    eps: float
    weight_decay: float
    batch_size: int | None
    epochs: int
    max_steps: int | None
    tol: float | None
    tol_rule: str
    grad_tol: float | None
    schedule: str
    restore_best: bool
    patience: int | None
    min_delta: float
    eval_every: int
    trajectory_every: int | None
    init: str
    max_batch: int


class TrainConfigDescription(TrainConfigDict):
    """:meth:`TrainConfig.describe`: the fields and the loss's definition."""

    loss_definition: LossDefinition


class HistoryEntry(TypedDict, total=False):
    """One entry of a restart's history: an evaluation, a tracked epoch, or the epoch it stopped."""

    epoch: int
    step: int
    lr: float
    train_loss_running: float
    grad_norm: float
    wall_time_s: float
    train_loss: float  # {split}_loss and {split}_accuracy on evaluation epochs (eval mode, whole split)
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    test_loss: float
    test_accuracy: float
    tracked: dict[str, object]  # --track: quantity -> its probe results entry (core.probe.results)
    tracking_cost: TrackingCost


class TrackState(TypedDict):
    """:meth:`_Track.state`: a run's per-restart bookkeeping as plain containers (for :class:`TrainState`)."""

    stop: list[str | None]
    steps: list[int]
    epochs: list[int]
    best_val: list[float]
    best_epoch: list[int | None]
    bad_evals: list[int]
    history: list[list[HistoryEntry]]
    snaps: list[list[dict[str, torch.Tensor]]]
    snap_epochs: list[list[int]]
    snap_steps: list[list[int]]
    tracking_s: list[float]
    windows: list[list[float]]
    best_state: list[dict[str, torch.Tensor] | None]
    last_eval: tuple[int, dict[str, torch.Tensor]] | None


@dataclass(frozen=True)
class TrainConfig:
    """Every training option; stored verbatim in checkpoints and train records."""

    loss: str = "ce"  # "ce", "mse" (seed 000 convention), "bce" or a core.losses.Loss (user, smoothing)
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
    tol: float | None = None  # convergence threshold of tol_rule
    tol_rule: str = "step"  # "step" (|l_e - l_{e-1}| < tol) or "window:K" (relative change of K-epoch means)
    grad_tol: float | None = None  # stop when the epoch's mean gradient norm < grad_tol
    schedule: str = "constant"  # learning-rate schedule (train_rules.parse_schedule)
    restore_best: bool = False  # return the state of the best validation evaluation
    patience: int | None = None  # stop after this many evaluations without val improvement
    min_delta: float = 0.0  # improvement that resets patience
    eval_every: int = 1  # evaluate train/val/test every this many epochs (and at the end)
    trajectory_every: int | None = None  # snapshot parameters every this many epochs
    init: str = "default"  # "default" (framework) or "normal:STD" (every parameter ~ N(0, STD^2))
    max_batch: int = 4096  # evaluation chunk size (memory bound; does not change results)

    def to_dict(self) -> TrainConfigDict:
        """Plain-JSON form (``TrainConfig(**cfg.to_dict())`` rebuilds it)."""
        return cast(TrainConfigDict, asdict(self))  # the fields, in order (tests/test_report_pointers.py)

    def describe(self) -> TrainConfigDescription:
        """:meth:`to_dict` plus the loss's definition (units, settings; a user loss's file and sha256)."""
        return {**self.to_dict(), "loss_definition": as_loss(self.loss).describe()}


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
    history: list[HistoryEntry] = field(default_factory=list)
    trajectory: dict[str, torch.Tensor] | None = None  # name -> (T, *shape)
    trajectory_epochs: list[int] = field(default_factory=list)
    trajectory_steps: list[int] = field(default_factory=list)
    best_epoch: int | None = None  # with restore_best: the epoch whose state was returned
    tracking_s: float = 0.0  # wall seconds spent probing this restart (Tracker)


@dataclass
class TrainState:
    """Where a run stands after a whole epoch: everything it needs to continue bit-identically.

    Plain containers of tensors, numbers and strings only (``torch.load(weights_only=True)`` reads it).
    """

    epoch: int  # the last finished epoch
    params: dict[str, torch.Tensor]  # stacked (R, *shape), on CPU
    buffers: dict[str, torch.Tensor]
    opt_t: int  # optimizer steps taken
    opt_m: dict[str, torch.Tensor]  # first moments (sgd: momentum buffers)
    opt_v: dict[str, torch.Tensor]  # second moments (adam, adamw)
    generators: list[torch.Tensor]  # each restart's minibatch generator state
    rng: torch.Tensor  # the global CPU generator (a user model's dropout)
    track: TrackState  # the per-restart bookkeeping (:meth:`_Track.state`)
    elapsed_s: float  # training wall time so far

    def to_dict(self) -> dict[str, object]:
        """The fields as a plain dict (no copies)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


class ResumeStore(Protocol):
    """Where a run keeps its :class:`TrainState` while it trains (``lscape train --resume``)."""

    def load(self) -> TrainState | None:
        """The state to continue from, or None to start at epoch 1."""

    def due(self) -> bool:
        """Whether to save the state at the end of this epoch."""

    def save(self, state: TrainState) -> None:
        """Keep ``state`` (it replaces the one kept before)."""

    def damaged(self, exc: Exception) -> Exception:
        """The error to raise when the state :meth:`load` gave does not fit the run (``exc`` says why)."""


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


@dataclass
class _Track:
    """Per-restart bookkeeping during training."""

    r: int
    cfg: TrainConfig
    stop: list[str | None] = field(init=False)
    steps: list[int] = field(init=False)
    epochs: list[int] = field(init=False)
    windows: list[LossWindow] = field(init=False)
    best_val: list[float] = field(init=False)
    best_epoch: list[int | None] = field(init=False)
    best_state: list[dict[str, torch.Tensor] | None] = field(init=False)
    bad_evals: list[int] = field(init=False)
    history: list[list[HistoryEntry]] = field(init=False)
    snaps: list[list[dict[str, torch.Tensor]]] = field(init=False)
    snap_epochs: list[list[int]] = field(init=False)
    snap_steps: list[list[int]] = field(init=False)
    tracking_s: list[float] = field(init=False)
    last_eval: tuple[int, dict[str, torch.Tensor]] | None = None  # (epoch, metrics) of the latest evaluation

    def __post_init__(self) -> None:
        r, rule = self.r, parse_tol_rule(self.cfg.tol_rule)
        self.stop, self.steps, self.epochs = [None] * r, [0] * r, [0] * r
        self.windows = [LossWindow(rule) for _ in range(r)]
        self.best_val, self.best_epoch, self.best_state = [math.inf] * r, [None] * r, [None] * r
        self.bad_evals, self.tracking_s = [0] * r, [0.0] * r
        self.history = [[] for _ in range(r)]
        self.snaps, self.snap_epochs, self.snap_steps = (
            [[] for _ in range(r)],
            [[] for _ in range(r)],
            [[] for _ in range(r)],
        )

    def state(self) -> TrackState:
        """The bookkeeping as plain containers, tensors on CPU (for :class:`TrainState`)."""
        cpu = _to_device
        out = cast(TrackState, {n: getattr(self, n) for n in _TRACK_FIELDS})  # the rest follows
        out["windows"] = [list(w.losses) for w in self.windows]
        out["best_state"] = [None if s is None else cpu(s, "cpu") for s in self.best_state]
        out["last_eval"] = (
            None if self.last_eval is None else (self.last_eval[0], cpu(self.last_eval[1], "cpu"))
        )
        return out

    def restore(self, saved: TrackState, device: torch.device) -> None:
        """Take the bookkeeping back from :meth:`state`'s output."""
        values: dict[str, object] = dict(saved)
        for n in _TRACK_FIELDS:
            setattr(self, n, values[n])
        for w, losses in zip(self.windows, saved["windows"], strict=True):
            w.losses.extend(losses)
        self.best_state = [None if s is None else _to_device(s, device) for s in saved["best_state"]]
        last = saved["last_eval"]
        self.last_eval = None if last is None else (last[0], _to_device(last[1], device))


_TRACK_FIELDS = (
    "stop",
    "steps",
    "epochs",
    "best_val",
    "best_epoch",
    "bad_evals",
    "history",
    "snaps",
    "snap_epochs",
    "snap_steps",
    "tracking_s",
)


def _to_device(tensors: dict[str, torch.Tensor], device: torch.device | str) -> dict[str, torch.Tensor]:
    return {n: t.detach().to(device) for n, t in tensors.items()}


def initial_states(
    model: nn.Module,
    init: str,
    seeds: list[int],
    device: torch.device,
    dtype: torch.dtype,
    initial_state: Callable[[int], dict[str, torch.Tensor]] | None = None,
) -> list[dict[str, torch.Tensor]]:
    """One state_dict per seed, drawn in float32 on CPU (the same draws on every device and dtype).

    ``initial_state``: seed -> the restart's initial ``state_dict``; default: ``init`` applied to ``model``.
    """
    model.to(device="cpu", dtype=torch.float32)
    states = []
    for s in seeds:
        if initial_state is None:
            init_parameters(model, init, s)
        else:
            model.load_state_dict(initial_state(s))
        states.append(
            {
                k: v.detach().clone().to(device=device, dtype=dtype if v.is_floating_point() else v.dtype)
                for k, v in model.state_dict().items()
            }
        )
    model.to(device=device, dtype=dtype)
    return states


def shard_restarts(restarts: int, shard: str | None) -> range:
    """Restart indices of shard ``"I/N"`` (contiguous, sizes differ by at most one); all without a shard.

    A ``range``, not a list: a refused ``--restarts 1e15`` must not allocate its indices first.
    """
    if shard is None:
        return range(restarts)
    i, _, n = shard.partition("/")
    if not (i.isdigit() and n.isdigit() and int(i) < int(n)):
        raise ValueError(f"invalid shard {shard!r}; give I/N with 0 <= I < N, e.g. 0/4")
    k, m = int(i), int(n)
    if m > restarts:
        raise ValueError(f"{m} shards of {restarts} restart(s) would leave some empty")
    return range(k * restarts // m, (k + 1) * restarts // m)


def relabel(results: list[RunResult], restarts: Sequence[int]) -> list[RunResult]:
    """Give each result its restart index in the whole sweep (a shard trains a slice of it)."""
    return [replace(r, restart=k) for r, k in zip(results, restarts, strict=True)]


def total_steps(cfg: TrainConfig, n: int) -> int:
    """The step budget the schedule spans: epochs x steps per epoch, capped by ``max_steps``."""
    per_epoch = 1 if cfg.batch_size is None else math.ceil(n / min(cfg.batch_size, n))
    budget = cfg.epochs * per_epoch
    return budget if cfg.max_steps is None else min(budget, cfg.max_steps)


def train_restarts(
    model: nn.Module,
    splits: Any,
    cfg: TrainConfig,
    seeds: list[int],
    device: torch.device,
    dtype: torch.dtype,
    on_epoch: ProgressFn | None = None,
    tracker: Tracker | None = None,
    initial_state: Callable[[int], dict[str, torch.Tensor]] | None = None,
    store: ResumeStore | None = None,
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
        tracker: probes each restart during training (see the module docstring).
        initial_state: seed -> the restart's initial ``state_dict`` (e.g. a user factory's own
            initialisation); default: ``cfg.init`` applied to ``model``.
        store: keeps the state at the end of epochs and gives back the state to continue from.
    """
    if splits.x["train"].is_floating_point() and splits.x["train"].dtype != dtype:  # token ids: int64
        raise ValueError(f"data dtype {splits.x['train'].dtype} differs from parameter dtype {dtype}")
    states = initial_states(model, cfg.init, seeds, device, dtype, initial_state)
    stacked = StackedModel(model, states)
    opt = Optimizer(cfg, stacked.params)
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    tr = _Track(len(seeds), cfg)
    saved = None if store is None else store.load()
    if saved is not None and store is not None:
        try:
            _restore(saved, stacked, opt, gens, tr, device)
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as exc:
            raise store.damaged(exc) from exc
    elif cfg.trajectory_every:
        _snapshot(stacked, tr, 0, range(tr.r))
    start = time.perf_counter() - (0.0 if saved is None else saved.elapsed_s)
    try:
        for epoch in range(1 if saved is None else saved.epoch + 1, cfg.epochs + 1):
            ran = [i for i, s in enumerate(tr.stop) if s is None]
            for i in ran:
                tr.epochs[i] = epoch
            active = torch.tensor([s is None for s in tr.stop], device=device)
            run_loss, grad_norm, lr = _train_epoch(stacked, opt, splits, cfg, gens, active, tr, epoch)
            _end_epoch(stacked, splits, cfg, tr, epoch, ran, (run_loss, grad_norm, lr), start, tracker)
            if on_epoch is not None:
                on_epoch(
                    {
                        "epoch": epoch,
                        "epochs": cfg.epochs,
                        "active": sum(s is None for s in tr.stop),
                        "train_loss": run_loss.tolist(),
                    }
                )
            if all(s is not None for s in tr.stop):
                break
            if store is not None and epoch < cfg.epochs and store.due():
                store.save(_capture(epoch, stacked, opt, gens, tr, time.perf_counter() - start))
    except KeyboardInterrupt:
        tr.stop = [s or "interrupted" for s in tr.stop]
    tr.stop = [s or "epochs" for s in tr.stop]
    return _finish(stacked, splits, cfg, seeds, tr)


def _capture(
    epoch: int, stacked: StackedModel, opt: Optimizer, gens: list[torch.Generator], tr: _Track, elapsed: float
) -> TrainState:
    """The run's state after ``epoch`` (tensors on CPU)."""
    return TrainState(
        epoch=epoch,
        params=_to_device(stacked.params, "cpu"),
        buffers=_to_device(stacked.buffers, "cpu"),
        opt_t=opt.t,
        opt_m=_to_device(opt.m, "cpu"),
        opt_v=_to_device(opt.v, "cpu"),
        generators=[g.get_state() for g in gens],
        rng=torch.random.get_rng_state(),
        track=tr.state(),
        elapsed_s=elapsed,
    )


@torch.no_grad()
def _restore(
    saved: TrainState,
    stacked: StackedModel,
    opt: Optimizer,
    gens: list[torch.Generator],
    tr: _Track,
    device: torch.device,
) -> None:
    """Put a saved state back into the freshly built stack, optimizer, generators and bookkeeping."""
    for live, kept in (
        (stacked.params, saved.params),
        (stacked.buffers, saved.buffers),
        (opt.m, saved.opt_m),
        (opt.v, saved.opt_v),
    ):
        if set(live) != set(kept):
            raise ValueError("the saved state holds other tensors than this model and optimizer")
        for n, t in live.items():
            t.copy_(kept[n])
    opt.t = saved.opt_t
    for g, state in zip(gens, saved.generators, strict=True):
        g.set_state(state)
    torch.random.set_rng_state(saved.rng)
    tr.restore(saved.track, device)


def _train_epoch(
    stacked: StackedModel,
    opt: Optimizer,
    splits: Any,
    cfg: TrainConfig,
    gens: list[torch.Generator],
    active: torch.Tensor,
    tr: _Track,
    epoch: int,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    x, y = splits.x["train"], splits.y["train"]
    n = y.shape[0]
    bs = n if cfg.batch_size is None else min(cfg.batch_size, n)
    full = bs == n and cfg.batch_size is None
    perms = None if full else torch.stack([torch.randperm(n, generator=g) for g in gens]).to(x.device)
    schedule, budget = parse_schedule(cfg.schedule), total_steps(cfg, n)
    loss_acc = torch.zeros(stacked.r, device=x.device, dtype=dtype_of(stacked))
    gnorm_acc = torch.zeros_like(loss_acc)
    n_steps = torch.zeros_like(loss_acc)  # per restart: a restart stopped mid-epoch averages its own steps
    went_bad = torch.zeros(stacked.r, dtype=torch.bool, device=x.device)
    lr = cfg.lr * schedule.factor(max(opt.t, 1), epoch, budget)
    for start in range(0, n, bs):
        if cfg.max_steps is not None and max(tr.steps) >= cfg.max_steps:
            break
        if full:
            losses = _losses(stacked.logits(x, train=True, per_restart_x=False), y, cfg.loss, shared=True)
        else:
            idx = perms[:, start : start + bs]  # type: ignore[index]
            losses = _losses(stacked.logits(x[idx], train=True, per_restart_x=True), y[idx], cfg.loss)
        finite = torch.isfinite(losses.detach())
        newly_bad = active & ~finite
        went_bad |= newly_bad
        for i in torch.nonzero(newly_bad).flatten().tolist():
            tr.stop[i] = "diverged"
        active = active & finite
        torch.where(active, losses, torch.zeros_like(losses)).sum().backward()  # type: ignore[no-untyped-call]
        gnorm = torch.sqrt(sum(p.grad.flatten(1).pow(2).sum(1) for p in stacked.params.values()))  # type: ignore[union-attr, arg-type, misc]
        lr = cfg.lr * schedule.factor(opt.t + 1, epoch, budget)
        opt.step(stacked.params, active, lr)
        loss_acc += torch.where(active, losses.detach(), 0.0)
        gnorm_acc += torch.where(active, gnorm, 0.0)
        n_steps += active.to(n_steps.dtype)
        for i in torch.nonzero(active).flatten().tolist():
            tr.steps[i] += 1
    nan = torch.full_like(loss_acc, math.nan)  # an epoch that ended in a non-finite loss has no finite mean
    steps = n_steps.clamp(min=1)
    return torch.where(went_bad, nan, loss_acc / steps), torch.where(went_bad, nan, gnorm_acc / steps), lr


def dtype_of(stacked: StackedModel) -> torch.dtype:
    """The restarts' floating dtype (the inputs may be integer token ids)."""
    return next(iter(stacked.params.values())).dtype


def _losses(out: torch.Tensor, y: torch.Tensor, loss: str, shared: bool = False) -> torch.Tensor:
    """(R,) mean losses of (R, N, C) outputs against labels (N,) shared or (R, N) per restart."""
    return torch.stack([loss_mean(out[i], y if shared else y[i], loss) for i in range(out.shape[0])])


def _end_epoch(
    stacked: StackedModel,
    splits: Any,
    cfg: TrainConfig,
    tr: _Track,
    epoch: int,
    ran: list[int],
    epoch_stats: tuple[torch.Tensor, torch.Tensor, float],
    start: float,
    tracker: Tracker | None,
) -> None:
    """History entries for the restarts that ran this epoch, then their stopping rules."""
    run_loss, grad_norm, lr = epoch_stats
    do_eval = epoch % cfg.eval_every == 0 or epoch == cfg.epochs
    metrics = _eval_all(stacked, splits, cfg) if do_eval else None
    if metrics is not None:
        tr.last_eval = (epoch, metrics)
    losses, gnorms = run_loss.tolist(), grad_norm.tolist()
    for i in ran:
        if tr.stop[i] is None:
            tr.stop[i] = _stop_rule(cfg, tr, i, losses[i], gnorms[i], metrics)
        if metrics is not None:
            _keep_best(stacked, cfg, tr, i, epoch, metrics)
        last = tr.stop[i] is not None or epoch == cfg.epochs
        track = tracker is not None and tr.stop[i] != "diverged" and (last or tracker.spec.due(epoch))
        if metrics is None and not last and not track:
            continue  # history is kept on evaluation and tracked epochs and the epoch a restart stops
        entry: HistoryEntry = {
            "epoch": epoch,
            "step": tr.steps[i],
            "lr": lr,
            "train_loss_running": losses[i],
            "grad_norm": gnorms[i],
            "wall_time_s": time.perf_counter() - start,
        }
        if metrics is not None:
            entry.update(cast(HistoryEntry, {k: float(v[i]) for k, v in metrics.items()}))  # {split}_*
        if track:
            _track(stacked, tracker, tr, i, entry)  # type: ignore[arg-type]
        tr.history[i].append(entry)
    if cfg.trajectory_every and (epoch % cfg.trajectory_every == 0 or epoch == cfg.epochs):
        _snapshot(stacked, tr, epoch, ran)


def _track(stacked: StackedModel, tracker: Tracker, tr: _Track, i: int, entry: HistoryEntry) -> None:
    params = {n: t[i] for n, t in stacked.params.items()}
    buffers = {n: t[i] for n, t in stacked.buffers.items()}
    entry["tracked"], cost = tracker.measure(stacked.model, params, buffers)
    entry["tracking_cost"] = cost
    tr.tracking_s[i] += cost["wall_time_s"]


def _stop_rule(
    cfg: TrainConfig, tr: _Track, i: int, loss: float, gnorm: float, metrics: dict[str, torch.Tensor] | None
) -> str | None:
    """Which rule, if any, stops restart ``i`` after this epoch."""
    reason = None
    if cfg.tol is not None and tr.windows[i].push(loss, cfg.tol):
        reason = tr.windows[i].rule.reason
    if cfg.grad_tol is not None and gnorm < cfg.grad_tol:
        reason = reason or "grad_tol"
    if cfg.patience is not None and metrics is not None and "val_loss" in metrics:
        if float(metrics["val_loss"][i]) < tr.best_val[i] - cfg.min_delta:
            tr.bad_evals[i] = 0
        else:
            tr.bad_evals[i] += 1
            if tr.bad_evals[i] >= cfg.patience:
                reason = reason or "patience"
    if cfg.max_steps is not None and tr.steps[i] >= cfg.max_steps:
        reason = reason or "max_steps"
    return reason


def _keep_best(
    stacked: StackedModel, cfg: TrainConfig, tr: _Track, i: int, epoch: int, metrics: dict[str, torch.Tensor]
) -> None:
    """Remember the best validation loss (and, with restore_best, that epoch's state)."""
    if "val_loss" not in metrics:
        return
    val = float(metrics["val_loss"][i])
    if not val < tr.best_val[i] - cfg.min_delta:
        return
    tr.best_val[i], tr.best_epoch[i] = val, epoch
    if cfg.restore_best:
        tr.best_state[i] = {
            n: t[i].detach().clone() for n, t in {**stacked.params, **stacked.buffers}.items()
        }


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


@torch.no_grad()
def _restore_best(stacked: StackedModel, tr: _Track) -> None:
    """Put each restart's best validation state back into the stack (restore_best)."""
    merged = {**stacked.params, **stacked.buffers}
    for i, state in enumerate(tr.best_state):
        if state is not None and tr.stop[i] != "diverged":
            for n, t in state.items():
                merged[n][i].copy_(t)


def _finish(
    stacked: StackedModel, splits: Any, cfg: TrainConfig, seeds: list[int], tr: _Track
) -> list[RunResult]:
    if cfg.trajectory_every:
        for i in range(stacked.r):
            _snapshot(stacked, tr, tr.epochs[i], [i])
    if cfg.restore_best:
        _restore_best(stacked, tr)
    fresh = tr.last_eval is not None and tr.last_eval[0] == max(tr.epochs) and "interrupted" not in tr.stop
    # parameters have not moved since the last epoch's evaluation unless the best state was put back
    metrics = tr.last_eval[1] if fresh and not cfg.restore_best else _eval_all(stacked, splits, cfg)  # type: ignore[index]
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
                best_epoch=tr.best_epoch[i] if cfg.restore_best and tr.best_state[i] is not None else None,
                tracking_s=tr.tracking_s[i],
            )
        )
    return results
