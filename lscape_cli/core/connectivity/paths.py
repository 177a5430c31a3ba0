"""Mode connectivity: loss and error along paths between two minima, and the barriers on them.

Paths (every point placed absolutely from the end points, never by accumulating steps):

- linear: ``theta(alpha) = (1 - alpha) theta_A + alpha theta_B``. It is evaluated as a point of the
  subspace centred at 0 spanned by ``theta_A`` and ``theta_B`` with coefficients ``(1 - alpha, alpha)``,
  so ``alpha = 0`` and ``alpha = 1`` are *exactly* the two checkpoints (``theta_A + alpha (theta_B -
  theta_A)`` misses ``theta_B`` by rounding).
- quadratic Bezier curve (Garipov et al. 2018, "Loss Surfaces, Mode Connectivity, and Fast Ensembling
  of DNNs", NeurIPS): ``phi(t) = (1-t)^2 theta_A + 2t(1-t) theta + t^2 theta_B``;
- polygonal chain with one bend: ``phi(t) = (1-2t) theta_A + 2t theta`` for ``t <= 1/2``, then
  ``(2-2t) theta + (2t-1) theta_B``.

The bend ``theta`` starts at the midpoint (where both curves are the straight segment) and is trained to
minimise ``E_{t ~ U(0,1)} L(phi(t))``: one ``t`` drawn per minibatch, as in Garipov et al.

Barriers of a curve ``v(alpha)`` sampled on a grid that includes both ends (loss or error), each with the
``alpha`` where it is attained and its value relative to the mean of the end values:

- ``max_minus_mean_ends``: ``max_alpha v - (v(0) + v(1)) / 2`` (Frankle et al. 2020, "Linear Mode
  Connectivity and the Lottery Ticket Hypothesis"; Ainsworth et al. 2023, "Git Re-Basin");
- ``chord``: ``max_alpha [v(alpha) - ((1 - alpha) v(0) + alpha v(1))]``, the height above the chord
  between the ends (Entezari et al. 2022, "The Role of Permutation Invariance in Linear Mode
  Connectivity of Neural Networks");
- ``max_minus_max_ends``: ``max_alpha v - max(v(0), v(1))``, the height above the higher end.

On a grid these are lower bounds of the continuous maxima; the grid is recorded with them.

BatchNorm: running statistics of an interpolated network are not those of either end. Linear paths
interpolate the end points' buffers by default (so the ends stay exact); with ``reset_bn`` -- and always
on a trained curve, whose bend has no statistics of its own -- every evaluated point gets its statistics
re-estimated by train-mode forward passes over the training split (:func:`reestimate_bn`).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, TypedDict, cast

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from lscape_cli.core.choices import Align, CurveOptimizer
from lscape_cli.core.connectivity import alignment as al
from lscape_cli.core.landscape.surface import Subspace, evaluate_points
from lscape_cli.core.objective import evaluate, loss_mean, num_units, task_of
from lscape_cli.core.params import Params
from lscape_cli.core.progress import ProgressFn
from lscape_cli.core.training.stacked import has_batchnorm

Data = dict[str, tuple[torch.Tensor, torch.Tensor]]  # split -> (x, y)
CURVES = ("bezier", "polychain")
ALIGNS = Align.values()
OPTIMIZERS = CurveOptimizer.values()
BARRIERS = ("max_minus_mean_ends", "chord", "max_minus_max_ends")
FORMULAS = {
    "linear": "(1-alpha)*theta_A + alpha*theta_B",
    "bezier": "(1-t)^2*theta_A + 2t(1-t)*theta + t^2*theta_B",
    "polychain": "(1-2t)*theta_A + 2t*theta (t<=1/2); (2-2t)*theta + (2t-1)*theta_B (t>1/2)",
}


# ------------------------------------------------------------------------------------------- barriers


class Barrier(TypedDict):
    """One barrier definition's value, where on the path it is, and relative to the ends' mean."""

    value: float
    alpha: float
    relative: float | None


class Barriers(TypedDict):
    """:func:`barriers`: the three barrier definitions of one metric on one split."""

    ends: list[float]
    mean_ends: float
    path_max: float
    argmax_alpha: float
    max_minus_mean_ends: Barrier
    chord: Barrier
    max_minus_max_ends: Barrier
    relative_to: str
    num_points: int


class Curve(TypedDict):
    """A path's values on one split, one per alpha (``error`` = 1 - accuracy)."""

    loss: list[float]
    accuracy: list[float]
    error: list[float]


class EndValues(TypedDict):
    """One end evaluated directly on one split."""

    loss: float
    accuracy: float
    error: float


class Ends(TypedDict):
    """``results.ends``: each checkpoint evaluated directly, split -> values."""

    method: str
    a: dict[str, EndValues]
    b: dict[str, EndValues]


class EndCheck(TypedDict, total=False):
    """``results.end_check``: the path's ends against the direct evaluation (split -> differences)."""

    train: dict[str, float]  # a_abs_diff, b_abs_diff
    test: dict[str, float]
    bitwise: bool


class CurveFitEntry(TypedDict):
    """A trained curve's ``fit``: its CurveConfig, the objective, the training history."""

    kind: str
    epochs: int
    lr: float
    optimizer: str
    momentum: float
    batch_size: int
    seed: int
    init: str
    objective: str
    reference: str
    steps: int
    history: list[dict[str, float]]
    bend_distance_from_midpoint: float


class FunctionCheck(al.FunctionGapDict):
    """The permuted B against B: the gap and the split it was measured on."""

    split: str


class Alignment(al.AlignmentSummary):
    """An aligned path's ``alignment``: weight matching's facts and the function check."""

    function_check: FunctionCheck


class PathEntry(TypedDict, total=False):
    """One path (``linear``, ``aligned``, ``curve``): its curves per split, barriers and facts."""

    path: str
    formula: str
    buffers: str
    alpha: list[float]
    train: Curve
    test: Curve
    barriers: dict[str, dict[str, Barriers]]  # split -> metric (loss, error) -> barriers
    endpoint_b: str
    distance: float
    alignment: Alignment
    fit: CurveFitEntry


class ConnectResults(TypedDict, total=False):
    """``results`` of a ``lscape.connect/1`` record (details in docs/formats.md)."""

    ends: Ends
    linear: PathEntry
    end_check: EndCheck
    aligned: PathEntry  # --align weights: the path to the permuted B
    curve: PathEntry  # --curve: the trained curve's path and its fit
    plot: dict[str, str]  # format -> file name (added by the command after the plot)


def barriers(values: Any, alphas: Any) -> Barriers:
    """The three barrier definitions (module docstring) of ``values`` sampled at ``alphas``.

    ``alphas`` must start at 0 and end at 1. ``relative`` is the barrier divided by the mean of the end
    values (``None`` when that mean is not positive, e.g. zero training error).
    """
    v = np.asarray(values, dtype=np.float64)
    a = np.asarray(alphas, dtype=np.float64)
    if v.shape != a.shape or v.ndim != 1 or v.size < 2 or a[0] != 0.0 or a[-1] != 1.0:
        raise ValueError("barriers need matching 1-d values and alphas with alphas[0] = 0, alphas[-1] = 1")
    v0, v1 = float(v[0]), float(v[-1])
    mean_ends = (v0 + v1) / 2
    top = int(np.argmax(v))
    gap = v - ((1 - a) * v0 + a * v1)
    over = int(np.argmax(gap))

    def entry(value: float, alpha: float) -> Barrier:
        return {"value": value, "alpha": alpha, "relative": value / mean_ends if mean_ends > 0 else None}

    return {
        "ends": [v0, v1],
        "mean_ends": mean_ends,
        "path_max": float(v[top]),
        "argmax_alpha": float(a[top]),
        "max_minus_mean_ends": entry(float(v[top]) - mean_ends, float(a[top])),
        "chord": entry(float(gap[over]), float(a[over])),
        "max_minus_max_ends": entry(float(v[top]) - max(v0, v1), float(a[top])),
        "relative_to": "mean of the end values",
        "num_points": int(v.size),
    }


# ----------------------------------------------------------------------------------------------- paths


def grid(points: int) -> torch.Tensor:
    """``points`` equally spaced values from 0 to 1 inclusive (float64; the ends are exact)."""
    if points < 2:
        raise ValueError(f"a path needs at least 2 points, got {points}")
    return torch.linspace(0.0, 1.0, points, dtype=torch.float64)


def coefficients(kind: str, t: torch.Tensor) -> torch.Tensor:
    """Weights of the control points at each ``t``.

    Returns (P, 2) for ``linear`` (control points [A, B]), (P, 3) for curves ([A, bend, B]).
    """
    t = t.to(torch.float64)
    if kind == "linear":
        return torch.stack([1 - t, t], dim=1)
    if kind == "bezier":
        return torch.stack([(1 - t) ** 2, 2 * t * (1 - t), t**2], dim=1)
    if kind == "polychain":
        first = t <= 0.5
        zero = torch.zeros_like(t)
        return torch.stack(
            [
                torch.where(first, 1 - 2 * t, zero),
                torch.where(first, 2 * t, 2 - 2 * t),
                torch.where(first, zero, 2 * t - 1),
            ],
            dim=1,
        )
    raise ValueError(f"unknown path {kind!r}: expected linear or one of {CURVES}")


def combine(control: list[Params], coeffs: list[float]) -> Params:
    """``sum_k coeffs[k] * control[k]`` (differentiable; used while fitting a curve)."""
    return {
        n: sum((c * p[n] for c, p in zip(coeffs[1:], control[1:], strict=True)), coeffs[0] * control[0][n])
        for n in control[0]
    }


def interpolate_buffers(a: Params, b: Params, alpha: float) -> Params:
    """``(1 - alpha) a + alpha b`` for floating buffers (exact at the ends); others from the nearer end."""
    return {
        n: (a[n] * (1 - alpha) + b[n] * alpha)
        if a[n].is_floating_point()
        else (a[n] if alpha < 0.5 else b[n])
        for n in a
    }


@torch.no_grad()
def reestimate_bn(
    model: nn.Module, params: Params, buffers: Params, x: torch.Tensor, batch_size: int = 128
) -> Params:
    """BatchNorm running statistics for ``params``, re-estimated on ``x`` (Garipov et al.'s ``update_bn``).

    Train-mode forward passes over ``x`` in order, in chunks of ``batch_size``; the running mean and
    variance become the sample-weighted averages of the per-chunk batch statistics (momentum
    ``k / (seen + k)`` for a chunk of ``k`` after ``seen`` samples). Returns new buffers; ``model``'s
    mode and momenta are restored.
    """
    bns = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    fresh = {n: b.clone() for n, b in buffers.items()}
    for name, _ in bns:
        fresh[f"{name}.running_mean"].zero_()
        fresh[f"{name}.running_var"].fill_(1.0)
        if f"{name}.num_batches_tracked" in fresh:
            fresh[f"{name}.num_batches_tracked"].zero_()
    momenta = [m.momentum for _, m in bns]
    was_training = model.training
    model.train()
    try:
        seen = 0
        for start in range(0, x.shape[0], batch_size):
            xb = x[start : start + batch_size]
            for _, m in bns:
                m.momentum = xb.shape[0] / (seen + xb.shape[0])
            functional_call(model, (params, fresh), (xb,))
            seen += xb.shape[0]
    finally:
        for (_, m), mom in zip(bns, momenta, strict=True):
            m.momentum = mom
        model.train(was_training)
    return fresh


@dataclass(frozen=True)
class Buffers:
    """How a path's points get their buffers.

    ``none`` (the model has none), ``interpolated`` between the ends ``a`` and ``b``, or ``re-estimated``
    on ``x`` (the training split) in chunks of ``batch_size``.
    """

    mode: str
    a: Params = field(default_factory=dict)
    b: Params = field(default_factory=dict)
    x: torch.Tensor | None = None
    batch_size: int = 128


def _point_buffers(model: nn.Module, bufs: Buffers, params: Params, alpha: float) -> Params:
    if bufs.mode == "re-estimated":
        assert bufs.x is not None
        return reestimate_bn(model, params, bufs.a, bufs.x, bufs.batch_size)
    return interpolate_buffers(bufs.a, bufs.b, alpha)


def evaluate_path(
    model: nn.Module,
    control: list[Params],
    coeffs: torch.Tensor,
    bufs: Buffers,
    data: Data,
    loss: str,
    max_batch: int = 4096,
    on_step: ProgressFn | None = None,
) -> dict[str, Curve]:
    """Loss, accuracy and error on every split at the points ``sum_k coeffs[i, k] control[k]``.

    Without buffers all points go to :func:`~lscape_cli.core.landscape.surface.evaluate_points` at once (the
    subspace centred at 0 spanned by the control points); with buffers each point is its own subspace,
    because its statistics differ. ``model`` must be in eval mode.
    """
    zero = {n: torch.zeros_like(t) for n, t in control[0].items()}
    out: dict[str, Curve] = {}
    if bufs.mode == "none":
        space = Subspace(model, zero, {}, control)
        for split, (x, y) in data.items():
            losses, accs = evaluate_points(space, coeffs, x, y, loss, max_batch, on_step)
            out[split] = _curve(losses, accs)
        return out
    rows: dict[str, list[tuple[float, float]]] = {s: [] for s in data}
    alpha = coeffs[:, -1]  # the weight of B: alpha on a line; only used to interpolate buffers
    for i in range(coeffs.shape[0]):
        point = Subspace(model, zero, {}, control).point(coeffs[i])
        space = Subspace(model, zero, _point_buffers(model, bufs, point, float(alpha[i])), control)
        for split, (x, y) in data.items():
            l_, a_ = evaluate_points(space, coeffs[i : i + 1], x, y, loss, max_batch)
            rows[split].append((float(l_[0]), float(a_[0])))
        if on_step is not None:
            on_step({"estimator": "path", "step": i + 1, "total": int(coeffs.shape[0])})
    for split, r in rows.items():
        out[split] = _curve(torch.tensor([v[0] for v in r]), torch.tensor([v[1] for v in r]))
    return out


def _curve(losses: torch.Tensor, accs: torch.Tensor) -> Curve:
    return {"loss": losses.tolist(), "accuracy": accs.tolist(), "error": (1 - accs).tolist()}


@torch.no_grad()
def direct_eval(
    model: nn.Module,
    params: Params,
    buffers: Params,
    x: torch.Tensor,
    y: torch.Tensor,
    loss: str,
    max_batch: int,
) -> tuple[float, float]:
    """Mean loss and accuracy at one parameter setting, eval mode, without going through a subspace.

    Chunks of ``max_batch`` samples, their sums accumulated in float64 and divided by the sample count.
    """
    return evaluate(model, x, y, loss, max_batch, params=params, buffers=buffers)


# ----------------------------------------------------------------------------------------------- curves


@dataclass(frozen=True)
class CurveConfig:
    """How the bend of a curve is trained (recorded verbatim)."""

    kind: str = "bezier"  # "bezier" or "polychain"
    epochs: int = 20  # passes over the training split
    lr: float = 1e-3
    optimizer: str = "adam"  # "adam" or "sgd" (with momentum)
    momentum: float = 0.9  # sgd only
    batch_size: int = 128
    seed: int = 0  # minibatch order and the t drawn per minibatch
    init: str = "midpoint"  # the bend starts at (theta_A + theta_B) / 2: the straight segment


@dataclass
class CurveFit:
    """A trained bend and its training history (mean minibatch loss per epoch, at the t drawn)."""

    bend: Params
    history: list[dict[str, float]]
    steps: int


def fit_curve(
    model: nn.Module,
    a: Params,
    b: Params,
    x: torch.Tensor,
    y: torch.Tensor,
    loss: str,
    cfg: CurveConfig,
    buffers: Params | None = None,
    on_step: ProgressFn | None = None,
) -> CurveFit:
    """Train the bend of a ``cfg.kind`` curve from A to B to minimise ``E_t L(phi(t))`` (Garipov et al.).

    Models with BatchNorm run in train mode (batch statistics) on scratch copies of ``buffers``.
    """
    if cfg.kind not in CURVES or cfg.optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown curve {cfg.kind!r} or optimizer {cfg.optimizer!r}")
    bend = {n: ((a[n] + b[n]) / 2).detach().clone().requires_grad_(True) for n in a}
    opt: torch.optim.Optimizer = (
        torch.optim.Adam(list(bend.values()), lr=cfg.lr)
        if cfg.optimizer == "adam"
        else torch.optim.SGD(list(bend.values()), lr=cfg.lr, momentum=cfg.momentum)
    )
    gen = torch.Generator().manual_seed(cfg.seed)
    scratch = {n: t.clone() for n, t in (buffers or {}).items()}
    was_training = model.training
    model.train(has_batchnorm(model))
    history, steps, n, units = [], 0, int(y.shape[0]), num_units(y, loss)
    try:
        for epoch in range(1, cfg.epochs + 1):
            order = torch.randperm(n, generator=gen).to(y.device)
            total = 0.0
            for start in range(0, n, cfg.batch_size):
                idx = order[start : start + cfg.batch_size]
                t = torch.rand(1, generator=gen, dtype=torch.float64)
                point = combine([a, bend, b], coefficients(cfg.kind, t)[0].tolist())
                value = loss_mean(functional_call(model, (point, scratch), (x[idx],)), y[idx], loss)
                opt.zero_grad(set_to_none=True)
                value.backward()  # type: ignore[no-untyped-call]
                opt.step()
                steps += 1
                total += float(value.detach()) * num_units(y[idx], loss)
            history.append({"epoch": epoch, "mean_loss": total / units})
            if on_step is not None:
                on_step(
                    {
                        "estimator": f"{cfg.kind} fit",
                        "step": epoch,
                        "total": cfg.epochs,
                        "loss": total / units,
                    }
                )
    finally:
        model.train(was_training)
    return CurveFit({k: v.detach() for k, v in bend.items()}, history, steps)


# ---------------------------------------------------------------------------------------------- connect


@dataclass(frozen=True)
class ConnectRequest:
    """Everything ``lscape connect`` measures, and how (recorded verbatim in the JSON ``config``)."""

    points: int = 51  # grid of alpha (and t) values in [0, 1], both ends included
    align: str = "none"  # "none" or "weights" (weight matching)
    align_max_iter: int = 100  # most sweeps of weight matching
    curve: str | None = None  # None, "bezier" or "polychain"
    curve_config: CurveConfig = field(default_factory=CurveConfig)
    reset_bn: bool = False  # re-estimate BatchNorm statistics at every point of the linear paths
    bn_batch_size: int = 128  # chunk size of BatchNorm re-estimation
    seed: int = 0  # weight matching's group order; the curve's own seed is in curve_config
    max_batch: int = 4096  # evaluation chunk size (memory only)

    def to_dict(self) -> dict[str, object]:
        """Plain-JSON form (every field; ``curve_config`` nested)."""
        return asdict(self)


@dataclass(frozen=True)
class Endpoint:
    """One end of a path: parameters and buffers (name -> tensor)."""

    params: Params
    buffers: Params


def _distance(a: Params, b: Params) -> float:
    return float(torch.sqrt(cast(torch.Tensor, sum(((a[n] - b[n]).double() ** 2).sum() for n in a))))


def _path(
    kind: str,
    model: nn.Module,
    control: list[Params],
    t: torch.Tensor,
    bufs: Buffers,
    data: Data,
    loss: str,
    req: ConnectRequest,
    on_step: ProgressFn | None,
) -> PathEntry:
    curves = evaluate_path(model, control, coefficients(kind, t), bufs, data, loss, req.max_batch, on_step)
    # regression targets have no error rate (accuracy is NaN): their barriers are on the loss alone
    metrics: tuple[Literal["loss", "error"], ...] = (
        ("loss",) if task_of(data["train"][1]) == "regression" else ("loss", "error")
    )
    result = {
        "path": kind,
        "formula": FORMULAS[kind],
        "buffers": bufs.mode,
        "alpha": t.tolist(),
        **curves,
        "barriers": {s: {m: barriers(c[m], t.tolist()) for m in metrics} for s, c in curves.items()},
    }
    return cast(PathEntry, result)  # curves' keys are the splits, train and test


def _buffers_for(
    model: nn.Module, a: Endpoint, b: Endpoint, x_train: torch.Tensor, reset: bool, req: ConnectRequest
) -> Buffers:
    if not a.buffers:
        return Buffers("none")
    if reset and has_batchnorm(model):
        return Buffers("re-estimated", a.buffers, b.buffers, x_train, req.bn_batch_size)
    return Buffers("interpolated", a.buffers, b.buffers)


def _end_check(path: PathEntry, ends: Ends) -> EndCheck:
    """How well the path's ends reproduce each checkpoint's own (directly evaluated) loss."""
    out: dict[str, object] = {}
    exact = True
    curves: dict[str, object] = dict(path)
    for split in path["barriers"]:
        loss = cast(Curve, curves[split])["loss"]
        da = abs(loss[0] - ends["a"][split]["loss"])
        db = abs(loss[-1] - ends["b"][split]["loss"])
        out[split] = {"a_abs_diff": da, "b_abs_diff": db}
        exact = exact and da == 0.0 and db == 0.0
    out["bitwise"] = exact
    return cast(EndCheck, out)  # keys: the splits, then bitwise


def run_connect(
    model: nn.Module,
    model_spec: Any,
    a: Endpoint,
    b: Endpoint,
    data: Data,
    loss: str,
    req: ConnectRequest,
    on_step: ProgressFn | None = None,
) -> tuple[ConnectResults, dict[str, float], list[str]]:
    """Linear path, optionally the path to B aligned to A, optionally a trained curve.

    Args:
        model: the architecture, in eval mode.
        model_spec: its registry ``ModelSpec`` (for alignment).
        a: the first minimum (alpha = 0).
        b: the second minimum (alpha = 1).
        data: split -> (x, y); must hold ``"train"`` (curve fitting, BatchNorm re-estimation).
        loss: ``ce`` or ``mse``.
        req: what to measure.
        on_step: progress callback.

    Returns:
        ``(results, timing_s, warnings)``; results are JSON-ready (keys documented in docs/formats.md).
    """
    timing: dict[str, float] = {}
    warnings: list[str] = []
    t0 = time.perf_counter()
    t = grid(req.points)
    x_train = data["train"][0]
    ends: Ends = {"method": "direct evaluation at each checkpoint (eval mode, own buffers)", "a": {}, "b": {}}
    for key, end in (("a", a), ("b", b)):
        for split, (x, y) in data.items():
            value, acc = direct_eval(model, end.params, end.buffers, x, y, loss, req.max_batch)
            ends["a" if key == "a" else "b"][split] = {"loss": value, "accuracy": acc, "error": 1 - acc}
    bufs = _buffers_for(model, a, b, x_train, req.reset_bn, req)
    results: ConnectResults = {"ends": ends}
    linear = _path("linear", model, [a.params, b.params], t, bufs, data, loss, req, on_step)
    linear["endpoint_b"] = "B"
    linear["distance"] = _distance(a.params, b.params)
    results["linear"] = linear
    if bufs.mode != "re-estimated":
        results["end_check"] = _end_check(linear, ends)
    timing["linear"] = time.perf_counter() - t0
    b_end = b
    if req.align == "weights":
        t1 = time.perf_counter()
        aligned, b_end = _aligned(model, model_spec, a, b, t, data, loss, req, on_step, warnings)
        results["aligned"] = aligned
        timing["align"] = time.perf_counter() - t1
    if req.curve is not None:
        if bufs.mode == "interpolated" and has_batchnorm(model):
            warnings.append(
                "the curve re-estimates BatchNorm statistics at every point but the linear paths "
                "interpolate the ends' statistics; pass --reset-bn to compare like with like"
            )
        t2 = time.perf_counter()
        results["curve"] = _fit_and_eval(model, a, b_end, t, data, loss, req, on_step)
        results["curve"]["endpoint_b"] = "B aligned to A" if b_end is not b else "B"
        timing["curve"] = time.perf_counter() - t2
    return results, timing, warnings


def _aligned(
    model: nn.Module,
    model_spec: Any,
    a: Endpoint,
    b: Endpoint,
    t: torch.Tensor,
    data: Data,
    loss: str,
    req: ConnectRequest,
    on_step: ProgressFn | None,
    warnings: list[str],
) -> tuple[PathEntry, Endpoint]:
    """Weight-match B to A, check that B's function is unchanged, and evaluate the new linear path."""
    res = al.align(model_spec, a.params, b.params, b.buffers, seed=req.seed, max_iter=req.align_max_iter)
    x_check = data["test"][0] if "test" in data else data["train"][0]
    gap = al.function_gap(model, (b.params, b.buffers), (res.params, res.buffers), x_check, req.max_batch)
    if not gap.passed:
        raise ValueError(
            f"the permuted B does not compute B's function (relative output difference {gap.relative:.3g} "
            f"> {gap.tol:g}); the alignment is not trusted"
        )
    if not res.converged:
        warnings.append(f"weight matching stopped after {res.iterations} sweeps without converging")
    b_al = Endpoint(res.params, res.buffers)
    x_train = data["train"][0]
    bufs = _buffers_for(model, a, b_al, x_train, req.reset_bn, req)
    path = _path("linear", model, [a.params, b_al.params], t, bufs, data, loss, req, on_step)
    path["endpoint_b"] = "B aligned to A"
    path["distance"] = _distance(a.params, b_al.params)
    path["alignment"] = {
        **res.summary(),
        "function_check": {**gap.to_dict(), "split": "test" if "test" in data else "train"},
    }
    return path, b_al


def _fit_and_eval(
    model: nn.Module,
    a: Endpoint,
    b: Endpoint,
    t: torch.Tensor,
    data: Data,
    loss: str,
    req: ConnectRequest,
    on_step: ProgressFn | None,
) -> PathEntry:
    cfg = CurveConfig(**{**asdict(req.curve_config), "kind": req.curve})
    x, y = data["train"]
    fit = fit_curve(model, a.params, b.params, x, y, loss, cfg, a.buffers, on_step)
    bn = bool(a.buffers) and has_batchnorm(model)
    bufs = Buffers("re-estimated", a.buffers, b.buffers, x, req.bn_batch_size) if bn else Buffers("none")
    if a.buffers and not bn:
        bufs = Buffers("interpolated", a.buffers, b.buffers)
    path = _path(cfg.kind, model, [a.params, fit.bend, b.params], t, bufs, data, loss, req, on_step)
    midpoint = {n: (a.params[n] + b.params[n]) / 2 for n in a.params}
    path["fit"] = {
        "kind": cfg.kind,
        "epochs": cfg.epochs,
        "lr": cfg.lr,
        "optimizer": cfg.optimizer,
        "momentum": cfg.momentum,
        "batch_size": cfg.batch_size,
        "seed": cfg.seed,
        "init": cfg.init,
        "objective": "E_{t~U(0,1)} L_train(phi(t)), one t per minibatch",
        "reference": "Garipov et al. 2018",
        "steps": fit.steps,
        "history": fit.history,
        "bend_distance_from_midpoint": _distance(fit.bend, midpoint),
    }
    return path
