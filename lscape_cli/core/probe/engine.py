"""`probe`'s library call: run the requested curvature and flatness measurements on one objective.

One :class:`ProbeRequest` says what to measure; :func:`run_probe` returns the ``results`` dict of a
``lscape.probe/1`` record and a flat ``scalars`` namespace for ``--check`` gates. :func:`run_on_batches`
repeats it on disjoint batches and summarises every scalar (mean, std, min, max), seed 001's protocol
("top-3 eigenvalues over 5 test mini-batches").

Keys of ``results`` (each estimate carries its method, budget, seed and uncertainty/convergence):

- ``loss``: ``{"value", "accuracy", "num_samples"}`` at the checkpoint (for regression targets the
  accuracy is NaN, written as ``null``, and is not a ``--check`` scalar).
- ``curvature``: which matrix the spectral quantities below describe (``kind``: ``hessian``, ``ggn``,
  ``fisher`` or ``empirical-fisher``, its ``definition``, for ``fisher`` ``mc_samples`` and ``mc_seed``;
  see :mod:`lscape_cli.core.linalg.curvature`), and the parameter block: ``params`` (``"all"`` or the names
  matched by ``ProbeRequest.params``) and ``num_params``.
- ``hvp`` (when Hessian-vector products ran): the strategy, how it was chosen (``seconds_per_product``
  of each candidate under ``measure``), and the memory plan: ``chunk_size``, ``num_chunks``,
  ``retain_chunks``, ``memory_budget_mib``, measured ``graph_bytes_per_sample`` (see
  :func:`lscape_cli.core.linalg.memory.plan`).
- ``lambda_max``: ``{"estimate", "residual", "relative_residual", "rounding", "nearest_eigenvalue_bound",
  "error_bound", "error_bound_note", "ritz_residual_estimate", "converged", "iterations", "num_matvecs",
  "method", "tol", "stop", "seed", "shared_run", "residual_method", "error_bound_includes_rounding",
  "certificate"}`` (Lanczos, stopped on the Kato-Temple estimate ``min(r, r²/δ̂)`` or on ``r`` itself, see
  :mod:`lscape_cli.core.linalg.spectrum`); ``residual`` is ``‖H̃v − λv‖`` computed with one more product per
  reported pair, ``rounding`` the product's rounding on that vector (one reference-dtype product),
  ``nearest_eigenvalue_bound`` their sum (some eigenvalue lies within it) and ``error_bound`` the bound on
  the error against λmax itself, from the random-start ``certificate`` (or null with the reason in
  ``error_bound_note``; :mod:`lscape_cli.core.linalg.eigen_bounds`).
- ``top_k``: ``{"eigenvalues", "residuals", "roundings", "nearest_eigenvalue_bounds", "error_bounds",
  "error_bound_notes", "ritz_residual_estimates", "converged", "converged_pairs", ...}`` the K largest,
  same run as ``lambda_max``.
- ``lambda_min``: like ``lambda_max`` for the smallest (most negative) eigenvalue; with ``lambda_max`` in
  one run over both ends (``shared_run``), each quantity is judged on its own pairs and the run stops
  once all have converged.
- ``condition_number``: ``{"estimate": lambda_max/lambda_min or null, "note"}``.
- ``trace``, ``frobenius``: ``{"estimate", "stderr", "stderr_method", "rounding", "uncertainty", "dof",
  "method", "num_matvecs", "seed"}`` (+ ``"note"`` when rounding dominates), both from one set of
  Hessian-vector products (Hutchinson, Hutch++ or krylov-hutch++; :mod:`lscape_cli.core.linalg.trace`).
- ``rounding``: the measured floating-point floor (:meth:`lscape_cli.core.linalg.rounding.Rounding.to_dict`),
  with the trace or the density, and in a float32 run with any spectral quantity.
- ``density``: SLQ ``{"nodes", "weights", "grid", "density", "sigma", "num_runs", "num_steps",
  "num_matvecs", "seed", "trace", "moment2"}``.
- ``effective_rank``: ``{"estimate", "stderr", "stderr_method", "num_runs", "num_steps", "num_matvecs",
  "method"}`` (from the SLQ measure, jackknife standard error over runs); ``stable_rank`` and
  ``participation_ratio``: ``{"estimate", "from"}`` when their inputs were measured.
- ``grad_norm``: ``{"estimate", "method": "exact"}``.
- ``sharpness``: one entry per eps: ``{"eps", "random", "worst_case", "quadratic_prediction"}``; the
  prediction shows ``eps ||g||`` beside ``1/2 eps^2 lambda_max`` (:func:`.sharpness.ball_prediction`).
- ``noise``: weight-noise robustness curve with the ``1/2 sigma^2 tr(H)`` prediction when the trace is
  known, compared with the measured rise (:func:`.sharpness.noise_prediction`).
- ``pac_bayes``: the largest sigma within the target (``isotropic``, and ``magnitude_aware`` when
  asked), and the bound that isotropic sigma implies (``bound``: ``formula``, ``statement``,
  ``prior_mean`` (``init`` or ``zero``), ``prior_source``, ``sigma``, ``distance`` ‖θ − θ₀‖, ``kl``, ``m``,
  ``delta``, ``grid_size``, ``ln_grid_size``, ``train_error`` with ``train_error_stderr`` over ``draws``,
  ``seed``, ``complexity``, ``bound`` and ``bound_stderr`` (Pinsker form), ``kl_inverse_bound`` and
  ``kl_inverse_bound_stderr``, ``vacuous``, ``note``; :mod:`lscape_cli.core.probe.pac_bayes`). The
  magnitude-aware sigma has no bound: its noise scales with θ, which a data-free prior cannot.
- ``stability``: ``eta * lambda_max`` against the optimiser's threshold.
- ``per_layer`` (when asked): ``{"grouping", "blocks": [{"block", "params", "num_params", "lambda_max",
  "top_k", "lambda_min", "trace", "frobenius", "density", "effective_rank", "num_matvecs", "seconds"}],
  "num_matvecs", "seconds", "note"}``: the same spectral quantities for each module's block of the
  curvature (principal sub-matrix, :mod:`lscape_cli.core.linalg.blocks`), one estimator run per block.

Sharpness predictions, noise predictions and stability use ``λmax`` and ``tr`` of the full Hessian; with
another curvature or a parameter block they are left out (stability says why).
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from dataclasses import dataclass, field
from typing import Literal, overload

import torch

from lscape_cli.core import choices as ch
from lscape_cli.core.budget import GRADIENT_FORWARDS, Demand, Problem, check, count
from lscape_cli.core.landscape import sharpness as sharp
from lscape_cli.core.linalg import blocks, eigen_bounds, rounding, spectrum, trace
from lscape_cli.core.linalg import density as dens
from lscape_cli.core.linalg.curvature import GGN, Curvature, curvature_operator
from lscape_cli.core.linalg.eigen_bounds import PairBound
from lscape_cli.core.linalg.hvp import HVP, Objective, Operator, Params, gradient, norm, plan
from lscape_cli.core.linalg.hvp_check import verify_strategy
from lscape_cli.core.linalg.stats import mean_var
from lscape_cli.core.objective import task_of
from lscape_cli.core.probe import pac_bayes as pb
from lscape_cli.core.probe.results import (
    BlockHead,
    BlockRow,
    EigenPair,
    EigenPairs,
    LanczosRun,
    PacBayesEntry,
    PairLists,
    PerLayerEntry,
    ProbeResults,
    ScalarSummary,
    SharpnessRow,
)
from lscape_cli.core.progress import ProgressFn
from lscape_cli.errors import LscapeError


@dataclass(frozen=True)
class ProbeRequest:
    """What to measure, with every budget and seed."""

    lambda_max: bool = False
    top_k: int = 0
    lambda_min: bool = False
    trace: bool = False
    frobenius: bool = False
    trace_method: str = "krylov-hutch++"  # a key of trace.TRACE_METHODS
    trace_matvecs: int = 45
    rounding_products: int = rounding.DEFAULT_PRODUCTS  # per dtype, for the rounding floor (0: skip)
    density: bool = False
    density_runs: int = 10
    density_steps: int = 80
    grad_norm: bool = False
    sharpness_eps: tuple[float, ...] = ()
    sharpness_kind: str = "l2"  # "l2", "filter", "adaptive"
    sharpness_directions: int = 10
    sharpness_steps: int = 0  # worst-case projected gradient ascent steps (0: skip)
    noise_sigmas: tuple[float, ...] = ()
    noise_samples: int = 10
    magnitude_aware: bool = False
    pac_bayes: bool = False
    pac_bayes_target: float = 0.1
    pac_bayes_metric: str = "error"
    pac_bayes_samples: int = 10
    pac_bayes_delta: float = 0.05  # confidence of the PAC-Bayes bound: it holds with probability 1 - delta
    stability: bool = False
    lr: float | None = None  # from the checkpoint, for stability
    optimizer: str | None = None
    momentum: float = 0.0
    tol: float = 1e-6
    eig_stop: str = "bound"  # "bound" or "residual" (spectrum.lanczos)
    eig_method: str = "lanczos"  # "lanczos", or "power" (lambda_max only: seed 002's method)
    max_iter: int = 200
    seed: int = 0
    hvp_strategy: str = "auto"
    memory_budget_mib: float | None = None  # kept gradient graphs; None: the device's default (memory.plan)
    retain_chunks: int | None = None  # kept chunk graphs; None: as many as fit the budget
    bias: str = "zero"  # filter-normalised sharpness: bias policy
    curvature: str = "hessian"  # a key of curvature.CURVATURES: the matrix of every spectral quantity
    fisher_samples: int = 1  # curvature "fisher": labels drawn per input
    params: tuple[str, ...] = ()  # regular expressions: restrict spectral quantities to this block
    per_layer: bool = False  # also every module's block, one run each
    eigenvectors: bool = False  # keep the top-k Ritz vectors (ProbeOutput.eigenvectors)

    @property
    def needs_lambda_max(self) -> bool:
        """λmax is also needed for stability and for the sharpness quadratic prediction."""
        return self.lambda_max or self.top_k > 0 or self.stability or bool(self.sharpness_eps)

    @property
    def needs_trace(self) -> bool:
        """Trace and Frobenius norm come from the same products."""
        return self.trace or self.frobenius

    @property
    def full_hessian(self) -> bool:
        """Whether λmax and tr describe the whole Hessian (what sharpness and stability predictions need)."""
        return self.curvature == "hessian" and not self.params

    @property
    def asks_anything(self) -> bool:
        """Whether any measurement is asked for (else :data:`DEFAULT_MEASUREMENTS` are taken)."""
        flags = (self.lambda_max, self.top_k > 0, self.lambda_min, self.trace, self.frobenius, self.density)
        return any(
            (*flags, self.grad_norm, self.pac_bayes, self.stability, self.sharpness_eps, self.noise_sigmas)
        )

    def with_defaults(self) -> ProbeRequest:
        """The request, with :data:`DEFAULT_MEASUREMENTS` when it asks for nothing (CLI and api alike)."""
        if self.asks_anything:
            return self
        return dataclasses.replace(self, lambda_max=True, trace=True, frobenius=True, grad_norm=True)

    def validate(self) -> None:
        """Refuse a choice field's unknown value, naming its command-line option."""
        ch.TraceMethod.check(self.trace_method, "--trace-method")
        ch.SharpnessKind.check(self.sharpness_kind, "--sharpness-kind")
        ch.BiasPolicy.check(self.bias, "--bias")
        ch.PacBayesMetric.check(self.pac_bayes_metric, "--pac-bayes-metric")
        ch.HvpStrategy.check(self.hvp_strategy, "--hvp")
        ch.EigStop.check(self.eig_stop, "--stop")
        ch.CurvatureKind.check(self.curvature, "--curvature")
        ch.EigMethod.check(self.eig_method, "--eig-method")


DEFAULT_MEASUREMENTS = ("lambda_max", "trace", "frobenius", "grad_norm")  # ProbeRequest.with_defaults


@dataclass
class ProbeOutput:
    """``results`` for the record and the scalar namespace for checks."""

    results: ProbeResults = field(default_factory=lambda: ProbeResults())
    scalars: dict[str, float | None] = field(default_factory=dict)
    eigenvectors: list[Params] | None = None  # top-k unit Ritz vectors over all parameters, when asked


CHECK_QUANTITIES: dict[str, str] = {  # every --check quantity -> the option(s) that measure it
    "loss": "always measured",
    "accuracy": "always measured, for class labels",
    "grad_norm": "--grad-norm",
    "lambda_max": "--lambda-max",
    "lambda_K": "--top-k K (Lanczos), K at least the index",
    "lambda_min": "--lambda-min",
    "condition_number": "--lambda-max with --lambda-min",
    "trace": "--trace or --frobenius (one set of products)",
    "frobenius": "--trace or --frobenius (one set of products)",
    "stable_rank": "--lambda-max with --frobenius",
    "participation_ratio": "--trace or --frobenius",
    "effective_rank": "--density",
    "sharpness_max": "--sharpness EPS",
    "sharpness_mean": "--sharpness EPS",
    "sharpness_worst": "--sharpness EPS with --ascent-steps N",
    "pac_bayes_sigma": "--pac-bayes",
    "pac_bayes_bound": "--pac-bayes (labels, at least 8 samples)",
    "pac_bayes_bound_kl": "--pac-bayes (labels, at least 8 samples)",
    "pac_bayes_sigma_magnitude": "--pac-bayes with --magnitude-aware",
    "eta_lambda_max": "--stability, on the full Hessian of a checkpoint that records its learning rate",
}
_LAMBDA_K = re.compile(r"lambda_([1-9][0-9]{0,8})")


def check_source(name: str) -> str | None:
    """What measures the ``--check`` quantity ``name`` (:data:`CHECK_QUANTITIES`); None: no such quantity."""
    return CHECK_QUANTITIES["lambda_K"] if _LAMBDA_K.fullmatch(name) else CHECK_QUANTITIES.get(name)


def scalar_names(req: ProbeRequest, regression: bool) -> set[str]:
    """The names :func:`run_probe` puts in ``scalars`` for ``req`` (what a ``--check`` may use).

    ``regression``: the targets are not class labels (no accuracy). A name here may still hold None when
    its value is not finite (e.g. ``condition_number`` of a Hessian that is not positive definite).
    """
    names = {"loss"} | (set() if regression else {"accuracy"})
    top = req.needs_lambda_max
    if top:
        names.add("lambda_max")
    if req.eig_method == "lanczos":
        names |= {f"lambda_{i + 1}" for i in range(req.top_k if top else 0)}
        names |= {"lambda_min"} if req.lambda_min else set()
        names |= {"condition_number"} if req.lambda_min and top else set()
    if req.needs_trace:
        names |= {"trace", "frobenius", "participation_ratio"} | ({"stable_rank"} if top else set())
    flags = {
        "effective_rank": req.density,
        "grad_norm": req.grad_norm,
        "sharpness_max": bool(req.sharpness_eps),
        "sharpness_mean": bool(req.sharpness_eps),
        "sharpness_worst": bool(req.sharpness_eps) and req.sharpness_steps > 0,
        "pac_bayes_sigma": req.pac_bayes,
        "pac_bayes_bound": req.pac_bayes,  # None where no bound holds (regression, m < 8)
        "pac_bayes_bound_kl": req.pac_bayes,
        "pac_bayes_sigma_magnitude": req.pac_bayes and req.magnitude_aware,
        "eta_lambda_max": req.stability and req.full_hessian and None not in (req.lr, req.optimizer),
    }
    return names | {name for name, on in flags.items() if on}


def demands(req: ProbeRequest, size: Problem) -> list[Demand]:
    """What each count of ``req`` asks of the machine (:func:`lscape_cli.core.budget.enforce`)."""
    out: list[Demand] = []
    if req.needs_lambda_max or req.lambda_min:
        steps = min(count(req.max_iter), size.num_params)  # Lanczos stops at the dimension
        k = max(1, req.top_k) * (2 if req.lambda_min and req.needs_lambda_max else 1)
        if req.top_k > 0:
            out.append(Demand("--top-k", req.top_k, "eigenpairs", k * size.hvp, size.vectors(k)))
        out.append(Demand("--max-iter", req.max_iter, "Lanczos steps", steps * size.hvp, size.vectors(steps)))
    if req.needs_trace:
        m = count(req.trace_matvecs)
        out.append(Demand("--matvecs", req.trace_matvecs, "trace products", m * size.hvp, size.vectors(m)))
    if req.density:
        steps, runs = count(req.density_steps), count(req.density_runs)
        basis = size.vectors(steps)
        out.append(Demand("--density-steps", req.density_steps, "SLQ steps", steps * size.hvp, basis))
        out.append(Demand("--density-runs", req.density_runs, "SLQ runs", runs * steps * size.hvp))
    radii = len(req.sharpness_eps)
    grad = GRADIENT_FORWARDS * size.forward
    directions = radii * count(req.sharpness_directions) * size.forward
    out.append(Demand("--directions", req.sharpness_directions, "sharpness directions", directions))
    ascent = radii * count(req.sharpness_steps) * grad
    out.append(Demand("--ascent-steps", req.sharpness_steps, "sharpness ascent steps", ascent))
    noise = len(req.noise_sigmas) * count(req.noise_samples) * size.forward
    out.append(Demand("--noise-samples", req.noise_samples, "weight-noise draws", noise))
    if req.curvature == "fisher":  # at least one float64 draw per sample and label (curvature.label_draws)
        labels = count(req.fisher_samples) * size.num_samples
        out.append(Demand("--fisher-samples", req.fisher_samples, "sampled labels", labels, labels * 8))
    return out


def check_budget(
    req: ProbeRequest, module: torch.nn.Module, num_samples: int, top_k_option: str = "--top-k"
) -> None:
    """Refuse ``req`` before any work when a count in it exceeds the model or this machine.

    More eigenvalues than parameters is a :class:`LscapeError` naming ``top_k_option``; a count beyond
    the machine's time or memory a :class:`BudgetError`.
    """
    size = Problem.of(module, num_samples)
    check(demands(req, size), next(module.parameters()).device)
    wanted = eigenvalues_wanted(req)
    if wanted > size.num_params:
        raise LscapeError(
            f"{wanted} eigenvalues asked of a model with {size.num_params} parameters",
            top_k_option,
            f"ask for at most {size.num_params}",
        )


def eigenvalues_wanted(req: ProbeRequest) -> int:
    """Ritz values one eigen-run of ``req`` needs (the K largest and lambda_min); 0 without one."""
    top = max(1, req.top_k) if req.needs_lambda_max else 0
    return top + (1 if req.lambda_min else 0)


def _finite(v: float | None) -> float | None:
    return v if v is not None and math.isfinite(v) else None


def _check_task(obj: Objective, req: ProbeRequest) -> None:
    """PAC-Bayes on the error rate needs class labels: regression targets have no error rate."""
    if req.pac_bayes and req.pac_bayes_metric == "error" and task_of(obj.y) == "regression":
        raise LscapeError(
            "PAC-Bayes on the error rate needs class labels, but the data are regression targets",
            "--pac-bayes-metric",
            "pass --pac-bayes-metric loss",
        )


def run_probe(
    obj: Objective, req: ProbeRequest, on_step: ProgressFn | None = None, prior: pb.Prior | None = None
) -> ProbeOutput:
    """Run every measurement ``req`` asks for at ``obj.params``.

    ``prior``: the centre of the PAC-Bayes prior (the initial parameters); None: centred at 0, and the
    bound's record says so.
    """
    out = ProbeOutput()
    _check_task(obj, req)
    chunking = plan(obj, req.memory_budget_mib, req.retain_chunks)  # chunk size from measured memory
    obj = chunking.apply(obj)
    loss, acc = sharp.loss_accuracy(obj, obj.params)
    out.results["loss"] = {
        "value": loss,
        "accuracy": acc,
        "num_samples": obj.num_samples,
        "num_units": obj.num_units,
    }
    out.scalars.update(loss=loss, **({} if task_of(obj.y) == "regression" else {"accuracy": acc}))
    cur = Curvature(req.curvature, req.fisher_samples, req.seed)
    names = blocks.select(obj.params, req.params) if req.params else list(obj.params)
    target = blocks.restrict(obj, names) if req.params else obj
    # a named torch.func strategy must agree with autograd before any estimator trusts it
    checked = verify_strategy(target, req.hvp_strategy) if cur.kind == "hessian" else None
    # one graph for every estimator, then freed
    with curvature_operator(target, cur, req.hvp_strategy, chunking.retain_chunks) as op:
        _spectral(target, op, cur, req, out, on_step)
    if op.num_matvecs:
        out.results["hvp"] = {**op.describe(), "check": checked, **chunking.to_dict()}
        out.results["curvature"] = {
            **cur.describe(),
            "params": names if req.params else "all",
            "num_params": op.dim,
        }
    if out.eigenvectors is not None and req.params:
        out.eigenvectors = [blocks.embed(v, obj.params) for v in out.eigenvectors]
    if req.per_layer:
        out.results["per_layer"] = _per_layer(target, cur, req, chunking.retain_chunks, on_step)
    if req.grad_norm:
        g = float(norm(gradient(obj)))
        out.results["grad_norm"] = {"estimate": g, "method": "exact (whole split)"}
        out.scalars["grad_norm"] = g
    if req.sharpness_eps:
        _sharpness(obj, req, out, on_step)
    if req.noise_sigmas:
        _noise(obj, req, out)
    if req.pac_bayes:
        _pac_bayes(obj, req, out, prior or pb.Prior.zero("no initial parameters were given"))
    if req.stability:
        _stability(req, out)
    _derived(out)
    return out


def _spectral(
    obj: Objective,
    op: HVP | GGN,
    cur: Curvature,
    req: ProbeRequest,
    out: ProbeOutput,
    on_step: ProgressFn | None,
) -> None:
    """Every spectral quantity ``req`` asks for, on one operator (of ``cur`` at ``obj``).

    The rounding record is measured on random vectors whenever the trace or the density is asked
    (refined where it matters, :func:`.rounding.refine`); the eigenvalue bounds measure the rounding on
    their own vectors against the same reference operator, and in a float32 (or lower) run that asked
    only for eigenvalues those measurements are the record (:func:`.rounding.pair_record`: no extra
    products).
    """
    eigen = req.needs_lambda_max or req.lambda_min
    dtype = next(iter(op.params.values())).dtype
    ref = _reference(obj, op, cur) if req.rounding_products else None
    res = _eigen(op, ref, req, out, on_step) if eigen else None
    stochastic = req.needs_trace or req.density
    rnd = None
    if ref is not None and stochastic:
        rnd = rounding.measure(op, ref[0], req.rounding_products, req.seed, ref[1])
    if stochastic:
        rnd = _trace_density(op, rnd, ref, req, out, on_step)
    if rnd is not None:
        out.results["rounding"] = rnd.to_dict()
    elif ref is not None and res is not None and res.rounding_relative and dtype != torch.float64:
        out.results["rounding"] = rounding.pair_record(op, ref[0], ref[1], res.rounding_relative, req.seed)


def _per_layer(
    obj: Objective, cur: Curvature, req: ProbeRequest, retain: int | None, on_step: ProgressFn | None
) -> PerLayerEntry:
    """The spectral quantities of each module's block of the curvature, one estimator run per block."""
    sub_req = dataclasses.replace(req, eigenvectors=False)
    rows: list[BlockRow] = []
    for owner, names in blocks.module_blocks(obj.model, list(obj.params)).items():
        t0 = time.perf_counter()
        sub = ProbeOutput()
        block = blocks.restrict(obj, names)
        with curvature_operator(block, cur, req.hvp_strategy, retain) as op:
            _spectral(block, op, cur, sub_req, sub, on_step)
        seconds = time.perf_counter() - t0
        row: BlockHead = {"block": owner, "params": names, "num_params": op.dim, **sub.results}
        rows.append({**row, "num_matvecs": op.num_matvecs, "seconds": seconds})
    return {
        "grouping": "module (parameter tensors grouped by the module that owns them; a transformer's "
        "attention and MLP modules are one block each)",
        "blocks": rows,
        "num_matvecs": sum(r["num_matvecs"] for r in rows),
        "seconds": sum(r["seconds"] for r in rows),
        "note": "each block is the principal sub-matrix of the curvature for its parameters (others fixed), "
        "estimated by its own run: about one whole-model run of products per block",
    }


def _power(
    op: HVP | GGN,
    ref: tuple[Operator, float] | None,
    req: ProbeRequest,
    out: ProbeOutput,
    on_step: ProgressFn | None,
) -> spectrum.EigenResult:
    """λmax by power iteration, stopped when the residual ‖Hv − θv‖ ≤ tol·|θ| (or after max_iter products).

    Power iteration converges to the eigenvalue of largest magnitude, which is λmax unless a negative
    eigenvalue is larger in magnitude; the record says so. ``|λ − θ| ≤ r + rounding`` for some eigenvalue
    λ, with no certificate that it is the extreme one: ``error_bound`` is null.
    """
    res = spectrum.power_iteration(
        op,
        tol=req.tol,
        max_iter=req.max_iter,
        seed=req.seed,
        on_step=on_step,
        reference=None if ref is None else ref[0],
        reference_scale=1.0 if ref is None else ref[1],
    )
    theta = res.eigenvalues[0]
    bound = eigen_bounds.pair_bounds(res, 1, None)[0]
    out.results["lambda_max"] = {
        "estimate": theta,
        "residual": res.residuals[0],
        "relative_residual": res.relative_residuals[0],
        "rounding": bound.rounding if res.rounding is not None else None,
        "nearest_eigenvalue_bound": bound.nearest,
        "error_bound": bound.error_bound,
        "error_bound_note": bound.note,
        "ritz_residual_estimate": res.residuals[0],  # the stopping test uses the exact residual itself
        "converged": res.converged,
        "iterations": res.iterations,
        "num_matvecs": res.num_matvecs,
        "method": res.method,
        "tol": res.tol,
        "stop": "residual",
        "seed": req.seed,
        "shared_run": False,
        "residual_method": "||Hv - theta v|| of the last iterate, from the product that made it",
        "error_bound_includes_rounding": res.rounding is not None,
        "certificate": None,
        "note": "power iteration: the eigenvalue of largest magnitude; "
        "no certificate that it is the extreme one",
    }
    out.scalars["lambda_max"] = theta
    return res


def _eigen(
    op: HVP | GGN,
    ref: tuple[Operator, float] | None,
    req: ProbeRequest,
    out: ProbeOutput,
    on_step: ProgressFn | None,
) -> spectrum.EigenResult:
    """λmax, the top k and/or λmin by Lanczos (or power iteration) with their bounds; returns the run."""
    if req.eig_method == "power":
        return _power(op, ref, req, out, on_step)
    k = max(1, req.top_k)
    top = req.needs_lambda_max
    which = "both" if (top and req.lambda_min) else ("largest" if top else "smallest")
    res = spectrum.lanczos(
        op,
        k=k if top else 1,
        which=which,
        tol=req.tol,
        max_iter=req.max_iter,
        seed=req.seed,
        on_step=on_step,
        stop=req.eig_stop,
        k_smallest=1,  # lambda_min is one eigenvalue whatever --top-k asks at the other end
        true_residuals=True,
        eigenvectors=req.eigenvectors and top,
        reference=None if ref is None else ref[0],
        reference_scale=1.0 if ref is None else ref[1],
    )
    if res.eigenvectors is not None:
        out.eigenvectors = res.eigenvectors[:k]
    cert = eigen_bounds.certificate(res)
    run: LanczosRun = {
        "iterations": res.iterations,
        "num_matvecs": res.num_matvecs,
        "method": res.method,
        "tol": res.tol,
        "stop": res.stop,
        "seed": req.seed,
        "shared_run": which == "both",
        "residual_method": "||Hv - lambda v||, one product per pair after the run",
        "error_bound_includes_rounding": res.rounding is not None,
        "certificate": cert.to_dict(),
        "vector_memory": res.vector_memory,
    }
    n_top = k if top else 0
    bounds = eigen_bounds.pair_bounds(res, n_top, cert)
    if top:
        out.results["lambda_max"] = {**_pairs(res, bounds, 0, 1, single=True), **run}
        out.scalars["lambda_max"] = res.eigenvalues[0]
        if req.top_k > 0:
            out.results["top_k"] = {**_pairs(res, bounds, 0, k), **run}
            out.scalars.update({f"lambda_{i + 1}": v for i, v in enumerate(res.eigenvalues[:k])})
    if req.lambda_min:
        lo = res.eigenvalues[n_top]
        out.results["lambda_min"] = {**_pairs(res, bounds, n_top, n_top + 1, single=True), **run}
        out.scalars["lambda_min"] = lo
        if top:
            kappa = spectrum.condition_number(res.eigenvalues[0], lo)
            note = (
                "lambda_max / lambda_min"
                if kappa is not None
                else "not meaningful: lambda_min <= 0 (the Hessian is not positive definite here)"
            )
            out.results["condition_number"] = {"estimate": kappa, "note": note}
            out.scalars["condition_number"] = kappa
    return res


@overload
def _pairs(
    res: spectrum.EigenResult, bounds: list[PairBound], start: int, stop: int, single: Literal[True]
) -> EigenPair: ...


@overload
def _pairs(
    res: spectrum.EigenResult, bounds: list[PairBound], start: int, stop: int, single: Literal[False] = ...
) -> EigenPairs: ...


def _pairs(
    res: spectrum.EigenResult,
    bounds: list[eigen_bounds.PairBound],
    start: int,
    stop: int,
    single: bool = False,
) -> EigenPair | EigenPairs:
    """The record of pairs ``start:stop`` of one Lanczos run, converged on their own tests."""
    flags = (res.converged_pairs or [res.converged] * len(res.eigenvalues))[start:stop]
    part = bounds[start:stop]
    measured = res.rounding is not None
    record: PairLists = {
        "eigenvalues": res.eigenvalues[start:stop],
        "residuals": res.residuals[start:stop],
        "relative_residuals": res.relative_residuals[start:stop],
        "roundings": [b.rounding for b in part] if measured else None,
        "nearest_eigenvalue_bounds": [b.nearest for b in part],
        "error_bounds": [b.error_bound for b in part],
        "error_bound_notes": [b.note for b in part],
        "ritz_residual_estimates": (res.ritz_residuals or res.residuals)[start:stop],
    }
    if not single:
        return {**record, "converged": all(flags), "converged_pairs": flags}
    return {
        "estimate": res.eigenvalues[start],
        "residual": res.residuals[start],
        "relative_residual": res.relative_residuals[start],
        "rounding": part[0].rounding if measured else None,
        "nearest_eigenvalue_bound": part[0].nearest,
        "error_bound": part[0].error_bound,
        "error_bound_note": part[0].note,
        "ritz_residual_estimate": (res.ritz_residuals or res.residuals)[start],
        "converged": flags[0],
    }


def _trace_density(
    op: HVP | GGN,
    rnd: rounding.Rounding | None,
    ref: tuple[Operator, float] | None,
    req: ProbeRequest,
    out: ProbeOutput,
    on_step: ProgressFn | None,
) -> rounding.Rounding | None:
    """Trace/‖H‖_F and the density, with the rounding floor (refined where it matters); returns the floor."""
    if req.needs_trace:
        fn = trace.TRACE_METHODS[req.trace_method]
        tf = fn(op, num_matvecs=req.trace_matvecs, seed=req.seed, on_step=on_step)
        if rnd is not None and ref is not None:
            rnd = rounding.refine(rnd, op, ref[0], _stat(tf.trace), _stat(tf.frobenius_sq))
            tf = tf.with_rounding(rnd.trace, rnd.frobenius_sq)
        out.results["trace"] = {**tf.trace.to_dict(), "seed": req.seed}
        out.results["frobenius"] = {**tf.frobenius.to_dict(), "seed": req.seed}
        out.scalars.update(trace=tf.trace.estimate, frobenius=tf.frobenius.estimate)
    if req.density:
        d = dens.slq(
            op, num_runs=req.density_runs, num_steps=req.density_steps, seed=req.seed, on_step=on_step
        )
        d_trace, d_moment2 = dens.trace(d), dens.moment(d, 2)
        if rnd is not None and ref is not None:
            rnd = rounding.refine(rnd, op, ref[0], _stat(d_trace), _stat(d_moment2))
            d_trace, d_moment2 = d_trace.with_rounding(rnd.trace), d_moment2.with_rounding(rnd.frobenius_sq)
        curve = dens.density_curve(d)
        out.results["density"] = {
            "nodes": d.nodes.tolist(),
            "weights": d.weights.tolist(),
            "run": d.run.tolist(),
            "grid": curve.grid.tolist(),
            "density": curve.density.tolist(),
            "sigma": curve.sigma,
            "num_runs": d.num_runs,
            "num_steps": d.num_steps,
            "num_matvecs": d.num_matvecs,
            "seed": req.seed,
            "method": "stochastic Lanczos quadrature",
            "dim": d.dim,
            "trace": d_trace.to_dict(),
            "moment2": d_moment2.to_dict(),
        }
        erank = dens.effective_rank_jackknife(d)
        out.results["effective_rank"] = {**erank, "method": "slq measure (p = |lambda| / sum |lambda|)"}
        out.scalars["effective_rank"] = erank["estimate"]
    return rnd


def _stat(e: trace.Estimate) -> float:
    """The statistical part of an estimate's uncertainty, ``k_ν · stderr``."""
    return trace.t_factor(e.dof) * e.stderr


def _reference(obj: Objective, op: HVP | GGN, cur: Curvature) -> tuple[Operator, float]:
    """The same matrix as ``op`` in the reference dtype (no graph kept), and the scale of differences."""
    ref_dtype, scale = rounding.reference_dtype(next(iter(op.params.values())).dtype)
    ref_obj = rounding.cast(obj, ref_dtype)
    if cur.kind == "hessian":
        return HVP(ref_obj, "double_backward", retain_chunks=0), scale
    return GGN(ref_obj, cur, retain_chunks=0), scale


def _sharpness(obj: Objective, req: ProbeRequest, out: ProbeOutput, on_step: ProgressFn | None) -> None:
    rows = []
    lam = out.scalars.get("lambda_max") if req.full_hessian else None
    for i, eps in enumerate(req.sharpness_eps):
        row: SharpnessRow = {
            "eps": eps,
            "kind": req.sharpness_kind,
            "random": sharp.random_sharpness(
                obj, eps, req.sharpness_directions, req.seed + i, req.sharpness_kind, req.bias, on_step
            ),
        }
        if req.sharpness_steps > 0:
            row["worst_case"] = sharp.worst_case_sharpness(
                obj, eps, req.sharpness_steps, req.seed + i, adaptive=req.sharpness_kind == "adaptive"
            )
        if req.sharpness_kind == "l2" and lam is not None:
            rise = row["worst_case"]["max_rise"] if "worst_case" in row else None
            pred = sharp.ball_prediction(eps, _grad_norm(obj, out), lam, rise)
            if "trace" in out.scalars:
                pred["half_eps2_trace_over_n"] = 0.5 * eps**2 * out.scalars["trace"] / _dim(obj)  # type: ignore[operator]
            row["quadratic_prediction"] = pred
        rows.append(row)
    out.results["sharpness"] = rows
    out.scalars["sharpness_max"] = rows[0]["random"]["s_max"]
    out.scalars["sharpness_mean"] = rows[0]["random"]["s_mean"]
    if "worst_case" in rows[0]:
        out.scalars["sharpness_worst"] = rows[0]["worst_case"]["max_rise"]


def _grad_norm(obj: Objective, out: ProbeOutput) -> float:
    """``||g||`` over the split: the one measured by ``--grad-norm``, else one gradient now."""
    known = out.scalars.get("grad_norm")
    return known if known is not None else float(norm(gradient(obj)))


def _dim(obj: Objective) -> int:
    return sum(p.numel() for p in obj.params.values())


def _noise(obj: Objective, req: ProbeRequest, out: ProbeOutput) -> None:
    res = sharp.weight_noise(obj, list(req.noise_sigmas), req.noise_samples, req.seed, req.magnitude_aware)
    tr = out.scalars.get("trace") if req.full_hessian else None
    if tr is not None and not req.magnitude_aware:
        g = _grad_norm(obj, out)
        for row in res["curve"]:
            pred = sharp.noise_prediction(
                row["sigma"], tr, g, req.noise_samples, row["loss_rise"], row["loss_rise_stderr"]
            )
            row["predicted_rise_half_sigma2_trace"] = pred.pop("predicted_rise_half_sigma2_trace")
            row["quadratic_model"] = pred
    out.results["noise"] = res


def _pac_bayes(obj: Objective, req: ProbeRequest, out: ProbeOutput, prior: pb.Prior) -> None:
    iso = sharp.pac_bayes_sigma(
        obj, req.pac_bayes_target, req.pac_bayes_metric, req.pac_bayes_samples, req.seed
    )
    res: PacBayesEntry = {
        "isotropic": iso,
        "bound": pb.bound(iso, obj.params, prior, obj.num_samples, req.pac_bayes_delta),
    }
    out.scalars["pac_bayes_sigma"] = iso["sigma"]
    out.scalars["pac_bayes_bound"] = res["bound"]["bound"]
    out.scalars["pac_bayes_bound_kl"] = res["bound"]["kl_inverse_bound"]
    if req.magnitude_aware:
        res["magnitude_aware"] = sharp.pac_bayes_sigma(
            obj,
            req.pac_bayes_target,
            req.pac_bayes_metric,
            req.pac_bayes_samples,
            req.seed,
            magnitude_aware=True,
        )
        out.scalars["pac_bayes_sigma_magnitude"] = res["magnitude_aware"]["sigma"]
    out.results["pac_bayes"] = res


def _stability(req: ProbeRequest, out: ProbeOutput) -> None:
    lam = out.scalars.get("lambda_max")
    if not req.full_hessian:
        out.results["stability"] = {
            "stable": None,
            "note": "needs lambda_max of the full Hessian (--curvature hessian, no --params)",
        }
        return
    if req.lr is None or req.optimizer is None or lam is None:
        out.results["stability"] = {
            "stable": None,
            "note": "needs the learning rate and optimiser in the checkpoint",
        }
        return
    res = sharp.stability(req.lr, lam, req.optimizer, req.momentum)
    out.results["stability"] = res
    out.scalars["eta_lambda_max"] = res["eta_lambda_max"]


def _derived(out: ProbeOutput) -> None:
    s = out.scalars
    if s.get("frobenius") and s.get("lambda_max"):
        v = dens.stable_rank(s["frobenius"], s["lambda_max"])  # type: ignore[arg-type]
        out.results["stable_rank"] = {"estimate": v, "from": "frobenius^2 / lambda_max^2"}
        s["stable_rank"] = v
    if s.get("frobenius") and s.get("trace") is not None:
        v = dens.participation_ratio(s["trace"], s["frobenius"])  # type: ignore[arg-type]
        out.results["participation_ratio"] = {"estimate": v, "from": "trace^2 / frobenius^2"}
        s["participation_ratio"] = v
    for key, value in list(s.items()):
        s[key] = _finite(value)


def summarize(scalars: list[dict[str, float | None]]) -> dict[str, ScalarSummary]:
    """Mean, std (ddof=1), min, max of every scalar over batches (nulls skipped and counted)."""
    summary: dict[str, ScalarSummary] = {}
    for key in scalars[0]:
        vals = [v for s in scalars if (v := s.get(key)) is not None]
        if not vals:
            summary[key] = {"mean": None, "std": None, "min": None, "max": None, "n": 0}
            continue
        mean, var = mean_var(vals)
        std = math.sqrt(var) if len(vals) > 1 else None
        summary[key] = {"mean": mean, "std": std, "min": min(vals), "max": max(vals), "n": len(vals)}
    return summary


def run_on_batches(
    objectives: list[Objective],
    req: ProbeRequest,
    on_step: ProgressFn | None = None,
    prior: pb.Prior | None = None,
) -> tuple[list[ProbeResults], dict[str, ScalarSummary]]:
    """:func:`run_probe` on each batch; per-batch results and the summary of every scalar."""
    outs = [run_probe(o, req, on_step, prior) for o in objectives]
    return [o.results for o in outs], summarize([o.scalars for o in outs])
