"""Spectral density by stochastic Lanczos quadrature, and scalar summaries of a spectrum.

Stochastic Lanczos quadrature (Ubaru, Chen & Saad 2017, "Fast estimation of tr(f(A)) via stochastic
Lanczos quadrature", SIAM J. Matrix Anal. Appl. 38(4); Ghorbani, Krishnan & Xiao 2019, "An investigation
into neural net optimization via Hessian eigenvalue density", ICML). The spectral density of
``H ∈ R^{n×n}`` is ``φ(t) = (1/n) Σ_i δ(t − λ_i)``. For a start vector ``q = v/√n`` with Rademacher ``v``,
``E[qᵀ f(H) q] = (1/n) tr f(H) = ∫ f dφ``, and ``m`` Lanczos steps from ``q`` give the ``m``-node Gauss
quadrature of that integral: nodes ``θ_j`` (Ritz values of ``T_m``), weights ``τ_j = s_{1j}²`` (squared first
components of ``T_m``'s eigenvectors, summing to 1), exact for polynomials of degree ``≤ 2m − 1``.
Averaging ``R`` runs gives the discrete measure ``Σ_{r,j} w_{rj} δ(t − θ_{rj})`` with ``w_{rj} = τ_{rj}/R``
(weights summing to 1), and a smooth curve by Gaussian kernels of width ``σ``:

    φ_σ(t) = Σ_{r,j} w_{rj} · exp(−(t − θ_{rj})² / (2σ²)) / (σ √(2π)).

Moments: ``Σ_j τ_{rj} θ_{rj}^k = q_rᵀ H^k q_r`` exactly (``k ≤ 2m − 1``), so ``n · Σ w θ^k`` is a Hutchinson
estimate of ``tr(H^k)`` whose standard error is ``n · std_r / √R`` over the runs.

Effective rank (Roy & Vetterli 2007; seed 003): ``erank = exp(−Σ_i p_i log p_i)`` with
``p_i = |λ_i| / Σ_j |λ_j|``. From SLQ, the measure scaled to ``n`` eigenvalues puts ``n w_{rj}`` eigenvalues
at ``θ_{rj}``; substituting gives, with ``M = Σ w |θ|`` and ``u = |θ| / M``,

    erank ≈ n · exp(−Σ_{r,j} w_{rj} u_{rj} log u_{rj}).

``|λ| log |λ|`` is not a polynomial, so this is an approximation (good when ``m`` resolves the large
eigenvalues, which carry the mass of ``p``; near-zero eigenvalues contribute ``u log u → 0``). On the
Hessians of tiny MLPs and CNNs (n ≈ 300-600) ``m = 30`` overestimated it by 5-25%, ``m = 80`` came
within about 5% (tests/test_curvature.py checks 10% at ``m = 80``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TypedDict

import torch

from lscape_cli.core.linalg.hvp import Operator, ProgressFn, flatten, rademacher
from lscape_cli.core.linalg.spectrum import Krylov
from lscape_cli.core.linalg.trace import Estimate, mean_stderr


class DensityDict(TypedDict):
    """:meth:`SpectralDensity.to_dict`: the quadrature of a probe record's ``density`` entry."""

    nodes: list[float]
    weights: list[float]
    run: list[int]
    dim: int
    num_runs: int
    num_steps: int
    num_matvecs: int
    method: str


@dataclass(frozen=True)
class SpectralDensity:
    """The SLQ measure: Gauss-quadrature nodes and weights of every run.

    Attributes:
        nodes: ``(K,)`` float64 Ritz values of all runs, concatenated.
        weights: ``(K,)`` float64, ``τ_{rj} / R`` (sums to 1).
        run: ``(K,)`` int64 run index of each node.
        dim: ``n``, the number of parameters.
        num_runs: ``R``.
        num_steps: Lanczos steps per run asked for (a run stops early at an invariant subspace).
        num_matvecs: Hessian-vector products spent.
    """

    nodes: torch.Tensor
    weights: torch.Tensor
    run: torch.Tensor
    dim: int
    num_runs: int
    num_steps: int
    num_matvecs: int

    def to_dict(self) -> DensityDict:
        """Plain-JSON form."""
        return {
            "nodes": self.nodes.tolist(),
            "weights": self.weights.tolist(),
            "run": self.run.tolist(),
            "dim": self.dim,
            "num_runs": self.num_runs,
            "num_steps": self.num_steps,
            "num_matvecs": self.num_matvecs,
            "method": "slq",
        }


@dataclass(frozen=True)
class DensityCurve:
    """``φ_σ`` sampled on a grid; integrates to 1 over the real line."""

    grid: torch.Tensor  # (P,) eigenvalue axis
    density: torch.Tensor  # (P,) φ_σ(grid)
    sigma: float  # kernel width, in eigenvalue units


def slq(
    op: Operator, num_runs: int = 10, num_steps: int = 80, seed: int = 0, on_step: ProgressFn | None = None
) -> SpectralDensity:
    """Stochastic Lanczos quadrature: ``num_runs`` runs of ``num_steps`` Lanczos steps from Rademacher starts.

    Each run keeps its own basis for full reorthogonalisation (``num_steps`` vectors of ``n`` parameters
    in the operator's dtype, allocated once at that size), released before the next run. Its inner
    products are accumulated in float64 (:class:`lscape_cli.core.linalg.spectrum.Krylov`).

    Args:
        op: the Hessian operator (entered as a context manager: its graph is released on return).
        num_runs: ``R``, independent start vectors (standard errors need at least 2; with 1 they are nan).
        num_steps: ``m``, Lanczos steps per run (capped at ``n``).
        seed: seeds the start vectors (drawn on the CPU: the same on every device and dtype).
        on_step: called after each run with ``run``, ``num_runs`` and ``num_matvecs``.

    Returns:
        The quadrature measure; ``num_matvecs ≤ num_runs · num_steps``.
    """
    if num_runs < 1 or num_steps < 1:
        raise ValueError(f"slq needs num_runs >= 1 and num_steps >= 1, got {num_runs}, {num_steps}")
    generator = torch.Generator().manual_seed(seed)
    nodes, weights, runs = [], [], []
    with op:
        start_count = op.num_matvecs
        for r in range(num_runs):
            start = flatten(rademacher(op.params, generator))
            kry = Krylov(op, start, capacity=min(num_steps, op.dim), basis_dtype=start.dtype)
            while kry.step() and kry.size < min(num_steps, op.dim):
                pass
            theta, s = torch.linalg.eigh(kry.tridiagonal())
            nodes.append(theta)
            weights.append(s[0].square() / num_runs)
            runs.append(torch.full_like(theta, r, dtype=torch.int64))
            if on_step is not None:
                on_step({"run": r + 1, "num_runs": num_runs, "num_matvecs": op.num_matvecs - start_count})
        used = op.num_matvecs - start_count
    return SpectralDensity(
        torch.cat(nodes), torch.cat(weights), torch.cat(runs), op.dim, num_runs, num_steps, used
    )


def moment(d: SpectralDensity, k: int) -> Estimate:
    """``tr(H^k) ≈ n · Σ w θ^k`` with its standard error over runs (exact per run for ``k ≤ 2m − 1``)."""
    per_run = torch.zeros(d.num_runs, dtype=torch.float64).index_add_(0, d.run, d.weights * d.nodes**k)
    mean, se = mean_stderr(per_run * d.num_runs * d.dim)
    return Estimate(mean, se, "slq", d.num_matvecs, d.num_runs - 1 if d.num_runs > 1 else None)


def trace(d: SpectralDensity) -> Estimate:
    """``tr(H) ≈ n · Σ w θ`` (a Hutchinson estimate with ``R`` probes)."""
    return moment(d, 1)


def density_curve(
    d: SpectralDensity,
    sigma: float | None = None,
    num_points: int = 1000,
    lo: float | None = None,
    hi: float | None = None,
) -> DensityCurve:
    """The Gaussian-smoothed density ``φ_σ`` on ``num_points`` equally spaced points.

    Args:
        d: the SLQ measure.
        sigma: kernel width in eigenvalue units; None: 1% of the node range ``max θ − min θ``.
        num_points: grid size.
        lo: grid start; None: ``min θ − 5σ``.
        hi: grid end; None: ``max θ + 5σ``.
    """
    span = float(d.nodes.max() - d.nodes.min())
    if sigma is None:
        sigma = 0.01 * span if span > 0 else 1.0
    if sigma <= 0 or num_points < 2:
        raise ValueError(f"sigma must be > 0 and num_points >= 2, got {sigma}, {num_points}")
    lo = float(d.nodes.min()) - 5 * sigma if lo is None else lo
    hi = float(d.nodes.max()) + 5 * sigma if hi is None else hi
    grid = torch.linspace(lo, hi, num_points, dtype=torch.float64)
    z = (grid[:, None] - d.nodes[None, :]) / sigma
    density = (torch.exp(-0.5 * z**2) * d.weights).sum(1) / (sigma * math.sqrt(2 * math.pi))
    return DensityCurve(grid, density, sigma)


def _erank_from_measure(values: torch.Tensor, weights: torch.Tensor, n: int) -> float:
    """``n · exp(−Σ w u log u)``, ``u = |λ| / Σ w|λ|``, for a probability measure ``(values, weights)``."""
    a = values.abs().double()
    mass = float((weights * a).sum())
    if mass == 0:
        return 0.0
    u = a / mass
    ulogu = torch.where(u > 0, u * torch.log(torch.where(u > 0, u, 1.0)), 0.0)
    return n * math.exp(-float((weights * ulogu).sum()))


def effective_rank(eigenvalues: torch.Tensor) -> float:
    """``exp(−Σ p_i log p_i)``, ``p_i = |λ_i| / Σ_j |λ_j|``, from an exact spectrum (``(n,)`` tensor)."""
    n = eigenvalues.shape[0]
    return _erank_from_measure(eigenvalues, torch.full((n,), 1.0 / n, dtype=torch.float64), n)


def effective_rank_slq(d: SpectralDensity) -> float:
    """The effective rank implied by the SLQ measure scaled to ``n`` eigenvalues (module docstring)."""
    return _erank_from_measure(d.nodes, d.weights, d.dim)


class EffectiveRankDict(TypedDict):
    """:func:`effective_rank_jackknife`: a probe record's ``effective_rank`` entry less its ``method``."""

    estimate: float
    stderr: float | None
    stderr_method: str
    num_runs: int
    num_steps: int
    num_matvecs: int


def effective_rank_jackknife(d: SpectralDensity) -> EffectiveRankDict:
    """:func:`effective_rank_slq` with a jackknife standard error over the SLQ runs.

    The effective rank is a nonlinear function of the pooled measure, so its spread over the ``R``
    independent runs is taken by the delete-one-run jackknife (Efron & Stein 1981): ``e_(r)`` is the
    effective rank of the measure without run ``r`` (the other runs reweighted to sum to 1), and
    ``stderr = sqrt((R − 1)/R · Σ_r (e_(r) − mean e_(·))²)``. It measures the start-vector noise only,
    not the quadrature's bias from a finite ``m`` (see the module docstring); with one run it is null.
    """
    value = effective_rank_slq(d)
    r = d.num_runs
    stderr: float | None = None
    if r >= 2:
        keep = [d.run != i for i in range(r)]
        loo = torch.tensor(
            [_erank_from_measure(d.nodes[k], d.weights[k] * r / (r - 1), d.dim) for k in keep],
            dtype=torch.float64,
        )
        stderr = math.sqrt((r - 1) / r * float(((loo - loo.mean()) ** 2).sum()))
    return {
        "estimate": value,
        "stderr": stderr,
        "stderr_method": "delete-one-run jackknife over the SLQ runs (start-vector noise only)",
        "num_runs": r,
        "num_steps": d.num_steps,
        "num_matvecs": d.num_matvecs,
    }


def stable_rank(frobenius: float, lambda_max: float) -> float:
    """``‖H‖_F² / λmax²`` (Rudelson & Vershynin 2007): ``‖H‖_F²`` in units of the top eigenvalue's square."""
    if lambda_max == 0:
        raise ValueError("stable rank needs a nonzero lambda_max")
    return frobenius**2 / lambda_max**2


def participation_ratio(trace_value: float, frobenius: float) -> float:
    """``(tr H)² / ‖H‖_F² = (Σλ)² / Σλ²``: the number of equal eigenvalues with the same trace and norm."""
    if frobenius == 0:
        raise ValueError("participation ratio needs a nonzero Frobenius norm")
    return trace_value**2 / frobenius**2
