"""Extreme eigenvalues of the Hessian: Lanczos with full reorthogonalisation, and power iteration.

Both stop on the residual of the eigenpair, never on "the estimate changed little". Because ``H`` is
symmetric, a pair ``(θ_i, y_i)``, ``‖y_i‖ = 1``, with residual ``r_i = ‖H y_i − θ_i y_i‖`` certifies an
eigenvalue of ``H`` in ``[θ_i − r_i, θ_i + r_i]``, and, once the pair is separated from the rest of the
spectrum by a gap ``δ_i``, within ``r_i² / δ_i`` (Kato-Temple; Parlett, "The Symmetric Eigenvalue
Problem", §11.7). Lanczos estimates the gap from the other Ritz values, conservatively,

    δ̂_i = min_{j ≠ i} (|θ_i − θ_j| − r_j),         bound_i = min(r_i, r_i² / δ̂_i)  (r_i when δ̂_i ≤ 0),

and stops (``stop="bound"``, the default) when every wanted pair has ``bound_i ≤ max(tol · |θ_i|, atol)``;
``stop="residual"`` waits for ``r_i`` itself to pass that test (a few more products: on seed 000's MLP 18
instead of 15 for λmax at tol 1e-6). ``δ̂`` is an estimate, not a proof: an eigenvalue whose eigenvector
is (nearly) orthogonal to the Krylov space has no Ritz value yet and can sit inside the estimated gap, so
``min(r, r²/δ̂)`` is a stopping rule (``EigenResult.stop_estimates``), never reported as a bound. The
bounds that hold are built from the true residuals and the products' rounding by
:mod:`lscape_cli.core.linalg.eigen_bounds`. Power iteration has no second Ritz value and always stops on the
residual. ``atol`` (default 0) is an absolute floor for eigenvalues near zero, where a relative test is
unreachable.

Lanczos (Lanczos 1950; Golub & Van Loan, "Matrix Computations", 4th ed., §10.1): after ``m`` steps,
``H Q_m = Q_m T_m + β_m q_{m+1} e_mᵀ`` with ``T_m`` tridiagonal. A Ritz pair ``θ_i, y_i = Q_m s_i`` of
``T_m s_i = θ_i s_i`` has residual ``‖H y_i − θ_i y_i‖ = |β_m · s_{m,i}|`` (the last component of ``s_i``),
so the stopping test costs no extra product. Once a pair has converged that estimate can underflow to
exactly 0, so ``true_residuals=True`` (what ``lscape probe`` reports) computes ``‖H y_i − θ_i y_i‖`` for
every reported pair with one more product each and keeps the estimates as ``ritz_residuals``.
The basis is kept and every new vector is orthogonalised
against all previous ones (classical Gram-Schmidt, repeated when a pass removed more than ``1 − 1/√2`` of
the vector's norm: Daniel, Gragg, Kaufman & Stewart 1976, "twice is enough"), so the recurrence's
residual stays the true residual up to rounding of the products and no spurious copies ("ghosts") of
converged eigenvalues appear. Memory: ``m`` vectors of ``n`` parameters in the parameters' dtype and on
their device (``EigenResult.vector_memory``), plus three working vectors; inner products are accumulated
in float64 (:class:`Krylov` says why).

If the Krylov space becomes invariant (``β ≈ 0``) before enough Ritz values exist, the run continues from
a fresh random vector orthogonal to the basis. A single-vector Krylov method still cannot see the
multiplicity of a repeated eigenvalue reliably; the Hessians of networks have distinct top eigenvalues in
practice, but a top-k containing a repeated eigenvalue may list it fewer times than it occurs.

Power iteration (von Mises 1929) is kept for comparison with the seed studies: ``v ← Hv / ‖Hv‖``;
each product also gives the Rayleigh quotient ``θ = vᵀHv`` and the exact residual ``‖Hv − θv‖``. It
converges to the eigenvalue of largest *magnitude* at the rate ``|λ₂/λ₁|`` per product.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TypedDict

import torch

from lscape_cli.core.choices import EigStop
from lscape_cli.core.linalg.hvp import Operator, Params, ProgressFn, flatten, gaussian, unflatten

WHICH = ("largest", "smallest", "both")
_EPS64 = torch.finfo(torch.float64).eps  # 2u of float64
DGKS_KEPT = 2**-0.5  # a Gram-Schmidt pass that keeps more of the norm than this is not repeated
SLAB_CPU = 1 << 15  # columns per float64 slab on a CPU (a block of 8 rows: 2 MiB)


def _slab(t: torch.Tensor) -> int:
    """Columns converted to float64 at a time: a few MiB on a CPU (stays in cache), everything on a GPU."""
    return SLAB_CPU if t.device.type == "cpu" else t.shape[-1]


def dot64(rows: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``rows @ w`` accumulated in float64: ``(k, n)`` or ``(n,)`` rows of any float dtype, ``w`` ``(n,)``.

    Vectors stay in their own dtype (the parameters', float32 by default); only a slab of columns is
    converted at a time. A float32 inner product over ~10⁵–10⁷ entries accumulates errors of ~√n·2⁻²⁴
    of ‖q‖‖w‖ (measured: top-3 eigenvalues of a 200k-parameter float32 operator off by 1.1e-6 with
    float32 Gram-Schmidt coefficients); a float64 sum leaves only the rounding of the stored entries.
    """
    if rows.dtype == w.dtype == torch.float64:
        return rows @ w
    out = torch.zeros(rows.shape[:-1], dtype=torch.float64, device=w.device)
    step = _slab(w)
    for s in range(0, w.shape[-1], step):
        out += rows[..., s : s + step].double() @ w[s : s + step].double()
    return out


def norm64(w: torch.Tensor) -> float:
    """``‖w‖`` accumulated in float64 (:func:`dot64`)."""
    return math.sqrt(float(dot64(w, w)))


def _sub_rows(w: torch.Tensor, rows: torch.Tensor, coeffs: torch.Tensor) -> None:
    """``w −= rowsᵀ coeffs`` in place, in ``w``'s dtype (a slab at a time when the dtypes differ)."""
    if w.dtype == rows.dtype:
        w.addmv_(rows.T, coeffs.to(w.dtype), alpha=-1.0)
        return
    step = _slab(w)
    for s in range(0, w.shape[0], step):
        w[s : s + step].addmv_(rows[:, s : s + step].T.to(w.dtype), coeffs.to(w.dtype), alpha=-1.0)


class VectorMemory(TypedDict):
    """:meth:`Basis.memory`: the Lanczos vectors kept (count, dtype, device, bytes allocated)."""

    vectors: int
    dtype: str
    device: str
    bytes: int


class EigenDict(TypedDict):
    """:meth:`EigenResult.to_dict` (eigenvectors left out)."""

    eigenvalues: list[float]
    residuals: list[float]
    iterations: int
    num_matvecs: int
    converged: bool
    method: str
    which: str
    tol: float
    stop_estimates: list[float]
    stop: str | None
    converged_pairs: list[bool] | None
    ritz_residuals: list[float] | None
    rounding: list[float] | None
    krylov_dim: int | None
    ritz_range: tuple[float, float] | None
    vector_memory: VectorMemory | None


@dataclass(frozen=True)
class EigenResult:
    """Eigenvalue estimates with their convergence evidence.

    Attributes:
        eigenvalues: for ``largest``, descending; for ``smallest``, ascending (most negative first);
            for ``both``, the ``k`` largest (descending) then the ``k`` smallest (ascending).
        residuals: ``‖H y_i − θ_i y_i‖`` per eigenvalue (absolute, same units as the eigenvalue).
        eigenvectors: unit eigenvectors as parameter-shaped dicts, when asked for.
        iterations: Lanczos steps or power iterations done.
        num_matvecs: Hessian-vector products used.
        converged: every wanted pair met the residual test.
        method: ``"lanczos"`` or ``"power"``.
        which: ``"largest"``, ``"smallest"``, ``"both"`` (``"magnitude"`` for power iteration).
        tol: the relative tolerance used.
        stop_estimates: ``min(r_i, r_i² / δ̂_i)`` per eigenvalue from the recurrence (module docstring):
            what ``stop="bound"`` tests, an estimate and not a bound; the residuals for power iteration.
        stop: ``"bound"`` or ``"residual"``: the quantity the tolerance was applied to.
        converged_pairs: per eigenvalue, whether its own pair met the test (same order as
            ``eigenvalues``); ``converged`` is their conjunction.
        ritz_residuals: with ``true_residuals``, the recurrence's estimates ``|β_m s_{m,i}|`` (which
            underflow to 0 once a pair has converged), while ``residuals`` holds ``‖H y_i − θ_i y_i‖``
            computed with one more product per pair.
        rounding: with ``true_residuals`` and a ``reference`` operator, ``‖H̃ y_i − H y_i‖ / ‖y_i‖`` per
            pair: the products' rounding on the pair's own vector, measured against the reference dtype
            and multiplied by ``reference_scale`` (:mod:`.rounding`); None: not measured.
        rounding_relative: the same difference relative to the product, ``‖H̃ y_i − H y_i‖ / ‖H y_i‖``
            (scaled, without the residual's own arithmetic); None: not measured.
        krylov_dim: dimension of the random-start Krylov space the Ritz values come from (the steps
            before the first breakdown, if any; the basis may be larger after a restart).
        ritz_range: ``(θ_min, θ_max)`` over all Ritz values of the last ``T_m`` (Lanczos only).
        dim: number of parameters ``n``.
        vector_memory: the kept Lanczos vectors (:meth:`Basis.memory`); ``None`` for power iteration.
    """

    eigenvalues: list[float]
    residuals: list[float]
    eigenvectors: list[Params] | None
    iterations: int
    num_matvecs: int
    converged: bool
    method: str
    which: str
    tol: float
    stop_estimates: list[float] | None = None
    stop: str = "residual"
    converged_pairs: list[bool] | None = None
    ritz_residuals: list[float] | None = None
    rounding: list[float] | None = None
    krylov_dim: int | None = None
    ritz_range: tuple[float, float] | None = None
    dim: int | None = None
    vector_memory: VectorMemory | None = None
    rounding_relative: list[float] | None = None

    @property
    def relative_residuals(self) -> list[float]:
        """``r_i / |θ_i|`` (inf for a zero eigenvalue)."""
        return [
            r / abs(t) if t != 0 else float("inf")
            for r, t in zip(self.residuals, self.eigenvalues, strict=True)
        ]

    def to_dict(self) -> EigenDict:
        """Plain-JSON form (eigenvectors left out)."""
        return {
            "eigenvalues": self.eigenvalues,
            "residuals": self.residuals,
            "iterations": self.iterations,
            "num_matvecs": self.num_matvecs,
            "converged": self.converged,
            "method": self.method,
            "which": self.which,
            "tol": self.tol,
            "stop_estimates": self.stop_estimates if self.stop_estimates is not None else self.residuals,
            "stop": self.stop,
            "converged_pairs": self.converged_pairs,
            "ritz_residuals": self.ritz_residuals,
            "rounding": self.rounding,
            "krylov_dim": self.krylov_dim,
            "ritz_range": self.ritz_range,
            "vector_memory": self.vector_memory,
        }


class Basis:
    """Rows ``q_0 … q_{m-1}`` of an orthonormal basis, in blocks allocated as it grows (never copied).

    With a known length (``capacity``, e.g. SLQ's ``num_steps``) one block of exactly that many rows is
    allocated; otherwise blocks of ``block`` rows are added as needed, so at most ``block − 1`` rows are
    unused and no step copies the basis (doubling a buffer would hold 1.5× the basis during the copy).
    """

    def __init__(
        self, n: int, dtype: torch.dtype, device: torch.device, capacity: int | None = None, block: int = 8
    ) -> None:
        self.n, self.dtype, self.device = n, dtype, device
        self.block = capacity if capacity is not None else block
        self.blocks: list[torch.Tensor] = []
        self.size = 0

    def append(self, q: torch.Tensor) -> None:
        """Store ``q`` (already orthonormal to the rows) as the next row."""
        if self.size == sum(b.shape[0] for b in self.blocks):
            self.blocks.append(torch.empty((self.block, self.n), dtype=self.dtype, device=self.device))
        self.blocks[-1][self.size - self.block * (len(self.blocks) - 1)] = q
        self.size += 1

    def _filled(self) -> list[torch.Tensor]:
        """Views of the filled rows, block by block."""
        rows, left = [], self.size
        for b in self.blocks:
            rows.append(b[: min(left, b.shape[0])])
            left -= rows[-1].shape[0]
        return [r for r in rows if r.shape[0] > 0]

    def row(self, i: int) -> torch.Tensor:
        """``q_i`` (negative ``i`` counts from the end)."""
        i = i % self.size
        return self.blocks[i // self.block][i % self.block]

    def combine(self, coeffs: torch.Tensor) -> torch.Tensor:
        """``coeffsᵀ Q``: ``(m, c)`` coefficients -> ``(c, n)`` combinations of the rows."""
        out, start = None, 0
        for b in self._filled():
            part = coeffs[start : start + b.shape[0]].T.to(b.dtype) @ b
            out = part if out is None else out + part
            start += b.shape[0]
        assert out is not None
        return out

    def extend(self, w: torch.Tensor, seed: int) -> bool:
        """Append ``w`` orthonormalised against the rows; False (nothing added) when they already span ℝⁿ.

        A ``w`` (numerically) in the span of the rows is replaced by a Gaussian vector seeded by ``seed``,
        as Householder QR completes a rank-deficient matrix: the rows stay orthonormal and independent of
        anything drawn later, and ``n`` vectors in ``n`` dimensions always span everything.
        """
        if self.size >= self.n:
            return False
        w = w.to(self.dtype, copy=True)
        for attempt in range(4):
            ref = norm64(w)
            w = self.project_out(w)
            length = norm64(w)
            if length > 100 * torch.finfo(self.dtype).eps * ref:
                break
            gen = torch.Generator().manual_seed(1_000_003 * seed + attempt)
            w = torch.randn(self.n, generator=gen, dtype=torch.float64).to(self.device, self.dtype)
        self.append(w / length)
        return True

    def project_out(self, w: torch.Tensor) -> torch.Tensor:
        """``w`` minus its component in the basis, by classical Gram-Schmidt passes ("twice is enough").

        A second pass runs only when the first removed more than ``1 − 1/√2`` of ``w``'s norm
        (Daniel, Gragg, Kaufman & Stewart 1976): otherwise ``w`` was already orthogonal to working
        precision and a second pass would cost as much as the first. The coefficients are accumulated
        in float64 whatever the rows' dtype (:func:`dot64`); the update ``w −= Qᵀc`` runs in ``w``'s
        dtype, in place (no vector-sized temporaries).
        """
        for _ in range(2):
            before = norm64(w)
            filled = self._filled()
            coeffs = [dot64(b, w) for b in filled]  # all coefficients from the same w: classical GS
            for b, c in zip(filled, coeffs, strict=True):
                _sub_rows(w, b, c)
            if norm64(w) > DGKS_KEPT * before:
                break
        return w

    def memory(self) -> VectorMemory:
        """The kept vectors: count, dtype, device and bytes allocated (linear in the count)."""
        allocated = sum(b.numel() * b.element_size() for b in self.blocks)
        dtype = str(self.dtype).removeprefix("torch.")
        return {"vectors": self.size, "dtype": dtype, "device": str(self.device), "bytes": allocated}


class Krylov:
    """The Lanczos recurrence with full reorthogonalisation, one product per :meth:`step`.

    After ``m`` steps, ``alpha`` (m,) and ``beta`` (m,) hold ``T_m``'s diagonal and off-diagonal
    (``beta[m-1]`` is ``β_m``, the coupling to the next basis vector, used for residuals).

    Precision: the vectors (basis rows and the working vector) are kept in the parameters' dtype and on
    their device (float32 by default: half the memory and half the memory traffic of a float64 basis),
    while every inner product — α = qᵀHq, β = ‖w‖ and the Gram-Schmidt coefficients — is accumulated in
    float64 (:func:`dot64`) and ``T_m`` and its eigen-decomposition are float64. Inner products
    accumulated in float32 over ~10⁵ entries put errors of several 1e-6 into ``T_m`` (measured on a
    106k-parameter CNN: λmax off by 4–7e-6 with a float32 recurrence; top-3 eigenvalues of a 200k
    float32 operator off by 1.1e-6 with float32 Gram-Schmidt coefficients); with float64 accumulation
    what is left is the rounding of the stored vectors, ~2⁻²⁴‖H‖ per step like the products' own, which
    the true residual of each reported pair measures (:mod:`lscape_cli.core.linalg.eigen_bounds`).

    Args:
        op: the symmetric operator.
        start: flat starting vector (normalised here).
        capacity: the number of steps that will be run, when known (allocates the basis exactly).
        basis_dtype: dtype of the basis and working vectors (default: ``start``'s, the operator's).
    """

    def __init__(
        self,
        op: Operator,
        start: torch.Tensor,
        capacity: int | None = None,
        basis_dtype: torch.dtype | None = None,
    ) -> None:
        self.op = op
        self.dtype = start.dtype  # the operator's dtype: products run in it
        vdtype = basis_dtype if basis_dtype is not None else start.dtype
        self.basis = Basis(start.numel(), vdtype, start.device, capacity)
        self.alpha: list[float] = []
        self.beta: list[float] = []
        start = start.to(vdtype, copy=True)
        self.next: torch.Tensor | None = start.div_(norm64(start))
        self._scale = 0.0  # running max |α|, |β|: the breakdown test is relative to ‖T‖
        self.krylov_dim: int | None = None  # steps before the first breakdown (None: none yet)

    def step(self) -> bool:
        """One Lanczos step; False when the Krylov space is invariant (``β_m ≈ 0``, no next vector)."""
        if self.next is None:
            raise RuntimeError("Lanczos step after breakdown: call restart() first")
        q = self.next
        self.basis.append(q)
        w = flatten(self.op(unflatten(q.to(self.dtype), self.op.params))).to(self.basis.dtype)
        a = float(dot64(q, w))
        w.sub_(q, alpha=a)
        if len(self.beta) > 0:
            w.sub_(self.basis.row(-2), alpha=self.beta[-1])
        w = self.basis.project_out(w)
        b = norm64(w)
        self._scale = max(self._scale, abs(a), b)
        self.alpha.append(a)
        exhausted = b <= 10 * torch.finfo(self.dtype).eps * self._scale
        self.beta.append(0.0 if exhausted else b)
        self.next = None if exhausted else w.div_(b)
        return not exhausted

    def restart(self, generator: torch.Generator) -> bool:
        """After a breakdown, continue from a random vector orthogonal to the basis; False if none is left."""
        if self.krylov_dim is None:
            self.krylov_dim = self.size
        if self.basis.size >= self.basis.n:
            return False
        w = flatten(gaussian(self.op.params, generator)).to(self.basis.dtype, copy=True)
        w = self.basis.project_out(w)
        self.next = w.div_(norm64(w))
        return True

    @property
    def size(self) -> int:
        """Steps done, ``m``."""
        return len(self.alpha)

    def tridiagonal(self) -> torch.Tensor:
        """``T_m`` as a dense ``(m, m)`` float64 matrix."""
        a = torch.tensor(self.alpha, dtype=torch.float64)
        b = torch.tensor(self.beta[:-1], dtype=torch.float64)
        return torch.diag(a) + torch.diag(b, 1) + torch.diag(b, -1)

    def ritz(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Ritz values (ascending), eigenvectors ``S`` of ``T_m`` (columns), residuals ``|β_m s_{m,i}|``."""
        theta, s = torch.linalg.eigh(self.tridiagonal())
        return theta, s, (self.beta[-1] * s[-1]).abs()


def _wanted(theta: torch.Tensor, n_top: int, n_bottom: int) -> torch.Tensor:
    """Indices into ascending ``theta``: the ``n_top`` largest (descending), then ``n_bottom`` smallest."""
    m = theta.shape[0]
    top = torch.arange(m - 1, max(m - n_top, 0) - 1, -1)
    bottom = torch.arange(min(n_bottom, m))
    return torch.cat([top, bottom])


def _converged(theta: torch.Tensor, res: torch.Tensor, tol: float, atol: float) -> torch.Tensor:
    """Per-pair test ``r ≤ max(tol |θ|, atol)`` (``r`` a residual or an error bound)."""
    return res <= torch.clamp(tol * theta.abs(), min=atol)


def _stop_estimates(theta: torch.Tensor, res: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``min(r_i, r_i² / δ̂_i)`` for the Ritz pairs ``idx``, ``δ̂_i = min_{j≠i} |θ_i − θ_j| − r_j``."""
    out = res[idx].clone()
    if theta.shape[0] < 2:
        return out
    for n, i in enumerate(idx.tolist()):
        others = torch.cat([torch.arange(i), torch.arange(i + 1, theta.shape[0])])
        gap = float(((theta[i] - theta[others]).abs() - res[others]).min())
        if gap > 0:
            out[n] = min(float(res[i]), float(res[i]) ** 2 / gap)
    return out


STOPS = EigStop.values()


def _ends(k: int, which: str, k_smallest: int | None) -> tuple[int, int]:
    """How many Ritz values are wanted at the top and at the bottom of the spectrum."""
    if which not in WHICH:
        raise ValueError(f"which must be one of {WHICH}, got {which!r}")
    if which == "largest":
        return k, 0
    if which == "smallest":
        return 0, k
    return k, k if k_smallest is None else k_smallest


def _check_args(n_top: int, n_bottom: int, tol: float, max_iter: int, dim: int) -> None:
    if min(n_top, n_bottom) < 0 or n_top + n_bottom < 1 or n_top + n_bottom > dim:
        raise ValueError(
            f"the wanted eigenvalues ({n_top} largest, {n_bottom} smallest) must number 1..{dim} "
            f"for {dim} parameters"
        )
    if tol <= 0 or max_iter < 1:
        raise ValueError(f"tol must be > 0 and max_iter >= 1, got tol={tol}, max_iter={max_iter}")


def lanczos(
    op: Operator,
    k: int = 1,
    which: str = "largest",
    tol: float = 1e-6,
    atol: float = 0.0,
    max_iter: int = 200,
    seed: int = 0,
    eigenvectors: bool = False,
    on_step: ProgressFn | None = None,
    stop: str = "bound",
    k_smallest: int | None = None,
    true_residuals: bool = False,
    reference: Operator | None = None,
    reference_scale: float = 1.0,
) -> EigenResult:
    """Extreme eigenvalues of ``H`` by Lanczos with full reorthogonalisation, stopped on Ritz residuals.

    Each wanted pair is judged on its own test (``converged_pairs``), and the run stops as soon as every
    wanted pair has passed, so asking for both ends costs the products of the slower end, not more.

    Args:
        op: the Hessian operator (entered as a context manager: its graph is released on return).
        k: how many eigenvalues (per end for ``which="both"``); ``λmax`` is ``k=1``.
        which: ``"largest"`` (algebraic), ``"smallest"`` (most negative) or ``"both"``.
        tol: relative tolerance on each wanted pair's error bound or residual (module docstring).
        atol: absolute floor, for eigenvalues near zero.
        max_iter: at most this many steps (= products); capped at the number of parameters.
        seed: seeds the Gaussian start vector (drawn on the CPU: same on every device).
        eigenvectors: also return the Ritz vectors ``y_i = Q_m s_i``.
        on_step: called after each step with ``iteration``, ``eigenvalues``, ``residuals``.
        stop: ``"bound"`` (the default) or ``"residual"``: what ``tol`` is applied to.
        k_smallest: with ``which="both"``, how many of the smallest (default ``k``).
        true_residuals: after the run, compute ``‖H y_i − θ_i y_i‖`` for every reported pair with one
            product each (reported in ``residuals``; the recurrence's estimates in ``ritz_residuals``).
        reference: with ``true_residuals``, the same matrix in a reference dtype: one more product per
            pair measures the rounding of ``op``'s product on that pair's vector (``rounding``).
        reference_scale: factor for those differences (:func:`.rounding.reference_dtype`).

    Returns:
        The wanted Ritz values with residuals and error bounds; ``converged`` is False if ``max_iter``
        ran out.
    """
    n_top, n_bottom = _ends(k, which, k_smallest)
    _check_args(n_top, n_bottom, tol, max_iter, op.dim)
    if stop not in STOPS:
        raise ValueError(f"stop must be one of {STOPS}, got {stop!r}")
    n_wanted = n_top + n_bottom
    generator = torch.Generator().manual_seed(seed)
    with op:
        start_count = op.num_matvecs
        kry = Krylov(op, flatten(gaussian(op.params, generator)))
        done = False
        while not done:
            alive = kry.step()
            theta, s, res = kry.ritz()
            idx = _wanted(theta, n_top, n_bottom)
            bounds = _stop_estimates(theta, res, idx)
            test = bounds if stop == "bound" else res[idx]
            passed = _converged(theta[idx], test, tol, atol) & (kry.size >= n_wanted)
            ok = bool(passed.all())
            if on_step is not None:
                on_step(
                    {
                        "iteration": kry.size,
                        "eigenvalues": theta[idx].tolist(),
                        "residuals": res[idx].tolist(),
                    }
                )
            done = ok or kry.size >= min(max_iter, op.dim) or (not alive and not kry.restart(generator))
        vectors, ritz, residuals, rnd, rel = None, None, res[idx].tolist(), None, None
        if eigenvectors or true_residuals:
            y = kry.basis.combine(s[:, idx].to(kry.basis.device)).to(kry.dtype)  # (len(idx), n)
            vectors = [unflatten(row, op.params) for row in y]
        if true_residuals:
            assert vectors is not None
            ritz = residuals
            residuals, rnd, rel = _residuals(op, vectors, theta[idx].tolist(), reference, reference_scale)
        return EigenResult(
            theta[idx].tolist(),
            residuals,
            vectors if eigenvectors else None,
            kry.size,
            op.num_matvecs - start_count,
            ok,
            "lanczos",
            which,
            tol,
            bounds.tolist(),
            stop,
            passed.tolist(),
            ritz,
            rnd,
            kry.krylov_dim if kry.krylov_dim is not None else kry.size,
            (float(theta[0]), float(theta[-1])),
            op.dim,
            kry.basis.memory(),
            rel if true_residuals else None,
        )


def _residuals(
    op: Operator, vectors: list[Params], values: list[float], reference: Operator | None, scale: float
) -> tuple[list[float], list[float] | None, list[float] | None]:
    """``‖H y − θ y‖ / ‖y‖`` per pair, one product each, accumulated in float64.

    With a ``reference``, also the rounding ``scale · ‖H y − H_ref y‖ / ‖y‖ + 2u₆₄ (‖H y‖ / ‖y‖ + |θ|)``
    (one reference product each; the second term is the float64 arithmetic of the residual itself) and
    the products' relative difference ``scale · ‖H y − H_ref y‖ / ‖H_ref y‖``.
    """
    out, rnd, rel = [], [], []
    for y, theta in zip(vectors, values, strict=True):
        v = flatten(y).double()
        hv = flatten(op(y)).double()
        length = torch.linalg.vector_norm(v)
        out.append(float(torch.linalg.vector_norm(hv - theta * v) / length))
        if reference is not None:
            ref_dtype = next(iter(reference.params.values())).dtype
            with reference:
                h_ref = flatten(reference(unflatten(flatten(y).to(ref_dtype), reference.params))).double()
            diff = float(torch.linalg.vector_norm(hv - h_ref.to(hv.device)))
            # the residual's own float64 arithmetic: ‖fl(Hy − θy) − (Hy − θy)‖ ≤ 2u (‖Hy‖ + |θ| ‖y‖)
            arithmetic = _EPS64 * (float(torch.linalg.vector_norm(hv)) / float(length) + abs(theta))
            rnd.append(scale * diff / float(length) + arithmetic)
            rel.append(scale * diff / max(float(torch.linalg.vector_norm(h_ref)), 1e-300))
    if reference is None:
        return out, None, None
    return out, rnd, rel


def power_iteration(
    op: Operator,
    tol: float = 1e-6,
    atol: float = 0.0,
    max_iter: int = 1000,
    seed: int = 0,
    eigenvectors: bool = False,
    on_step: ProgressFn | None = None,
    reference: Operator | None = None,
    reference_scale: float = 1.0,
) -> EigenResult:
    """The eigenvalue of largest magnitude by power iteration, stopped on the exact residual.

    ``θ_t = v_tᵀ H v_t`` and ``r_t = ‖H v_t − θ_t v_t‖`` come from the same product that makes
    ``v_{t+1} = H v_t / ‖H v_t‖``, so each iteration costs one product. The reported pair is the last
    iterate whose product was computed (its vector, value and residual belong together).

    Args:
        op: the Hessian operator (entered as a context manager).
        tol: relative residual tolerance, ``r ≤ max(tol |θ|, atol)``.
        atol: absolute residual floor.
        max_iter: at most this many products.
        seed: seeds the Gaussian start vector.
        eigenvectors: also return the final unit vector.
        on_step: called after each product with ``iteration``, ``eigenvalue``, ``residual``.
        reference: the same matrix in a reference dtype: one product on the last iterate measures the
            rounding of ``op``'s product there (``rounding``, see :func:`lanczos`).
        reference_scale: factor for that difference.

    Returns:
        One eigenvalue (``which="magnitude"``); ``converged`` is False if ``max_iter`` ran out.
    """
    _check_args(1, 0, tol, max_iter, op.dim)
    generator = torch.Generator().manual_seed(seed)
    with op:
        start_count = op.num_matvecs
        v = flatten(gaussian(op.params, generator))
        v = v / torch.linalg.vector_norm(v)
        for it in range(1, max_iter + 1):
            w = flatten(op(unflatten(v, op.params)))
            theta = float(v @ w)
            res = float(torch.linalg.vector_norm(w - theta * v))
            ok = res <= max(tol * abs(theta), atol)
            if on_step is not None:
                on_step({"iteration": it, "eigenvalue": theta, "residual": res})
            w_norm = torch.linalg.vector_norm(w)
            if ok or w_norm == 0 or it == max_iter:
                break
            v = w / w_norm
        rnd = rel = None
        if reference is not None:
            _, rnd, rel = _residuals(op, [unflatten(v, op.params)], [theta], reference, reference_scale)
        vectors = [unflatten(v, op.params)] if eigenvectors else None
        return EigenResult(
            [theta],
            [res],
            vectors,
            it,
            op.num_matvecs - start_count,
            ok,
            "power",
            "magnitude",
            tol,
            rounding=rnd,
            rounding_relative=rel,
            dim=op.dim,
        )


def condition_number(largest: float, smallest: float) -> float | None:
    """``κ = λmax / λmin`` when both extremes are positive (``H`` positive definite); None otherwise.

    At a minimum of a network the Hessian is at best positive semi-definite with a near-zero (or slightly
    negative) bottom eigenvalue, where ``κ`` is meaningless; None says so rather than a huge or negative
    number.
    """
    if largest > 0 and smallest > 0:
        return largest / smallest
    return None
