"""`probe`'s library call: run the requested curvature and flatness measurements on one objective.

One :class:`ProbeRequest` says what to measure; :func:`run_probe` returns the ``results`` dict of a
``lscape.probe/1`` record and a flat ``scalars`` namespace for ``--check`` gates. :func:`run_on_batches`
repeats it on disjoint batches and summarises every scalar (mean, std, min, max), seed 001's protocol
("top-3 eigenvalues over 5 test mini-batches").

Keys of ``results`` (each estimate carries its method, budget, seed and uncertainty/convergence):

- ``loss``: ``{"value", "accuracy", "num_samples"}`` at the checkpoint (for regression targets the
  accuracy is NaN, written as ``null``, and is not a ``--check`` scalar).
- ``hvp`` (when Hessian-vector products ran): the strategy, how it was chosen (``seconds_per_product``
  of each candidate under ``measure``), and the memory plan: ``chunk_size``, ``num_chunks``,
  ``retain_chunks``, ``memory_budget_mib``, measured ``graph_bytes_per_sample`` (see
  :func:`lscape_cli.core.memory.plan`).
- ``lambda_max``: ``{"estimate", "residual", "relative_residual", "error_bound", "converged",
  "iterations", "num_matvecs", "method", "tol", "stop", "seed"}`` (Lanczos, stopped on the Ritz
  residual's error bound ``min(r, r²/δ̂)`` or on ``r`` itself, see :mod:`lscape_cli.core.spectrum`).
- ``top_k``: ``{"eigenvalues", "residuals", ...}`` the K largest, same run as ``lambda_max``.
- ``lambda_min``: like ``lambda_max`` for the smallest (most negative) eigenvalue.
- ``condition_number``: ``{"estimate": lambda_max/lambda_min or null, "note"}``.
- ``trace``, ``frobenius``: ``{"estimate", "stderr", "method", "num_matvecs", "seed"}``, both from one
  set of Hessian-vector products (Hutchinson or Hutch++).
- ``density``: SLQ ``{"nodes", "weights", "grid", "density", "sigma", "num_runs", "num_steps",
  "num_matvecs", "seed", "trace", "moment2"}``.
- ``effective_rank``: ``{"estimate", "method"}`` (from the SLQ measure); ``stable_rank`` and
  ``participation_ratio``: ``{"estimate", "from"}`` when their inputs were measured.
- ``grad_norm``: ``{"estimate", "method": "exact"}``.
- ``sharpness``: one entry per eps: ``{"eps", "random", "worst_case", "quadratic_prediction"}``.
- ``noise``: weight-noise robustness curve with the ``1/2 sigma^2 tr(H)`` prediction when the trace is known.
- ``pac_bayes``: the largest sigma within the target (and its magnitude-aware variant when asked).
- ``stability``: ``eta * lambda_max`` against the optimiser's threshold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from lscape_cli.core import density as dens
from lscape_cli.core import sharpness as sharp
from lscape_cli.core import spectrum, trace
from lscape_cli.core.hvp import HVP, Objective, gradient, norm, plan
from lscape_cli.core.objective import task_of
from lscape_cli.core.progress import ProgressFn
from lscape_cli.core.stats import mean_var
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
    stability: bool = False
    lr: float | None = None  # from the checkpoint, for stability
    optimizer: str | None = None
    momentum: float = 0.0
    tol: float = 1e-6
    eig_stop: str = "bound"  # "bound" or "residual" (spectrum.lanczos)
    max_iter: int = 200
    seed: int = 0
    hvp_strategy: str = "auto"
    memory_budget_mib: float | None = None  # kept gradient graphs; None: the device's default (memory.plan)
    retain_chunks: int | None = None  # kept chunk graphs; None: as many as fit the budget
    bias: str = "zero"  # filter-normalised sharpness: bias policy

    @property
    def needs_lambda_max(self) -> bool:
        """λmax is also needed for stability and for the sharpness quadratic prediction."""
        return self.lambda_max or self.top_k > 0 or self.stability or bool(self.sharpness_eps)

    @property
    def needs_trace(self) -> bool:
        """Trace and Frobenius norm come from the same products."""
        return self.trace or self.frobenius


@dataclass
class ProbeOutput:
    """``results`` for the record and the scalar namespace for checks."""

    results: dict[str, Any] = field(default_factory=dict)
    scalars: dict[str, float | None] = field(default_factory=dict)


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


def run_probe(obj: Objective, req: ProbeRequest, on_step: ProgressFn | None = None) -> ProbeOutput:
    """Run every measurement ``req`` asks for at ``obj.params``."""
    out = ProbeOutput()
    _check_task(obj, req)
    chunking = plan(obj, req.memory_budget_mib, req.retain_chunks)  # chunk size from measured memory
    obj = chunking.apply(obj)
    loss, acc = sharp.loss_accuracy(obj, obj.params)
    out.results["loss"] = {"value": loss, "accuracy": acc, "num_samples": obj.num_samples}
    out.scalars.update(loss=loss, **({} if task_of(obj.y) == "regression" else {"accuracy": acc}))
    # one gradient graph for every HVP estimator, then freed
    with HVP(obj, req.hvp_strategy, chunking.retain_chunks) as op:
        if req.needs_lambda_max or req.lambda_min:
            _eigen(op, req, out, on_step)
        if req.needs_trace or req.density:
            _trace_density(op, req, out, on_step)
    if op.num_matvecs:
        out.results["hvp"] = {**op.describe(), **chunking.to_dict()}
    if req.grad_norm:
        g = float(norm(gradient(obj)))
        out.results["grad_norm"] = {"estimate": g, "method": "exact (whole split)"}
        out.scalars["grad_norm"] = g
    if req.sharpness_eps:
        _sharpness(obj, req, out, on_step)
    if req.noise_sigmas:
        _noise(obj, req, out)
    if req.pac_bayes:
        _pac_bayes(obj, req, out)
    if req.stability:
        _stability(req, out)
    _derived(out)
    return out


def _eigen(op: HVP, req: ProbeRequest, out: ProbeOutput, on_step: ProgressFn | None) -> None:
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
    )
    common = {
        "converged": res.converged,
        "iterations": res.iterations,
        "num_matvecs": res.num_matvecs,
        "method": res.method,
        "tol": res.tol,
        "stop": res.stop,
        "seed": req.seed,
    }
    n_top = k if top else 0
    rel = res.relative_residuals
    bounds = res.error_bounds or res.residuals
    if top:
        out.results["lambda_max"] = {
            "estimate": res.eigenvalues[0],
            "residual": res.residuals[0],
            "relative_residual": rel[0],
            "error_bound": bounds[0],
            **common,
        }
        out.scalars["lambda_max"] = res.eigenvalues[0]
        if req.top_k > 0:
            out.results["top_k"] = {
                "eigenvalues": res.eigenvalues[:k],
                "residuals": res.residuals[:k],
                "relative_residuals": rel[:k],
                "error_bounds": bounds[:k],
                **common,
            }
            out.scalars.update({f"lambda_{i + 1}": v for i, v in enumerate(res.eigenvalues[:k])})
    if req.lambda_min:
        lo = res.eigenvalues[n_top]
        out.results["lambda_min"] = {
            "estimate": lo,
            "residual": res.residuals[n_top],
            "relative_residual": rel[n_top],
            "error_bound": bounds[n_top],
            **common,
        }
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


def _trace_density(op: HVP, req: ProbeRequest, out: ProbeOutput, on_step: ProgressFn | None) -> None:
    if req.needs_trace:
        fn = trace.TRACE_METHODS[req.trace_method]
        tf = fn(op, num_matvecs=req.trace_matvecs, seed=req.seed, on_step=on_step)
        out.results["trace"] = {**tf.trace.to_dict(), "seed": req.seed}
        out.results["frobenius"] = {**tf.frobenius.to_dict(), "seed": req.seed}
        out.scalars.update(trace=tf.trace.estimate, frobenius=tf.frobenius.estimate)
    if req.density:
        d = dens.slq(
            op, num_runs=req.density_runs, num_steps=req.density_steps, seed=req.seed, on_step=on_step
        )
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
            "trace": dens.trace(d).to_dict(),
            "moment2": dens.moment(d, 2).to_dict(),
        }
        erank = dens.effective_rank_slq(d)
        out.results["effective_rank"] = {
            "estimate": erank,
            "method": "slq measure (p = |lambda| / sum |lambda|)",
        }
        out.scalars["effective_rank"] = erank


def _sharpness(obj: Objective, req: ProbeRequest, out: ProbeOutput, on_step: ProgressFn | None) -> None:
    rows = []
    lam = out.scalars.get("lambda_max")
    for i, eps in enumerate(req.sharpness_eps):
        row: dict[str, Any] = {"eps": eps, "kind": req.sharpness_kind}
        row["random"] = sharp.random_sharpness(
            obj, eps, req.sharpness_directions, req.seed + i, req.sharpness_kind, req.bias, on_step
        )
        if req.sharpness_steps > 0:
            row["worst_case"] = sharp.worst_case_sharpness(
                obj, eps, req.sharpness_steps, req.seed + i, adaptive=req.sharpness_kind == "adaptive"
            )
        if req.sharpness_kind == "l2" and lam is not None:
            pred = {
                "half_eps2_lambda_max": 0.5 * eps**2 * lam,
                "note": "quadratic model: the max rise over the eps-ball is about 1/2 eps^2 lambda_max",
            }
            if "trace" in out.scalars:
                pred["half_eps2_trace_over_n"] = 0.5 * eps**2 * out.scalars["trace"] / _dim(obj)  # type: ignore[operator]
            row["quadratic_prediction"] = pred
        rows.append(row)
    out.results["sharpness"] = rows
    out.scalars["sharpness_max"] = rows[0]["random"]["s_max"]
    out.scalars["sharpness_mean"] = rows[0]["random"]["s_mean"]
    if "worst_case" in rows[0]:
        out.scalars["sharpness_worst"] = rows[0]["worst_case"]["max_rise"]


def _dim(obj: Objective) -> int:
    return sum(p.numel() for p in obj.params.values())


def _noise(obj: Objective, req: ProbeRequest, out: ProbeOutput) -> None:
    res = sharp.weight_noise(obj, list(req.noise_sigmas), req.noise_samples, req.seed, req.magnitude_aware)
    tr = out.scalars.get("trace")
    if tr is not None and not req.magnitude_aware:
        for row in res["curve"]:
            row["predicted_rise_half_sigma2_trace"] = 0.5 * row["sigma"] ** 2 * tr
    out.results["noise"] = res


def _pac_bayes(obj: Objective, req: ProbeRequest, out: ProbeOutput) -> None:
    res = {
        "isotropic": sharp.pac_bayes_sigma(
            obj, req.pac_bayes_target, req.pac_bayes_metric, req.pac_bayes_samples, req.seed
        )
    }
    out.scalars["pac_bayes_sigma"] = res["isotropic"]["sigma"]
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


def summarize(scalars: list[dict[str, float | None]]) -> dict[str, dict[str, Any]]:
    """Mean, std (ddof=1), min, max of every scalar over batches (nulls skipped and counted)."""
    summary: dict[str, dict[str, Any]] = {}
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
    objectives: list[Objective], req: ProbeRequest, on_step: ProgressFn | None = None
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """:func:`run_probe` on each batch; per-batch results and the summary of every scalar."""
    outs = [run_probe(o, req, on_step) for o in objectives]
    return [o.results for o in outs], summarize([o.scalars for o in outs])
