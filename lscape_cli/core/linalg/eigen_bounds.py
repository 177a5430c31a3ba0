"""Error bounds of Ritz values that hold: true residuals, the products' rounding, a certificate for the ends.

What a Ritz pair ``(θ, y)`` of a run proves about the Hessian ``H`` (the exact matrix, not the one the
run's dtype multiplies by):

- **An eigenvalue within the nearest-eigenvalue bound.** The run multiplies by ``H̃ = H + E``. Its true
  residual ``r = ‖H̃ y − θ y‖ / ‖y‖`` is measured with one product after the run (the recurrence's
  ``|β_m s_m|`` underflows to 0 once a pair has converged, so it is never used), and the rounding of
  that product on ``y`` itself, ``ρ = ‖H̃ y − H y‖ / ‖y‖``, with one product in the reference dtype
  (float64 for a float32 run; for a float64 run the float32 difference times ``2⁻²⁹``, a model, see
  :mod:`.rounding`). Then ``‖H y − θ y‖ ≤ r + ρ``, and for symmetric ``H`` some eigenvalue
  lies within ``b = r + ρ`` of ``θ`` (Parlett, "The Symmetric Eigenvalue Problem", Thm 4.5.1). ``b`` is
  never 0: ``ρ`` is 0 only where both dtypes give the same product. Measured on a CE CNN in float32
  (1,034 parameters): ``ρ`` is 0.5-1.8e-5 on the top eigenvectors, as large as ``r`` itself, while the
  relative error of products of random vectors (``rounding.relative_error``) is smaller than that on the
  second eigenvector; hence the measurement on the pair's own vector.
- **Which eigenvalue: the ends of the spectrum.** ``b`` does not say that the eigenvalue near ``θ`` is
  the largest (or smallest): an eigenvalue whose eigenvector is nearly orthogonal to the Krylov space
  has no Ritz value yet, whatever the residuals (the "unconverged λmin" of a short run is 2× its
  residual away from the true λmin). One side is certain: ``λmax ≥ yᵀHy/yᵀy ≥ θ − b`` (and
  ``λmin ≤ θ + b``). The other needs a probabilistic argument. For Lanczos from a start vector uniform on
  the sphere (a normalised Gaussian) and a positive semi-definite ``A``, after ``k`` steps
  ``P[(λ₁(A) − θ₁)/λ₁(A) ≥ ε] ≤ 1.648 √n e^{−√ε (2k − 1)}`` (Kuczyński & Woźniakowski 1992,
  "Estimating the largest eigenvalue by the power and Lanczos algorithms with a random start", SIAM J.
  Matrix Anal. Appl. 13(4), Thm 4.2). Lanczos is shift-invariant, so with ``A = H − λmin I`` and the
  spread ``S = λmax − λmin``: ``λmax ≤ θ_max + εS``, and with ``A = λmax I − H``:
  ``λmin ≥ θ_min − εS``, each failing with probability at most ``δ/2`` when
  ``√ε = ln(2 · 1.648 √n / δ) / (2k − 1)``. Both together bound the spread,
  ``S ≤ (θ_max − θ_min + 2ρ_max) / (1 − 2ε)`` (``ε < 1/2``), so with probability at least ``1 − δ``

      |λmax − θ_max| ≤ max(b, εS + ρ),          |λmin − θ_min| ≤ max(b, εS + ρ)

  (``+ ρ``: the theorem speaks of the operator the run multiplied by, ``H̃``).

  This ``error_bound`` holds whether or not the pair has converged, and is null (with the reason) only
  when ``2ε ≥ 1``: too few steps for the certificate. It is conservative: the theorem covers every
  spectrum, the worst included, so ``εS`` is often far above the actual error (which ``b`` shows).
- **Interior pairs of a top-k** (``λ_2 … λ_k``): interlacing gives ``λ_i ≥ θ_i − b_i`` with certainty;
  for the other side no bound of this kind exists, so a converged pair reports ``b_i`` with the
  assumption stated (no eigenvalue above it was missed; a single-vector Krylov space lists a repeated
  eigenvalue once) and an unconverged pair reports none.

The Kato-Temple quantity ``min(r, r²/δ̂)`` stays Lanczos' stopping rule (:mod:`.spectrum`): its gap
``δ̂`` comes from Ritz values only and is not certified, so it never appears as a bound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TypedDict

from lscape_cli.core.linalg.spectrum import EigenResult

FAILURE_PROBABILITY = 1e-3  # δ of the random-start certificate (both ends together)
KW_CONSTANT = 1.648  # Kuczyński & Woźniakowski 1992, Thm 4.2


class CertificateDict(TypedDict):
    """:meth:`Certificate.to_dict`: the ``certificate`` of a probe record's eigenvalue entries."""

    method: str
    statement: str
    failure_probability: float
    krylov_dim: int
    dim: int
    epsilon: float
    spread_bound: float | None


@dataclass(frozen=True)
class Certificate:
    """The random-start certificate of one Lanczos run (module docstring).

    Attributes:
        failure_probability: ``δ``: the bounds of both ends hold together with probability ``≥ 1 − δ``.
        krylov_dim: ``k``, steps of the random-start Krylov space.
        dim: ``n``, parameters.
        epsilon: ``ε`` for ``k`` steps at ``δ/2`` per end.
        spread_bound: ``S ≥ λmax − λmin`` (None when ``ε ≥ 1/2``: no certificate).
    """

    failure_probability: float
    krylov_dim: int
    dim: int
    epsilon: float
    spread_bound: float | None

    @property
    def margin(self) -> float | None:
        """``εS``: how far beyond the extreme Ritz value the extreme eigenvalue may lie (None: none)."""
        return None if self.spread_bound is None else self.epsilon * self.spread_bound

    def min_steps(self) -> int:
        """Fewest Lanczos steps with ``ε < 1/2`` for this ``n`` and ``δ``."""
        return math.floor(_log_term(self.dim, self.failure_probability) * math.sqrt(2) / 2 + 0.5) + 1

    def to_dict(self) -> CertificateDict:
        """Plain-JSON form (``certificate`` of a probe's eigenvalue records)."""
        return {
            "method": "random-start Lanczos (Kuczynski & Wozniakowski 1992, Thm 4.2)",
            "statement": "with probability >= 1 - failure_probability: lambda_max <= theta_max + epsilon * "
            "spread_bound and lambda_min >= theta_min - epsilon * spread_bound",
            "failure_probability": self.failure_probability,
            "krylov_dim": self.krylov_dim,
            "dim": self.dim,
            "epsilon": self.epsilon,
            "spread_bound": self.spread_bound,
        }


def _log_term(dim: int, delta: float) -> float:
    return math.log(2 * KW_CONSTANT * math.sqrt(dim) / delta)


def epsilon(dim: int, steps: int, delta: float = FAILURE_PROBABILITY) -> float:
    """``ε`` with ``1.648 √n e^{−√ε (2k−1)} = δ/2``: the relative gap a ``k``-step run leaves, per end.

    >>> round(epsilon(1000, 100), 5), round(epsilon(1000, 20), 4)
    (0.00337, 0.0878)
    """
    return (_log_term(dim, delta) / (2 * steps - 1)) ** 2


def certificate(res: EigenResult, delta: float = FAILURE_PROBABILITY) -> Certificate:
    """The certificate of a Lanczos result (``ritz_range``, ``krylov_dim`` and ``dim`` must be set)."""
    if res.ritz_range is None or res.krylov_dim is None or res.dim is None:
        raise ValueError("a certificate needs a Lanczos result (ritz_range, krylov_dim, dim)")
    eps = epsilon(res.dim, res.krylov_dim, delta)
    low, high = res.ritz_range
    rho = max(res.rounding or [0.0])
    spread = (high - low + 2 * rho) / (1 - 2 * eps) if eps < 0.5 else None
    return Certificate(delta, res.krylov_dim, res.dim, eps, spread)


@dataclass(frozen=True)
class PairBound:
    """What one Ritz pair proves (module docstring).

    Attributes:
        rounding: ``ρ``, the products' rounding on the pair's vector (0 when not measured).
        nearest: ``b = r + ρ``: some eigenvalue of ``H`` lies within it.
        error_bound: a bound on the error against the eigenvalue the pair stands for, or None.
        note: what ``error_bound`` rests on, or why it is None.
    """

    rounding: float
    nearest: float
    error_bound: float | None
    note: str


def pair_bounds(res: EigenResult, n_top: int, cert: Certificate | None) -> list[PairBound]:
    """Bounds for every reported pair of ``res``: the ``n_top`` largest first, then the smallest.

    The first of each end is an extreme eigenvalue (certified by ``cert``, module docstring); the others
    are interior pairs. ``cert`` None (power iteration): no pair is certified as an extreme eigenvalue.
    """
    rnd = res.rounding or [0.0] * len(res.eigenvalues)
    flags = res.converged_pairs or [res.converged] * len(res.eigenvalues)
    out = []
    for i, (r, rho, ok) in enumerate(zip(res.residuals, rnd, flags, strict=True)):
        nearest = r + rho
        extreme = i in (0, n_top)
        if extreme and cert is not None:
            out.append(_extreme(nearest, rho, cert, "largest" if i == 0 and n_top > 0 else "smallest"))
        elif extreme:
            note = (
                "null: power iteration gives no certificate that its eigenvalue is the extreme one "
                "(nearest_eigenvalue_bound: some eigenvalue lies within it)"
            )
            out.append(PairBound(rho, nearest, None, note))
        elif ok:
            note = (
                "residual + rounding of a converged interior pair: an eigenvalue lies within it, and "
                "lambda_i >= estimate - bound (interlacing); that it is the i-th assumes no eigenvalue above "
                "it was missed (a repeated eigenvalue is listed once)"
            )
            out.append(PairBound(rho, nearest, nearest, note))
        else:
            note = (
                "null: not converged; the residual certifies an eigenvalue within "
                "nearest_eigenvalue_bound, not that it is the i-th largest"
            )
            out.append(PairBound(rho, nearest, None, note))
    return out


def _extreme(nearest: float, rho: float, cert: Certificate, end: str) -> PairBound:
    """The bound of the largest or smallest eigenvalue: ``max(b, εS)`` when certified."""
    if cert.margin is None:
        note = (
            f"null: {cert.krylov_dim} Lanczos steps are too few for the random-start certificate at "
            f"{cert.dim} parameters (it needs {cert.min_steps()}); the residual certifies an eigenvalue "
            f"within nearest_eigenvalue_bound, not that it is the {end}"
        )
        return PairBound(rho, nearest, None, note)
    note = (
        "max(residual + rounding, epsilon * spread_bound + rounding) of the certificate: "
        f"the {end} eigenvalue lies within it with probability >= 1 - {cert.failure_probability:g}; "
        "one side is certain: "
        + (
            "lambda_max >= estimate - nearest_eigenvalue_bound"
            if end == "largest"
            else "lambda_min <= estimate + nearest_eigenvalue_bound"
        )
    )
    return PairBound(rho, nearest, max(nearest, cert.margin + rho), note)
