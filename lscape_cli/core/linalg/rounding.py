"""Floating-point rounding of Hessian-vector products, measured, and the floor it puts under estimates.

A run in float32 does not multiply by ``H`` but by a perturbed operator ``H̃ = H + E``: every product
carries the rounding of the forward and both backward passes (on a small CE CNN near zero loss,
``‖H̃v − Hv‖ / ‖Hv‖`` is about 1e-5, a hundred times float32's machine epsilon). Hutchinson, Hutch++ and
krylov-hutch++ are unbiased for ``tr(H̃)`` and ``‖H̃‖_F²`` whatever their sketch, so rounding moves the
estimates by

    tr(H̃) − tr(H) = tr(E),          ‖H̃‖_F² − ‖H‖_F² = 2⟨H, E⟩ + ‖E‖_F²,

plus a part that differs from product to product; that part is in the probes' sample variance already
(the standard error), a systematic part is not. Both differences are traces of fixed matrices and are
measured here the way the estimators measure traces: ``r`` Rademacher vectors ``v_i`` are multiplied in
the run's dtype and in a reference dtype, and

    d_i = v_iᵀ H̃ v_i − v_iᵀ H v_i,          f_i = ‖H̃ v_i‖² − ‖H v_i‖²

are Hutchinson samples of ``tr(E)`` and of ``‖H̃‖_F² − ‖H‖_F²``. The floor reported beside each standard
error is the mean's magnitude and its own standard error together, ``√(d̄² + s_d² / r)`` (``|d_1|`` for
``r = 1``): about ``|tr(E)|`` when the rounding is systematic, about ``s_d/√r`` when it is noise (then it
overstates what reaches an estimate of ``m`` products by ``√(m/r)``, and stays far below the standard
error). ``‖H‖_F``'s floor follows by the delta method, ``floor(‖H‖_F²) / (2 ‖H‖_F)``.

The reference dtype is float64 for runs in float32 (or lower). A float64 run has nothing more precise to
compare with, so its products are compared with float32 ones and the measured difference is scaled by the
ratio of unit roundoffs, ``2⁻⁵³ / 2⁻²⁴ = 2⁻²⁹`` (rounding errors of a fixed computation scale with the
unit roundoff, Higham, "Accuracy and Stability of Numerical Algorithms", §2-3): a model, not a
measurement, and reported as such (``scale``).

How many products. The floor is itself a Hutchinson estimate, and ``‖H‖_F²``'s is a noisy one: ``f_i``
is dominated by the top eigendirections of ``H``. Measured on a CE CNN trained to a loss of 2e-5
(1,034 parameters, 128 digits images, float32; ``benchmarks/bench_uncertainty.py``, problem
``cnn-ce-long``), where float32 moves ‖H‖_F by −1.5e-4 relative, ten times the standard error of the
deflated estimators: over 60 seeds the floor from ``r = 3`` products varied 30× and ``estimate ±
2·uncertainty`` covered the exact ‖H‖_F in 87-88% of seeds (hutch++, krylov-hutch++); ``r = 8`` 88-90%,
``r = 16`` 95% (floor varying 5×). A ratio estimator (``Σf_i / Σ‖Hv_i‖²`` times the estimate) covered no
better at equal ``r`` (90-93% at 8), and an upper confidence bound on the floor (``|f̄| + 2 s_f/√r``)
over-covered (98-100%). So :func:`refine` takes the floor to :data:`MAX_PRODUCTS` products where it
matters, i.e. where the first :data:`DEFAULT_PRODUCTS` give a floor above :data:`RELEVANT` of the
statistical error (``k_ν · stderr``), and leaves it at :data:`DEFAULT_PRODUCTS` where rounding is far
below the statistics (every MLP of the benchmark: ≤ 6e-6 of the standard error).

Cost: ``r`` products in the run's dtype (counted at the operator) and ``r`` in the reference dtype, from a
copy of the parameters and data in that dtype (float64: twice the memory of float32 data); the reference
keeps no gradient graph between products. Eigenvalue bounds measure the rounding on their own vectors
instead (:mod:`lscape_cli.core.linalg.eigen_bounds`): ``relative_error`` here is of random vectors, and was
smaller than the relative error on an eigenvector in that measurement.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TypedDict

import torch

from lscape_cli.core.linalg.hvp import HVP, Objective, Operator, flatten, rademacher, unflatten

DEFAULT_PRODUCTS = 4  # first pass (module docstring)
MAX_PRODUCTS = 16  # where the floor matters
RELEVANT = 0.1  # a floor above this fraction of the statistical error gets MAX_PRODUCTS


class RoundingDict(TypedDict):
    """A probe record's ``rounding`` entry (:meth:`Rounding.to_dict`, :func:`pair_record`)."""

    method: str
    dtype: str
    reference_dtype: str
    scale: float
    num_products: int
    seed: int
    vectors: str  # rademacher, or ritz: the eigenvalues' own products
    trace: float | None
    frobenius_sq: float | None
    relative_error: float


@dataclass(frozen=True)
class Rounding:
    """Per-vector differences between products in the run's dtype and in a reference dtype.

    Attributes:
        dtype: the run's dtype (``"float32"``, ...).
        reference_dtype: the dtype compared with.
        scale: factor applied to the measured differences (1, or ``2⁻²⁹`` for a float64 run compared with
            float32: module docstring).
        quad: ``(r,)`` float64, ``d_i = v_iᵀ H̃ v_i − v_iᵀ H v_i`` (unscaled).
        sq: ``(r,)`` float64, ``f_i = ‖H̃ v_i‖² − ‖H v_i‖²`` (unscaled).
        relative_error: ``(r,)`` float64, ``‖H̃ v_i − H v_i‖ / ‖H v_i‖`` (unscaled).
        seed: seeds the vectors.
    """

    dtype: str
    reference_dtype: str
    scale: float
    quad: torch.Tensor
    sq: torch.Tensor
    relative_error: torch.Tensor
    seed: int

    @property
    def num_products(self) -> int:
        """``r``: products in each dtype."""
        return int(self.quad.shape[0])

    @property
    def trace(self) -> float:
        """Floor on an estimate of ``tr(H)``: ``√(d̄² + s_d² / r)``, scaled."""
        return self.scale * _floor(self.quad)

    @property
    def frobenius_sq(self) -> float:
        """Floor on an estimate of ``‖H‖_F² = tr(H²)``: ``√(f̄² + s_f² / r)``, scaled."""
        return self.scale * _floor(self.sq)

    def extended(self, more: Rounding) -> Rounding:
        """The measurement with ``more`` (further vectors of the same sequence) appended."""
        return replace(
            self,
            quad=torch.cat([self.quad, more.quad]),
            sq=torch.cat([self.sq, more.sq]),
            relative_error=torch.cat([self.relative_error, more.relative_error]),
        )

    def to_dict(self) -> RoundingDict:
        """Plain-JSON form (``results.rounding`` of a probe record)."""
        return {
            "method": "products re-evaluated in reference_dtype (lscape_cli/core/linalg/rounding.py)",
            "dtype": self.dtype,
            "reference_dtype": self.reference_dtype,
            "scale": self.scale,
            "num_products": self.num_products,
            "seed": self.seed,
            "vectors": "rademacher",
            "trace": self.trace,
            "frobenius_sq": self.frobenius_sq,
            "relative_error": self.scale * float(self.relative_error.max()),
        }


def pair_record(
    op: Operator, reference: Operator, scale: float, relative: list[float], seed: int
) -> RoundingDict:
    """The ``results.rounding`` record of a run that asked only for eigenvalues, from their own products.

    Each eigenvalue's bound already re-evaluates its pair's product in the reference dtype
    (:mod:`.eigen_bounds`); ``relative`` holds those relative differences (scaled). A run with no trace
    or density estimates nothing stochastic, so no random vectors are spent (on ResNet-18 they were 8 of
    the products a float32 ``--lambda-max`` paid for): the record states the products' rounding measured
    on the Ritz vectors (``vectors: "ritz"``) and has no trace or ‖H‖_F floor (null).
    """
    return {
        "method": "the eigenvalues' own products re-evaluated in reference_dtype "
        "(lscape_cli/core/linalg/rounding.py)",
        "dtype": _name(_dtype(op)),
        "reference_dtype": _name(_dtype(reference)),
        "scale": scale,
        "num_products": len(relative),
        "seed": seed,
        "vectors": "ritz",
        "trace": None,
        "frobenius_sq": None,
        "relative_error": max(relative),
    }


def _floor(d: torch.Tensor) -> float:
    """``√(mean² + var / r)`` of Hutchinson samples (``|d_1|`` for one)."""
    if d.shape[0] < 2:
        return float(d.abs().sum())
    return math.sqrt(float(d.mean()) ** 2 + float(d.var(unbiased=True)) / d.shape[0])


def reference_dtype(dtype: torch.dtype) -> tuple[torch.dtype, float]:
    """The dtype to compare a run in ``dtype`` with, and the scale for its differences."""
    if dtype == torch.float64:
        return torch.float32, torch.finfo(torch.float64).eps / torch.finfo(torch.float32).eps
    return torch.float64, 1.0


def cast(obj: Objective, dtype: torch.dtype) -> Objective:
    """``obj`` with its parameters, floating buffers and inputs in ``dtype`` (same model, labels, shard)."""

    def to(t: torch.Tensor) -> torch.Tensor:
        return t.to(dtype) if t.is_floating_point() else t

    return replace(
        obj,
        params={n: to(p) for n, p in obj.params.items()},
        buffers={n: to(b) for n, b in obj.buffers.items()},
        x=to(obj.x),
    )


def measure(
    op: Operator,
    reference: Operator,
    num_products: int = DEFAULT_PRODUCTS,
    seed: int = 0,
    scale: float = 1.0,
    skip: int = 0,
) -> Rounding:
    """Compare ``num_products`` products of ``op`` with those of ``reference`` on Rademacher vectors.

    Args:
        op: the operator of the run (its dtype is the one measured).
        reference: the same matrix in the reference dtype (e.g. :func:`cast` of the objective).
        num_products: ``r`` (at least 1; 2 or more give the floor's own spread).
        seed: seeds the vectors (drawn on the CPU).
        scale: factor for the differences (see :func:`reference_dtype`).
        skip: vectors of the seeded sequence to pass over first (to extend an earlier measurement).

    Returns:
        The per-vector differences; :attr:`Rounding.trace` and :attr:`Rounding.frobenius_sq` are the floors.
    """
    if num_products < 1:
        raise ValueError(f"rounding needs num_products >= 1, got {num_products}")
    generator = torch.Generator().manual_seed(seed)
    for _ in range(skip):
        rademacher(op.params, generator)
    quad, sq, rel = [], [], []
    with op, reference:
        for _ in range(num_products):
            v = rademacher(op.params, generator)
            h = flatten(op(v)).double()
            h_ref = flatten(reference(unflatten(flatten(v).to(_dtype(reference)), reference.params)))
            h_ref = h_ref.double().to(h.device)
            vd = flatten(v).double()
            quad.append(float(vd @ h) - float(vd @ h_ref))
            sq.append(float(h.square().sum()) - float(h_ref.square().sum()))
            rel.append(
                float(torch.linalg.vector_norm(h - h_ref) / torch.linalg.vector_norm(h_ref).clamp_min(1e-300))
            )
    return Rounding(
        _name(_dtype(op)),
        _name(_dtype(reference)),
        scale,
        torch.tensor(quad, dtype=torch.float64),
        torch.tensor(sq, dtype=torch.float64),
        torch.tensor(rel, dtype=torch.float64),
        seed,
    )


def refine(
    rnd: Rounding,
    op: Operator,
    reference: Operator,
    stat_trace: float,
    stat_frobenius_sq: float,
    max_products: int = MAX_PRODUCTS,
) -> Rounding:
    """``rnd`` extended to ``max_products`` vectors when its floor is not negligible (module docstring).

    Args:
        rnd: the first measurement (of ``op`` against ``reference``).
        op: the operator of the run.
        reference: the same matrix in the reference dtype.
        stat_trace: the statistical error (``k_ν · stderr``) of the estimate of ``tr(H)`` the floor goes
            with (nan: unknown, counts as relevant).
        stat_frobenius_sq: the same for ``‖H‖_F²``.
        max_products: the vectors a relevant floor gets.
    """

    def relevant(floor: float, stat: float) -> bool:
        return not floor <= RELEVANT * stat  # nan statistics: relevant

    if rnd.num_products >= max_products or not (
        relevant(rnd.trace, stat_trace) or relevant(rnd.frobenius_sq, stat_frobenius_sq)
    ):
        return rnd
    more = measure(op, reference, max_products - rnd.num_products, rnd.seed, rnd.scale, rnd.num_products)
    return rnd.extended(more)


def for_objective(
    obj: Objective, op: Operator, num_products: int = DEFAULT_PRODUCTS, seed: int = 0
) -> Rounding:
    """:func:`measure` for ``op`` (an operator of ``obj``) against ``obj`` cast to the reference dtype.

    The reference products use ``double_backward`` and keep no graph between them (``retain_chunks=0``).
    """
    ref_dtype, scale = reference_dtype(_dtype(op))
    return measure(
        op, HVP(cast(obj, ref_dtype), "double_backward", retain_chunks=0), num_products, seed, scale
    )


def _dtype(op: Operator) -> torch.dtype:
    return next(iter(op.params.values())).dtype


def _name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")
