"""The PAC-Bayes bound implied by the sigma of :func:`lscape_cli.core.landscape.sharpness.pac_bayes_sigma`.

Prior ``P = N(theta_0, sigma^2 I)`` centred at the initialisation ``theta_0`` (drawn before any data
was seen), posterior ``Q = N(theta, sigma^2 I)`` centred at the checkpoint. Both are isotropic with the
same variance, so ``KL(Q || P) = ||theta - theta_0||^2 / (2 sigma^2)``.

The bound (Maurer 2004, "A note on the PAC Bayesian theorem", arXiv:cs/0411099, Theorem 5, which
tightens Langford & Seeger's ``kl`` form): for a loss in ``[0, 1]`` (the 0-1 error), ``m >= 8`` i.i.d.
samples and a prior chosen before seeing them, with probability at least ``1 - delta`` over the sample,
simultaneously for every posterior ``Q``,

    ``kl(E_Q[err_S] || E_Q[err]) <= (KL(Q || P) + ln(2 sqrt(m) / delta)) / m``

with ``kl(q || p)`` the binary relative entropy. Inverting ``kl`` by bisection gives the tighter
``kl_inverse_bound``; Pinsker's inequality ``kl(q || p) >= 2 (q - p)^2`` gives the familiar closed form
(the "classic" certificate of Pérez-Ortiz, Rivasplata, Shawe-Taylor & Szepesvári 2021, "Tighter risk
certificates for neural networks", JMLR 22)

    ``E_Q[err] <= E_Q[err_S] + sqrt((KL(Q || P) + ln(2 sqrt(m) / delta)) / (2 m))``.

Choosing sigma after looking at the data: the bisection can only return one of ``G`` values fixed in
advance (its grid, :func:`lscape_cli.core.pac_bayes_sigma`'s ``grid_size``), so a union bound
over the grid (``delta / G`` for each) adds ``ln G`` to the numerator of both forms.

``E_Q[err_S]`` is a Monte-Carlo estimate over the draws the sigma search used (its standard error is
reported, not bounded), and those draws also chose sigma, so it may be biased low by about a standard
error. The bound holds for any i.i.d. sample the prior did not see, so ``m`` is the number of samples the
error was measured on (the probed split or batch), whether they were trained on or not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TypedDict

import torch

from lscape_cli.core.landscape.sharpness import SigmaSearch
from lscape_cli.core.linalg.hvp import Params

PRIOR_MEANS = ("init", "zero")
MIN_SAMPLES = 8  # Maurer's theorem needs m >= 8
FORMULA = "maurer-kl (Maurer 2004, Thm 5) with a union bound over the sigma grid"
STATEMENT = (
    "with probability >= 1 - delta over the m samples, kl(E_Q[err_S] || E_Q[err]) <= "
    "(KL + ln G + ln(2 sqrt(m) / delta)) / m; Pinsker: E_Q[err] <= E_Q[err_S] + "
    "sqrt((KL + ln G + ln(2 sqrt(m) / delta)) / (2 m)); KL = ||theta - theta_0||^2 / (2 sigma^2), "
    "G = size of the sigma grid"
)


@dataclass(frozen=True)
class Prior:
    """The centre of the PAC-Bayes prior: the initial parameters, or 0 when they cannot be rebuilt.

    Attributes:
        mean: ``"init"`` (``params`` holds theta_0) or ``"zero"`` (``params`` is None).
        params: theta_0 by parameter name.
        source: how theta_0 was obtained (or why it was not).
        warning: why the prior is centred at 0 (None for ``"init"``).
    """

    mean: str
    params: Params | None
    source: str
    warning: str | None = None

    @classmethod
    def zero(cls, why: str) -> Prior:
        """A prior centred at 0, with the reason ``why`` theta_0 is not known."""
        return cls("zero", None, why, f"PAC-Bayes prior centred at 0, not at the initialisation: {why}")


def distance(theta: Params, prior: Prior) -> float:
    """``||theta - theta_0||`` (``||theta||`` for a zero prior), summed in float64 over every parameter."""
    if prior.params is not None:
        bad = [n for n in theta if n not in prior.params or prior.params[n].shape != theta[n].shape]
        if bad:
            raise ValueError(f"the prior's initial parameters do not match theta at: {', '.join(bad)}")
    total = 0.0
    for name, p in theta.items():
        d = p.detach().to(torch.float64)
        if prior.params is not None:
            d = d - prior.params[name].detach().to(device=d.device, dtype=torch.float64)
        total += float((d * d).sum())
    return math.sqrt(total)


def kl_isotropic(dist: float, sigma: float) -> float:
    """``KL(N(theta, sigma^2 I) || N(theta_0, sigma^2 I)) = ||theta - theta_0||^2 / (2 sigma^2)``."""
    return dist**2 / (2.0 * sigma**2)


def complexity(kl: float, m: int, delta: float, grid_size: int = 1) -> float:
    """``(KL + ln G + ln(2 sqrt(m) / delta)) / m``: the right-hand side of Maurer's ``kl`` bound."""
    if m < MIN_SAMPLES:
        raise ValueError(f"Maurer's bound needs m >= {MIN_SAMPLES} samples, got {m}")
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must lie in (0, 1), got {delta}")
    return (kl + math.log(grid_size) + math.log(2.0 * math.sqrt(m) / delta)) / m


def pinsker_bound(train_error: float, rhs: float) -> float:
    """``E_Q[err_S] + sqrt(rhs / 2)`` (may exceed 1: then the bound is vacuous)."""
    return train_error + math.sqrt(rhs / 2.0)


def binary_kl(q: float, p: float) -> float:
    """``kl(q || p) = q ln(q/p) + (1-q) ln((1-q)/(1-p))`` with ``0 ln 0 = 0``."""
    out = 0.0
    if q > 0.0:
        out += math.inf if p <= 0.0 else q * math.log(q / p)
    if q < 1.0:
        out += math.inf if p >= 1.0 else (1.0 - q) * math.log((1.0 - q) / (1.0 - p))
    return out


def kl_inverse(q: float, rhs: float, tol: float = 1e-12) -> float:
    """``sup {p in [q, 1] : kl(q || p) <= rhs}`` by bisection (``kl(q || .)`` increases on ``[q, 1]``)."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must lie in [0, 1], got {q}")
    lo, hi = q, 1.0
    if binary_kl(q, hi) <= rhs:
        return 1.0
    while hi - lo > tol:
        mid = 0.5 * (lo + hi)
        if binary_kl(q, mid) <= rhs:
            lo = mid
        else:
            hi = mid
    return hi  # the upper end: the returned value never undershoots the supremum


class _BoundInputs(TypedDict):
    formula: str
    statement: str
    prior_mean: str
    prior_source: str
    sigma: float
    distance: float
    kl: float
    m: int
    delta: float
    grid_size: int
    ln_grid_size: float
    train_error: float | None
    train_error_stderr: float | None
    draws: int
    seed: int


class PacBayesBound(_BoundInputs):
    """:func:`bound`: a probe record's ``pac_bayes.bound`` (null bound, with a ``note``, when undefined)."""

    complexity: float | None
    bound: float | None
    bound_stderr: float | None
    kl_inverse_bound: float | None
    kl_inverse_bound_stderr: float | None
    vacuous: bool | None
    note: str


def bound(sigma_result: SigmaSearch, theta: Params, prior: Prior, m: int, delta: float) -> PacBayesBound:
    """The record of the bound at the sigma ``sigma_result`` found (``sharpness.pac_bayes_sigma``'s dict).

    ``train_error`` (``E_Q[err_S]``) is the mean 0-1 error over the search's draws at that sigma;
    ``bound_stderr`` and ``kl_inverse_bound_stderr`` carry its standard error through each form (to first
    order). The bound is ``None`` (with a ``note``) when there is no error rate or fewer than 8 samples.
    """
    sigma, err, err_se = sigma_result["sigma"], sigma_result["error_at_sigma"], sigma_result["error_stderr"]
    dist = distance(theta, prior)
    kl = kl_isotropic(dist, sigma)
    grid = int(sigma_result["grid_size"])
    out: _BoundInputs = {
        "formula": FORMULA,
        "statement": STATEMENT,
        "prior_mean": prior.mean,
        "prior_source": prior.source,
        "sigma": sigma,
        "distance": dist,
        "kl": kl,
        "m": m,
        "delta": delta,
        "grid_size": grid,
        "ln_grid_size": math.log(grid),
        "train_error": err,
        "train_error_stderr": err_se,
        "draws": sigma_result["samples"],
        "seed": sigma_result["seed"],
    }
    if err is None:
        return _no_bound(out, "no bound: the data have no error rate (regression targets)")
    if m < MIN_SAMPLES:
        return _no_bound(out, f"no bound: Maurer's theorem needs m >= {MIN_SAMPLES} samples")
    rhs = complexity(kl, m, delta, grid)
    classic = pinsker_bound(err, rhs)
    tight = kl_inverse(err, rhs)
    se = err_se or 0.0
    return {
        **out,
        "complexity": rhs,
        "bound": classic,
        "bound_stderr": err_se,
        "kl_inverse_bound": tight,
        "kl_inverse_bound_stderr": kl_inverse(min(err + se, 1.0), rhs) - tight
        if err_se is not None
        else None,
        "vacuous": tight >= 1.0,
        "note": "E_Q[err_S] is a Monte-Carlo mean over the draws that also chose sigma (its standard "
        "error is reported, not bounded); ln(grid_size) pays for choosing sigma on the bisection grid",
    }


def _no_bound(out: _BoundInputs, note: str) -> PacBayesBound:
    return {
        **out,
        "complexity": None,
        "bound": None,
        "bound_stderr": None,
        "kl_inverse_bound": None,
        "kl_inverse_bound_stderr": None,
        "vacuous": None,
        "note": note,
    }
