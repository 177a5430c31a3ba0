"""Perturbation-based flatness: sharpness, weight-noise robustness, PAC-Bayes sigma, stability.

All measurements evaluate the whole-split loss of an :class:`~lscape_cli.core.linalg.hvp.Objective` at
``theta + delta`` (points placed absolutely, never by accumulating in-place steps) and report the
budget, the seed and a standard error or a convergence state next to every number.

Perturbation geometries (``kind``):

- ``"l2"``: ``delta = eps * u / ||u||`` with ``u ~ N(0, I)``: seed 003's random-direction sharpness
  ``S_eps = max/mean_i L(theta + eps u_i) - L(theta)``. Its quadratic predictions are
  ``1/2 eps^2 tr(H)/n`` for the mean and ``<= 1/2 eps^2 lambda_max`` for the max (seeds 002/003).
- ``"filter"``: ``delta = eps * d`` with ``d`` filter-normalised (Li et al. 2018), so ``eps`` is relative to
  each filter's norm.
- ``"adaptive"``: ``delta = |theta| * gamma`` with ``||gamma|| = eps`` (elementwise adaptive sharpness,
  Kwon et al. 2021 "ASAM"; Andriushchenko et al. 2023 "A modern look at the relationship between
  sharpness and generalization"). Invariant under rescaling a ReLU layer by c and the next by 1/c.
"""

from __future__ import annotations

import math
from typing import TypedDict

import torch

from lscape_cli.core.choices import PacBayesMetric, SharpnessKind
from lscape_cli.core.landscape.directions import gaussian_direction, normalize
from lscape_cli.core.linalg.hvp import Objective, Params, axpy, loss_and_gradient, norm, scale
from lscape_cli.core.linalg.stats import mean_stderr
from lscape_cli.core.objective import evaluate
from lscape_cli.core.progress import ProgressFn

KINDS = SharpnessKind.values()


@torch.no_grad()
def loss_accuracy(obj: Objective, params: Params) -> tuple[float, float]:
    """Whole-split mean loss and accuracy at ``params`` (chunked, sample-weighted, summed over ranks)."""
    return evaluate(
        obj.model,
        obj.x,
        obj.y,
        obj.loss,
        obj.max_batch,
        params=params,
        buffers=obj.buffers,
        reduce=obj.reduce,
        num_samples=obj.num_units,
    )


def perturbation(theta: Params, kind: str, eps: float, gen: torch.Generator, bias: str = "zero") -> Params:
    """One random ``delta`` of size ``eps`` in the given geometry (see module docstring)."""
    if kind not in KINDS:
        raise ValueError(f"unknown perturbation kind {kind!r}: expected one of {KINDS}")
    u = gaussian_direction(theta, gen)
    if kind == "l2":
        return scale(eps / float(norm(u)), u)
    if kind == "filter":
        return scale(eps, normalize(u, theta, "filter", bias))
    u = scale(eps / float(norm(u)), u)
    return {n: theta[n].abs() * u[n] for n in theta}


class RandomSharpness(TypedDict):
    """:func:`random_sharpness`: a probe record's ``sharpness[i].random``."""

    method: str
    eps: float
    num_directions: int
    seed: int
    bias: str | None
    base_loss: float
    s_max: float
    s_mean: float
    s_mean_stderr: float | None
    rises: list[float]
    num_loss_evals: int


class WorstCaseSharpness(TypedDict):
    """:func:`worst_case_sharpness`: a probe record's ``sharpness[i].worst_case``."""

    method: str
    adaptive: bool
    eps: float
    steps: int
    step_size: float
    seed: int
    base_loss: float
    max_rise: float
    rise_per_step: list[float]
    num_gradient_evals: int


class _BallModel(TypedDict):
    first_order_eps_grad_norm: float
    half_eps2_lambda_max: float
    first_plus_second_order: float
    grad_norm: float
    quadratic_term_dominates: bool
    quadratic_term_dominates_from_eps: float | None
    quadratic_model_holds: bool | None


class BallPrediction(_BallModel, total=False):
    """:func:`ball_prediction`: a probe record's ``sharpness[i].quadratic_prediction``."""

    measured_max_rise: float  # with a measured worst-case rise (--ascent-steps)
    measured_over_first_plus_second_order: float | None
    note: str
    half_eps2_trace_over_n: float  # added by the probe when the trace is known


class NoiseRow(TypedDict, total=False):
    """One sigma of :func:`weight_noise`'s ``curve`` (the quadratic model's keys added by the probe)."""

    sigma: float
    loss_rise: float
    loss_rise_stderr: float | None
    accuracy_drop: float
    accuracy_drop_stderr: float | None
    predicted_rise_half_sigma2_trace: float
    quadratic_model: NoisePrediction


class WeightNoise(TypedDict):
    """:func:`weight_noise`: a probe record's ``noise`` entry."""

    method: str
    samples: int
    seed: int
    base_loss: float
    base_accuracy: float
    curve: list[NoiseRow]


class SigmaSearch(TypedDict):
    """:func:`pac_bayes_sigma`: a probe record's ``pac_bayes.isotropic`` (and ``magnitude_aware``)."""

    method: str
    metric: str
    target: float
    sigma: float
    bracket: list[float]
    relative_bracket_width: float | None
    grid_size: int
    rise_at_sigma: float
    error_at_sigma: float | None
    error_stderr: float | None
    samples: int
    iterations: int
    seed: int
    status: str


class Stability(TypedDict, total=False):
    """A probe record's ``stability`` entry (:func:`stability`, or ``stable: null`` with a ``note``)."""

    lr: float
    lambda_max: float
    eta_lambda_max: float
    threshold: float
    ratio: float
    stable: bool | None
    rule: str
    note: str


class _NoiseModel(TypedDict):
    measured_rise: float
    measured_over_predicted: float | None
    first_order_spread_sigma_grad_norm: float
    first_order_stderr_of_mean: float
    quadratic_model_applies: bool


class NoisePrediction(_NoiseModel, total=False):
    """:func:`noise_prediction` (the probe moves ``predicted_rise_half_sigma2_trace`` up to the row)."""

    predicted_rise_half_sigma2_trace: float


def random_sharpness(
    obj: Objective,
    eps: float,
    num_directions: int = 10,
    seed: int = 0,
    kind: str = "l2",
    bias: str = "zero",
    on_step: ProgressFn | None = None,
) -> RandomSharpness:
    """Seed 003's ``S_max`` and ``S_mean`` over ``num_directions`` random perturbations of size ``eps``."""
    base, _ = loss_accuracy(obj, obj.params)
    gen = torch.Generator().manual_seed(seed)
    rises = []
    for i in range(num_directions):
        delta = perturbation(obj.params, kind, eps, gen, bias)
        rises.append(loss_accuracy(obj, axpy(1.0, delta, obj.params))[0] - base)
        if on_step is not None:
            on_step({"estimator": "sharpness", "step": i + 1, "total": num_directions})
    mean, se = mean_stderr(rises)
    return {
        "method": f"random directions ({kind})",
        "eps": eps,
        "num_directions": num_directions,
        "seed": seed,
        "bias": bias if kind == "filter" else None,
        "base_loss": base,
        "s_max": max(rises),
        "s_mean": mean,
        "s_mean_stderr": se,
        "rises": rises,
        "num_loss_evals": num_directions + 1,
    }


def worst_case_sharpness(
    obj: Objective, eps: float, steps: int = 20, seed: int = 0, adaptive: bool = False
) -> WorstCaseSharpness:
    """Largest loss rise found in the ``eps``-ball by projected (normalised) gradient ascent.

    SAM-style (Foret et al. 2021) when ``steps == 1``. The ball is ``||delta|| <= eps``, or
    ``||delta / |theta| || <= eps`` when ``adaptive`` (Andriushchenko et al. 2023). Gradient ascent only
    finds a lower bound on the maximum; the record says so and keeps the rise per step.
    """
    theta = obj.params
    t = {n: p.abs() for n, p in theta.items()} if adaptive else None
    base, _ = loss_accuracy(obj, theta)
    gen = torch.Generator().manual_seed(seed)
    gamma = scale(
        1e-3 * eps, _unit(gaussian_direction(theta, gen))
    )  # tiny random start: g may vanish at a minimum
    step = eps  # a full-radius step, then projection: on a quadratic this is a shifted power iteration
    # converging like ((1 + lambda_2/lambda_1) / 2)^t; smaller steps crawl along the sphere.
    trace_rises = []
    for _ in range(steps):
        delta = _apply_t(gamma, t)
        _, g = loss_and_gradient(
            Objective(obj.model, axpy(1.0, delta, theta), obj.buffers, obj.x, obj.y, obj.loss, obj.max_batch)
        )
        g = _apply_t(g, t)  # chain rule: d/d gamma = T * grad
        gamma = axpy(step / max(float(norm(g)), 1e-30), g, gamma)
        gamma = scale(min(1.0, eps / max(float(norm(gamma)), 1e-30)), gamma)
        trace_rises.append(loss_accuracy(obj, axpy(1.0, _apply_t(gamma, t), theta))[0] - base)
    return {
        "method": "projected gradient ascent (a lower bound on the max)",
        "adaptive": adaptive,
        "eps": eps,
        "steps": steps,
        "step_size": step,
        "seed": seed,
        "base_loss": base,
        "max_rise": max(trace_rises),
        "rise_per_step": trace_rises,
        "num_gradient_evals": steps,
    }


def _unit(v: Params) -> Params:
    return scale(1.0 / max(float(norm(v)), 1e-30), v)


def _apply_t(v: Params, t: Params | None) -> Params:
    return v if t is None else {n: t[n] * v[n] for n in v}


def weight_noise(
    obj: Objective, sigmas: list[float], samples: int = 10, seed: int = 0, magnitude_aware: bool = False
) -> WeightNoise:
    """Mean loss rise and accuracy drop under Gaussian weight noise (seed 004), per ``sigma``.

    ``delta ~ N(0, sigma^2 I)``, or ``N(0, sigma^2 theta_i^2)`` elementwise when ``magnitude_aware``. The
    same standard-normal draws are reused for every sigma (common random numbers), so the curve is
    smooth in sigma. The quadratic model predicts a rise of ``1/2 sigma^2 tr(H)`` (isotropic noise).
    """
    base_loss, base_acc = loss_accuracy(obj, obj.params)
    gen = torch.Generator().manual_seed(seed)
    draws = [gaussian_direction(obj.params, gen) for _ in range(samples)]
    rows: list[NoiseRow] = []
    for sigma in sigmas:
        pairs = [loss_accuracy(obj, _noisy(obj.params, z, sigma, magnitude_aware)) for z in draws]
        losses, accs = [p[0] for p in pairs], [p[1] for p in pairs]
        rise, rise_se = mean_stderr([v - base_loss for v in losses])
        drop, drop_se = mean_stderr([base_acc - a for a in accs])
        rows.append(
            {
                "sigma": sigma,
                "loss_rise": rise,
                "loss_rise_stderr": rise_se,
                "accuracy_drop": drop,
                "accuracy_drop_stderr": drop_se,
            }
        )
    return {
        "method": "Gaussian weight noise" + (" (magnitude-aware)" if magnitude_aware else ""),
        "samples": samples,
        "seed": seed,
        "base_loss": base_loss,
        "base_accuracy": base_acc,
        "curve": rows,
    }


def _noisy(theta: Params, z: Params, sigma: float, magnitude_aware: bool, floor: float = 0.0) -> Params:
    if magnitude_aware:  # Jiang et al. 2020: variance sigma^2 theta_i^2 + floor^2
        return {n: theta[n] + z[n] * torch.sqrt((sigma * theta[n]) ** 2 + floor**2) for n in theta}
    return {n: theta[n] + sigma * z[n] for n in theta}


def pac_bayes_sigma(
    obj: Objective,
    target: float = 0.1,
    metric: str = "error",
    samples: int = 10,
    seed: int = 0,
    magnitude_aware: bool = False,
    iterations: int = 20,
    bracket: tuple[float, float] = (1e-6, 10.0),
    floor: float = 1e-3,
) -> SigmaSearch:
    """Largest sigma whose expected rise in ``metric`` stays within ``target`` (Jiang et al. 2020).

    Jiang et al., "Fantastic Generalization Measures and Where to Find Them" (ICLR 2020): the PAC-Bayes
    flatness measures use the largest ``sigma`` with ``E_u[err(theta + u)] - err(theta) <= target``,
    ``u ~ N(0, sigma^2 I)``, or for the magnitude-aware variant ``u_i ~ N(0, sigma^2 theta_i^2 + floor^2)``.
    Bisection on log sigma with fixed draws (common random numbers); the final bracket is the
    convergence state. The returned sigma is always one of ``grid_size = 2^iterations + 1`` values fixed
    before any measurement (``bracket[0] * (bracket[1] / bracket[0])^(j / 2^iterations)``), which is what
    the PAC-Bayes bound's union bound counts (:mod:`lscape_cli.core.probe.pac_bayes`). ``error_at_sigma`` and
    ``error_stderr``: the mean 0-1 error over the draws at sigma and its standard error (None without
    class labels).
    """
    if metric not in PacBayesMetric.values():
        raise ValueError(f"metric must be 'error' or 'loss', got {metric!r}")
    base_loss, base_acc = loss_accuracy(obj, obj.params)
    gen = torch.Generator().manual_seed(seed)
    draws = [gaussian_direction(obj.params, gen) for _ in range(samples)]

    def measure(sigma: float) -> list[tuple[float, float]]:
        scale_floor = floor if magnitude_aware else 0.0
        return [loss_accuracy(obj, _noisy(obj.params, z, sigma, magnitude_aware, scale_floor)) for z in draws]

    def mean_rise(vals: list[tuple[float, float]]) -> float:
        return sum((v[0] - base_loss) if metric == "loss" else (base_acc - v[1]) for v in vals) / samples

    def rise(sigma: float) -> float:
        return mean_rise(measure(sigma))

    lo, hi = bracket
    r_lo, r_hi = rise(lo), rise(hi)
    status = "converged"
    if r_lo > target:
        status, hi = "below bracket (sigma < lower end)", lo
    elif r_hi <= target:
        status, lo = "above bracket (sigma > upper end)", hi
    else:
        for _ in range(iterations):
            mid = math.sqrt(lo * hi)
            if rise(mid) <= target:
                lo = mid
            else:
                hi = mid
    at_sigma = measure(lo)
    errors = [1.0 - a for _, a in at_sigma]  # NaN accuracies (regression): no error rate
    err, err_se = mean_stderr(errors) if all(math.isfinite(e) for e in errors) else (None, None)
    err_se = err_se if err_se is not None and math.isfinite(err_se) else None  # one draw: no stderr
    return {
        "method": "bisection on log sigma" + (" (magnitude-aware)" if magnitude_aware else ""),
        "metric": metric,
        "target": target,
        "sigma": lo,
        "bracket": [lo, hi],
        "relative_bracket_width": hi / lo - 1.0 if lo > 0 else None,
        "grid_size": 2**iterations + 1,
        "rise_at_sigma": mean_rise(at_sigma),
        "error_at_sigma": err,
        "error_stderr": err_se,
        "samples": samples,
        "iterations": iterations,
        "seed": seed,
        "status": status,
    }


def stability(lr: float, lambda_max: float, optimizer: str, momentum: float = 0.0) -> Stability:
    """Compare ``eta * lambda_max`` with the stability threshold of the optimiser (seed 004).

    Gradient descent on a quadratic is stable iff ``eta * lambda_max < 2``; heavy-ball momentum ``beta``
    raises the threshold to ``2 (1 + beta)``. Adam's preconditioner changes the relevant curvature, so
    the plain threshold does not apply and ``stable`` is ``None``.
    """
    value = lr * lambda_max
    if optimizer == "sgd":
        threshold = 2.0 * (1.0 + momentum)
        rule = "eta*lambda_max < 2" if momentum == 0 else f"eta*lambda_max < 2(1+momentum) = {threshold:g}"
        return {
            "lr": lr,
            "lambda_max": lambda_max,
            "eta_lambda_max": value,
            "threshold": threshold,
            "ratio": value / threshold,
            "stable": value < threshold,
            "rule": rule,
        }
    return {
        "lr": lr,
        "lambda_max": lambda_max,
        "eta_lambda_max": value,
        "threshold": 2.0,
        "ratio": value / 2.0,
        "stable": None,
        "rule": f"{optimizer}: adaptive preconditioning; the gradient-descent threshold 2 "
        "is shown for reference only",
    }


MODEL_RATIO = 0.1  # a term counts as negligible beside another below this fraction of it


def ball_prediction(
    eps: float, grad_norm: float, lambda_max: float, measured_rise: float | None = None
) -> BallPrediction:
    """Taylor model of the largest loss rise over the ``eps``-ball: ``eps ||g|| + 1/2 eps^2 lambda_max``.

    To second order, ``L(theta + delta) - L(theta) = g . delta + 1/2 delta^T H delta``; over
    ``||delta|| <= eps`` the first term is at most ``eps ||g||`` and the second at most
    ``1/2 eps^2 lambda_max``, so the model's maximum lies between the larger of the two and their sum.
    Two separate questions, two flags:

    - ``quadratic_term_dominates``: the first-order term is negligible beside the second,
      ``eps ||g|| <= MODEL_RATIO * 1/2 eps^2 lambda_max``, i.e. ``eps >= 2 ||g|| / (MODEL_RATIO lambda_max)``
      (``quadratic_term_dominates_from_eps``). A comparison of two Taylor terms: it says nothing about
      whether the Taylor model describes the loss at this ``eps`` (third and higher orders).
    - ``quadratic_model_holds``: with a measured worst-case rise (``--ascent-steps``), the quadratic term
      dominates *and* the measured rise lies within ``MODEL_RATIO`` of the model's range,
      ``(1 - MODEL_RATIO) max(eps ||g||, 1/2 eps^2 lambda_max) <= rise <= (1 + MODEL_RATIO) (eps ||g|| +
      1/2 eps^2 lambda_max)``; None without a measurement (nothing has tested the model then).
    """
    first, second = eps * grad_norm, 0.5 * eps**2 * lambda_max
    dominates = second > 0 and first <= MODEL_RATIO * second
    threshold = 2 * grad_norm / (MODEL_RATIO * lambda_max) if lambda_max > 0 else None
    total = first + max(second, 0.0)
    out: BallPrediction = {
        "first_order_eps_grad_norm": first,
        "half_eps2_lambda_max": second,
        "first_plus_second_order": total,
        "grad_norm": grad_norm,
        "quadratic_term_dominates": dominates,
        "quadratic_term_dominates_from_eps": threshold,
        "quadratic_model_holds": None,
    }
    if measured_rise is not None:
        inside = (1 - MODEL_RATIO) * max(first, second) <= measured_rise <= (1 + MODEL_RATIO) * total
        out["measured_max_rise"] = measured_rise
        out["measured_over_first_plus_second_order"] = measured_rise / total if total > 0 else None
        out["quadratic_model_holds"] = dominates and inside
    out["note"] = _ball_note(dominates, out["quadratic_model_holds"])
    return out


def _ball_note(dominates: bool, holds: bool | None) -> str:
    """What the two flags of :func:`ball_prediction` say, in words."""
    term = (
        f"the quadratic term dominates (eps ||g|| below {MODEL_RATIO:g} of 1/2 eps^2 lambda_max)"
        if dominates
        else "the first-order term eps ||g|| is not negligible beside 1/2 eps^2 lambda_max"
    )
    if holds is None:
        model = "the Taylor model itself is untested (--ascent-steps measures the rise)"
    elif holds:
        model = f"the measured worst-case rise is within {MODEL_RATIO:g} of the model's range"
    else:
        model = "the model does not hold here: the measured worst-case rise is outside its range"
    head = "max rise over the eps-ball ~ eps ||g|| + 1/2 eps^2 lambda_max (second-order Taylor model)"
    return f"{head}; {term}; {model}"


def noise_prediction(
    sigma: float, trace: float, grad_norm: float, samples: int, rise: float, rise_stderr: float | None
) -> NoisePrediction:
    """Taylor model of the mean loss rise under ``N(0, sigma^2 I)`` weight noise against the measured one.

    ``E[g . delta] = 0`` and ``E[1/2 delta^T H delta] = 1/2 sigma^2 tr(H)``, so the quadratic model
    predicts a mean rise of ``1/2 sigma^2 tr(H)``; the first-order term adds no mean but a spread of
    ``sigma ||g||`` per draw, ``sigma ||g|| / sqrt(samples)`` on the mean of the draws. The model is
    said to apply (``quadratic_model_applies``) when the measured mean rise lies within two standard
    errors, or ``MODEL_RATIO`` of the prediction, from ``1/2 sigma^2 tr(H)``.
    """
    predicted = 0.5 * sigma**2 * trace
    allowance = max(2 * (rise_stderr or 0.0), MODEL_RATIO * abs(predicted))
    return {
        "predicted_rise_half_sigma2_trace": predicted,
        "measured_rise": rise,
        "measured_over_predicted": rise / predicted if predicted != 0 else None,
        "first_order_spread_sigma_grad_norm": sigma * grad_norm,
        "first_order_stderr_of_mean": sigma * grad_norm / samples**0.5,
        "quadratic_model_applies": abs(rise - predicted) <= allowance,
    }
