"""Stochastic trace and Frobenius-norm estimation: Hutchinson and Hutch++, from one set of products each.

Hutchinson (Hutchinson 1989, "A stochastic estimator of the trace of the influence matrix for Laplacian
smoothing splines"; Avron & Toledo 2011, J. ACM 58(2)): for Rademacher probes ``v`` (independent ±1
entries, ``E[v vᵀ] = I``),

    tr(H) = E[vᵀ H v],        ‖H‖_F² = tr(H²) = E[‖H v‖²],

so the ``m`` products ``H v_i`` give both estimates at once (seed 000 uses ``m = 45``). The trace's
standard error is the sample standard deviation over probes divided by ``√m``; ``tr(H²)``'s is formed
from pairs of the products (Uncertainty, below), and for ``‖H‖_F = √tr(H²)`` it is carried through the
square root by the delta method, ``se(√X) ≈ se(X) / (2√X)``.

Hutch++ (Meyer, Musco, Musco & Woodruff 2021, "Hutch++: Optimal stochastic trace estimation", SOSA)
spends a third of the budget on a sketch ``Y = H S`` (``S`` Rademacher, ``n × m/3``), takes an orthonormal
basis ``Q`` of ``Y`` (which captures the top eigenspace of ``H``), computes the top part exactly from
``H Q`` (another third) and runs Hutchinson on the deflated rest with the last third:

    tr(H)   = tr(Qᵀ H Q) + E_g[ gᵀ P H P g ],                        P = I − Q Qᵀ,
    ‖H‖_F²  = ‖H Q‖_F²   + ‖P H Q‖_F² + E_g[ ‖P H P g‖² ].

The second line splits ``H`` into the blocks ``QᵀHQ``, ``PHQ``, its transpose ``QᵀHP`` and ``PHP``:
``‖HQ‖_F²`` holds the first two, the coupling ``‖QᵀHP‖_F² = ‖PHQ‖_F² = Σ_j ‖P H q_j‖²`` comes exactly from
the same products ``H q_j``, and only ``‖PHP‖_F² = E‖PHPg‖²`` is estimated. (Estimating
``‖HP‖_F² = E‖HPg‖²`` instead, as before, is also unbiased but leaves the coupling, a low-rank and so
heavily skewed part, to the probes: with 45 products over 300 seeds on exact Hessians, the RMS error of
Hutch++'s ``‖H‖_F²`` was 2.6× larger on a CE CNN (1,034 parameters, 256 digits images) and 1.4× on an
MSE MLP (1,482 parameters); krylov-hutch++'s coupling is one rank, ``β_k²``, and its error moved 1%.)
Both expectations use the same products ``H (P g_i)``, so the Frobenius norm costs nothing extra, and
both estimates are unbiased given ``Q`` (which depends only on ``S``, independent of ``g``).

Uncertainty. The standard error of Hutch++ and of the Krylov variant below is that of the deflated
Hutchinson part, and this accounts for the randomness of the sketch (or Lanczos start vector) too: for
*every* ``Q``, ``tr(QᵀHQ) + tr(PHP) = tr(H)`` (and the three parts of ``‖H‖_F²`` add up), so the estimate's
conditional mean given ``Q`` is the exact value whatever ``Q`` is, and by the law of total variance

    Var(estimate) = E_Q[Var(estimate | Q)] + Var_Q(E[estimate | Q]) = E_Q[Var(estimate | Q)] + 0.

The probes' sample variance is unbiased for ``Var(estimate | Q)``, hence for the total variance:
``Q`` moves how large the remainder is (and so the standard error), never the centre. Measured on exact
float64 Hessians of an MSE MLP and a CE CNN (200 seeds, 45 products, float32 and float64;
benchmarks/bench_uncertainty.py, docs/benchmarks.md), the spread of the estimates over seeds is
0.87-1.08 times the RMS reported standard error for all three methods. Splitting the budget into ``r``
independent replicates, with the spread across them as the error, was measured as the alternative and
rejected for its accuracy: 3 replicates of 15 products cover as well (with the t factor below, 2
degrees of freedom), but each replicate's sketch is three times smaller, so the RMS error of the trace
grows 1.9-2.2× on the MLP and 8.5-11× on the CNN, and of ‖H‖_F 4.6× and 150-230×.

What the sample standard error does not carry is its own small-sample spread: with ``ν = probes − 1``
degrees of freedom (14 for Hutch++ and krylov-hutch++ at 45 products), ``±2`` standard errors cover
93.5% under Student's t, and less when the quadratic forms are skewed (a remainder dominated by a few
eigenvalues: a low sample mean comes with a low sample variance). The deflated estimators therefore take
the trace's standard error from the products instead (:func:`remainder_stderr`, ``stderr_method``
``"remainder-norm"``): for Rademacher ``g``, ``Var(gᵀAg) = 2(‖A‖_F² − Σ A_ii²)`` with ``A = PHP``, and
both terms have unbiased estimates from the products already spent, ``mean ‖PHPg‖²`` (needed for
``‖H‖_F`` anyway) and a U-statistic of the diagonal from ``g ⊙ PHPg``. That variance estimate has
~100-250 effective degrees of freedom instead of 14 and does not move with the quadratic forms' sample.
On dense float64 Hessians (200 seeds, 45 products, ``|z| < 2``) it took krylov-hutch++ on the CE CNN
trained to a loss of 2e-5 from 91.5% to 94.0% (the exact conditional variance covers 94.5% there: the
rest is the estimate's own skew), and kept hutch++ and the other problems at 93-96.5% with
``sd / rms(stderr)`` 0.99-1.05. Dropping the diagonal term (the Gaussian-probe variance ``2‖A‖_F²``)
would be an upper bound for Rademacher probes, ~10% high on these Hessians but 3× on a flat remainder
in a random basis. Hutchinson's trace keeps the probes' spread (44 dof; the product form was no better
there). Every ``‖H‖_F²`` takes its standard error from the products in the same way
(:func:`square_norm_stderr`, ``"product-pairs"``): ``‖Ag‖² = gᵀA²g`` is a Rademacher quadratic form of
``A²``, whose variance ``2(‖A²‖_F² − Σ (A²)_ii²)`` has unbiased estimates from pairs of the products
already spent; with the probes' spread, four ‖H‖_F rows of the coverage table were at 92%, with the
products they are at 94.5%, and every method covers 94.3-96.6% over 1000 seeds on exact Hessians.
Each :class:`Estimate` reports ``stderr``, how it was formed, its ``dof``, a
floating-point ``rounding`` floor (:mod:`lscape_cli.core.linalg.rounding`, measured, reported separately) and
the combined

    uncertainty = √((k_ν · stderr)² + rounding²),       k_ν = t_ν⁻¹(Φ(2)) / 2,

so that ``estimate ± 2 · uncertainty`` is the 95.4% Student-t interval (``k_14 = 1.10``, ``k_44 = 1.03``).
Coverage over seeds on real models: docs/benchmarks.md (``benchmarks/bench_uncertainty.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import TypedDict

import torch

from lscape_cli.core.linalg.hvp import Operator, Params, ProgressFn, flatten, rademacher, unflatten
from lscape_cli.core.linalg.spectrum import Basis, Krylov


@dataclass(frozen=True)
class Estimate:
    """A stochastic estimate with its uncertainty and budget (the metric-file shape of DESIGN.md).

    Attributes:
        estimate: the value.
        stderr: its standard error ``s/√m`` (nan when it cannot be estimated, e.g. from one probe).
        method: ``"hutchinson"``, ``"hutch++"``, ``"krylov-hutch++"``, ``"slq"``.
        num_matvecs: Hessian-vector products spent (shared when several estimates come from one run).
        dof: degrees of freedom of ``stderr`` (samples − 1; None when unknown).
        rounding: floating-point floor of the products (:mod:`lscape_cli.core.linalg.rounding`; None: not
            measured).
        stderr_method: how ``stderr`` was formed: :data:`PROBE_SPREAD` (the sample standard deviation of
            the probes, or runs, over ``√m``) or :data:`REMAINDER_NORM` (:func:`remainder_stderr`).
    """

    estimate: float
    stderr: float
    method: str
    num_matvecs: int
    dof: int | None = None
    rounding: float | None = None
    stderr_method: str = "probe-spread"

    @property
    def uncertainty(self) -> float:
        """``√((k_ν · stderr)² + rounding²)``: ``estimate ± 2 · uncertainty`` is a 95% interval."""
        return math.hypot(t_factor(self.dof) * self.stderr, self.rounding or 0.0)

    @property
    def rounding_dominates(self) -> bool:
        """Whether the rounding floor is larger than the (t-scaled) statistical error."""
        return self.rounding is not None and self.rounding > t_factor(self.dof) * self.stderr

    def with_rounding(self, rounding: float) -> Estimate:
        """The same estimate with its rounding floor attached."""
        return replace(self, rounding=rounding)

    def to_dict(self) -> EstimateDict:
        """Plain-JSON form (``note`` only when rounding dominates)."""
        out: EstimateDict = {
            "estimate": self.estimate,
            "stderr": self.stderr,
            "rounding": self.rounding,
            "uncertainty": self.uncertainty,
            "dof": self.dof,
            "stderr_method": self.stderr_method,
            "method": self.method,
            "num_matvecs": self.num_matvecs,
        }
        if self.rounding_dominates:
            out["note"] = ROUNDING_NOTE
        return out


class _EstimateFields(TypedDict):
    estimate: float
    stderr: float | None
    rounding: float | None
    uncertainty: float | None
    dof: int | None
    stderr_method: str | None
    method: str
    num_matvecs: int


class EstimateDict(_EstimateFields, total=False):
    """:meth:`Estimate.to_dict`: a probe record's ``trace`` / ``frobenius`` entry less its ``seed``."""

    note: str  # only when rounding dominates the uncertainty


PROBE_SPREAD = "probe-spread"  # s/√m of the probes' quadratic forms (ν = m − 1)
REMAINDER_NORM = "remainder-norm"  # √(2(‖A‖_F² − Σ A_ii²)/m) from the products (remainder_stderr)
PRODUCT_PAIRS = "product-pairs"  # √(2(‖A²‖_F² − Σ (A²)_ii²)/m) from pairs of products (square_norm_stderr)
ROUNDING_NOTE = "floating-point rounding dominates the uncertainty: rerun with --dtype float64"
_NORMAL_2SIGMA = 0.9772498680518208  # Φ(2): ±2 standard deviations of a normal cover 95.45%


@lru_cache(maxsize=256)
def t_factor(dof: int | None) -> float:
    """``k_ν = t_ν⁻¹(Φ(2)) / 2``: the stderr multiplier that makes ±2 a Student-t interval (1 for None).

    >>> round(t_factor(14), 3), round(t_factor(44), 3), t_factor(None)
    (1.098, 1.029, 1.0)
    """
    if dof is None:
        return 1.0
    if dof < 1:
        return math.nan
    from scipy.stats import t  # scipy only here: importing it costs ~0.3 s

    return float(t.ppf(_NORMAL_2SIGMA, dof)) / 2


@dataclass(frozen=True)
class TraceFrobenius:
    """``tr(H)``, ``‖H‖_F`` and ``‖H‖_F² = tr(H²)`` estimated from one set of products."""

    trace: Estimate
    frobenius: Estimate
    frobenius_sq: Estimate

    def with_rounding(self, trace: float, frobenius_sq: float) -> TraceFrobenius:
        """Attach rounding floors of ``tr(H)`` and ``‖H‖_F²`` (``‖H‖_F``'s by the delta method)."""
        fro = self.frobenius.estimate
        return TraceFrobenius(
            self.trace.with_rounding(trace),
            self.frobenius.with_rounding(frobenius_sq / (2 * fro) if fro > 0 else math.nan),
            self.frobenius_sq.with_rounding(frobenius_sq),
        )


def mean_stderr(samples: torch.Tensor) -> tuple[float, float]:
    """Sample mean and its standard error ``std(ddof=1) / √m`` (nan for a single sample)."""
    m = samples.shape[0]
    if m < 2:
        return float(samples.mean()), math.nan
    return float(samples.mean()), float(samples.std(unbiased=True)) / math.sqrt(m)


def _products(
    op: Operator, vectors: list[Params], on_step: ProgressFn | None, done: int, total: int
) -> list[Params]:
    """``H v`` for each vector, in groups of the operator's batch size, reporting progress."""
    out: list[Params] = []
    for start in range(0, len(vectors), op.batch_size):
        out.extend(op.hvp_many(vectors[start : start + op.batch_size]))
        if on_step is not None:
            on_step({"num_matvecs": done + len(out), "total": total})
    return out


@dataclass(frozen=True)
class ProbeStats:
    """What a set of probes gives: per probe ``vᵀHv`` and ``‖r‖²`` (float64, ``(m,)``), and U-statistics.

    ``A`` is the matrix the probes sample (``H``, or the deflated ``PHP``), ``g`` the Rademacher probe
    (``v = g``, or ``v = P g``) and ``r = A g`` (``H v``, or ``P H v``), so ``vᵀHv = gᵀAg`` and
    ``E‖r‖² = ‖A‖_F²``. ``diag_sq`` is the unbiased U-statistic
    ``Σ_{j≠l} ⟨g_j ⊙ r_j, g_l ⊙ r_l⟩ / (m(m − 1))`` of ``Σ_i A_ii²`` (``E[g ⊙ Ag] = diag A`` and the
    probes are independent). The next three are those of ``B = A²``, whose Rademacher quadratic form
    ``gᵀBg = ‖r‖²`` is what ``‖A‖_F²`` averages: ``sq_frob_sq`` estimates ``‖B‖_F²`` by the mean of
    ``⟨r_j, r_l⟩² = (g_jᵀ B g_l)²`` over pairs ``j ≠ l`` (a window of recent pairs when the vectors are
    large), ``sq_diag_sq`` estimates ``Σ_i B_ii²`` by ``Σ_{j≠l} ⟨r_j ⊙ r_j, r_l ⊙ r_l⟩ / (m(m − 1))``
    (``E[r ⊙ r] = diag B``), and ``sq_pair_spread`` is the variance over probes of each probe's mean
    pair term (for the degrees of freedom). All nan below two probes.
    """

    quad: torch.Tensor
    sq: torch.Tensor
    diag_sq: float
    sq_frob_sq: float = math.nan
    sq_diag_sq: float = math.nan
    sq_pair_spread: float = math.nan


def _draw(op: Operator, generator: torch.Generator) -> Callable[[], torch.Tensor]:
    """A function drawing flat Rademacher probes shaped like the operator's parameters."""
    return lambda: flatten(rademacher(op.params, generator))


PAIR_WINDOW_ELEMENTS = 1 << 25  # products kept for the pair terms of ProbeStats: 32M numbers (128 MB f32)
PAIR_WINDOW_MIN = 8  # ... but at least this many, whatever their size


def _probe_stats(
    op: Operator,
    draw: Callable[[], torch.Tensor],
    count: int,
    on_step: ProgressFn | None,
    done: int,
    total: int,
    basis: Basis | None = None,
) -> ProbeStats:
    """:class:`ProbeStats` of ``count`` flat Rademacher probes ``g = draw()`` (deflated by ``basis``).

    With a ``basis`` the probe is ``v = P g`` and ``r = P H v``, ``P`` the projector off the basis.
    Probes are drawn and discarded a group at a time, so memory holds one group (probes, deflated
    probes, products), sums of ``g ⊙ r`` and ``r ⊙ r`` in the products' dtype, and the last ``w``
    products ``r`` for the pair terms (all of them when ``count · n ≤`` :data:`PAIR_WINDOW_ELEMENTS`,
    else at least :data:`PAIR_WINDOW_MIN`).
    """
    n = op.dim
    window = max(PAIR_WINDOW_MIN, PAIR_WINDOW_ELEMENTS // max(n, 1))
    quad, sq = [], []
    z_sum, z_sq = None, 0.0  # Σ_j g_j ⊙ r_j and Σ_j ‖g_j ⊙ r_j‖²
    w_sum, w_sq = None, 0.0  # Σ_j r_j ⊙ r_j and Σ_j ‖r_j ⊙ r_j‖²
    recent: list[torch.Tensor] = []  # the last `window` products r
    pair_terms: list[list[float]] = []  # per probe, its ⟨r_j, r_l⟩² with the probes in its window
    for start in range(0, count, op.batch_size):
        gs = [draw() for _ in range(min(op.batch_size, count - start))]
        vs = [g if basis is None else basis.project_out(g.clone()) for g in gs]
        for g, v, h in zip(gs, vs, op.hvp_many([unflatten(v, op.params) for v in vs]), strict=True):
            hf = flatten(h)
            quad.append(v @ hf)
            r = hf if basis is None else basis.project_out(hf)
            w = r.square()
            sq.append(w.sum())
            # in the products' dtype, no float64 copies (on ResNet-18 they cost 36 s of a 160 s run):
            # these sums only feed a variance, where float32's relative 1e-7 is immaterial
            z_sum = torch.zeros_like(r) if z_sum is None else z_sum
            z_sum.addcmul_(g, r)
            z_sq += float(sq[-1])  # ‖g ⊙ r‖² = ‖r‖² for ±1 entries
            w_sum = torch.zeros_like(r) if w_sum is None else w_sum
            w_sum.add_(w)
            w_sq += float(torch.dot(w, w))
            pair_terms.append([])
            for back, old in enumerate(reversed(recent)):
                term = float(torch.dot(old, r)) ** 2  # a variance's ingredient: the dtype's dot suffices
                pair_terms[-1].append(term)
                pair_terms[len(pair_terms) - 2 - back].append(term)
            recent.append(r)
            if len(recent) > window:
                recent.pop(0)
        if on_step is not None:
            on_step({"num_matvecs": done + len(quad), "total": total})
    m = len(quad)
    if z_sum is None or w_sum is None or m < 2:
        return ProbeStats(torch.stack(quad).double(), torch.stack(sq).double(), math.nan)
    pairs = [t for row in pair_terms for t in row]
    row_means = torch.tensor([sum(row) / len(row) for row in pair_terms], dtype=torch.float64)
    return ProbeStats(
        torch.stack(quad).double(),
        torch.stack(sq).double(),
        (float(z_sum.double().square().sum()) - z_sq) / (m * (m - 1)),
        sum(pairs) / len(pairs),
        (float(w_sum.double().square().sum()) - w_sq) / (m * (m - 1)),
        float(row_means.var()) if m > 2 else math.nan,
    )


def remainder_stderr(stats: ProbeStats) -> tuple[float, int | None]:
    """Standard error of ``mean(gᵀAg)`` from the products, and its effective degrees of freedom.

    For Rademacher ``g``, ``Var(gᵀAg) = 2(‖A‖_F² − Σ_i A_ii²)``; both terms are estimated without bias
    from the products (``mean ‖r‖²`` and :attr:`ProbeStats.diag_sq`), so the standard error is
    ``√(2(mean‖r‖² − diag_sq) / m)``. It is not the spread of the quadratic forms, which on a remainder
    dominated by a few eigenvalues is skewed and correlated with the estimate (a low mean comes with a
    low sample variance). Its degrees of freedom are Satterthwaite's for the dominant ``mean ‖r‖²``
    term, ``ν = 2m(mean‖r‖² − diag_sq)² / var(‖r‖²)`` (``None``: no spread, the remainder is zero).
    """
    m = stats.quad.shape[0]
    if m < 2:
        return math.nan, None
    frob_sq = float(stats.sq.mean())
    variance = max(2 * (frob_sq - stats.diag_sq), 0.0)
    spread = float(stats.sq.var())
    dof = (
        max(1, int(2 * m * (frob_sq - stats.diag_sq) ** 2 / spread)) if spread > 0 and variance > 0 else None
    )
    return math.sqrt(variance / m), dof


def square_norm_stderr(stats: ProbeStats) -> tuple[float, int | None]:
    """Standard error of ``mean ‖r‖²`` (the estimate of ``‖A‖_F²``) from pairs of products, and its dof.

    ``‖r‖² = gᵀBg`` with ``B = A²``, so for Rademacher ``g`` its variance is ``2(‖B‖_F² − Σ_i B_ii²)``,
    and both terms have unbiased estimates from the products already spent (:class:`ProbeStats`:
    ``⟨r_j, r_l⟩²`` over pairs and ``r ⊙ r`` over probes). The standard error is
    ``√(2(sq_frob_sq − sq_diag_sq) / m)``, not the spread of ``‖r‖²``, which is skewed and moves with the
    estimate. Degrees of freedom: the dominant pair term is a U-statistic with variance ``≈ 4 Var(h)/m``,
    ``h`` each probe's mean pair term, so ``ν = 2V²/Var(V) = m(sq_frob_sq − sq_diag_sq)² / (2 Var(h))``
    (conservative: the spread of the row means overstates ``Var(h)``); ``None`` when nothing spreads.
    """
    m = stats.sq.shape[0]
    if m < 2 or math.isnan(stats.sq_frob_sq):
        return math.nan, None
    half = stats.sq_frob_sq - stats.sq_diag_sq
    variance = max(2 * half, 0.0)
    spread = stats.sq_pair_spread
    dof = max(1, int(m * half**2 / (2 * spread))) if spread > 0 and variance > 0 else None
    return math.sqrt(variance / m), dof


def _assemble(
    tr: tuple[float, float],
    fro_sq: tuple[float, float],
    method: str,
    m: int,
    probes: int,
    tr_error: tuple[int | None, str] | None = None,
    fro_error: tuple[int | None, str] | None = None,
) -> TraceFrobenius:
    """Package trace and ``tr(H²)`` (estimate, stderr) pairs of ``probes`` samples; ``‖H‖_F`` by delta.

    ``tr_error`` and ``fro_error`` are the stderrs' ``(dof, stderr_method)`` when not the probes' spread.
    """
    fro = math.sqrt(max(fro_sq[0], 0.0))
    fro_se = fro_sq[1] / (2 * fro) if fro > 0 else math.nan
    dof = probes - 1 if probes >= 2 else None
    tr_dof, tr_how = tr_error or (dof, PROBE_SPREAD)
    fro_dof, fro_how = fro_error or (dof, PROBE_SPREAD)
    return TraceFrobenius(
        Estimate(tr[0], tr[1], method, m, tr_dof, stderr_method=tr_how),
        Estimate(fro, fro_se, method, m, fro_dof, stderr_method=fro_how),
        Estimate(fro_sq[0], fro_sq[1], method, m, fro_dof, stderr_method=fro_how),
    )


def _frobenius_sq(top: float, stats: ProbeStats) -> tuple[tuple[float, float], tuple[int | None, str]]:
    """``‖H‖_F²`` = the exact ``top`` part + ``mean ‖r‖²``, its stderr from pairs of products, (dof, how)."""
    se, dof = square_norm_stderr(stats)
    return (top + float(stats.sq.mean()), se), (dof, PRODUCT_PAIRS)


def _deflated(top_trace: float, top_fro: float, stats: ProbeStats, method: str, m: int) -> TraceFrobenius:
    """Hutch++-type estimates: the exact top parts plus the remainder's probes.

    The trace's stderr is :func:`remainder_stderr`, ``‖H‖_F²``'s :func:`square_norm_stderr` (the module
    docstring says why).
    """
    se, dof = remainder_stderr(stats)
    tr = (top_trace + float(stats.quad.mean()), se)
    fro_sq, fro_error = _frobenius_sq(top_fro, stats)
    return _assemble(tr, fro_sq, method, m, stats.quad.shape[0], (dof, REMAINDER_NORM), fro_error)


def hutchinson(
    op: Operator, num_matvecs: int = 45, seed: int = 0, on_step: ProgressFn | None = None
) -> TraceFrobenius:
    """Hutchinson's estimates of ``tr(H)`` and ``‖H‖_F`` from ``num_matvecs`` Rademacher probes.

    Args:
        op: the Hessian operator (entered as a context manager: its graph is released on return).
        num_matvecs: number of probes = products (from 2 on, a standard error; with 1 it is nan).
        seed: seeds the probes (drawn on the CPU: the same on every device and dtype).
        on_step: called after each group of products with ``num_matvecs`` and ``total``.

    Returns:
        Trace, Frobenius norm and its square, each with its standard error; ``method="hutchinson"``.
    """
    if num_matvecs < 1:
        raise ValueError(f"hutchinson needs num_matvecs >= 1, got {num_matvecs}")
    generator = torch.Generator().manual_seed(seed)
    with op:
        stats = _probe_stats(op, _draw(op, generator), num_matvecs, on_step, 0, num_matvecs)
    fro_sq, fro_error = _frobenius_sq(0.0, stats)
    return _assemble(mean_stderr(stats.quad), fro_sq, "hutchinson", num_matvecs, num_matvecs, None, fro_error)


def hutchpp(
    op: Operator, num_matvecs: int = 45, seed: int = 0, on_step: ProgressFn | None = None
) -> TraceFrobenius:
    """Hutch++ estimates of ``tr(H)`` and ``‖H‖_F`` (see the module docstring for the estimators).

    The budget splits as ``k = num_matvecs // 3`` sketch products, ``k`` products with the basis ``Q``,
    and ``num_matvecs − 2k`` deflated Hutchinson probes. Memory: ``Q`` (``k`` vectors; each sketch
    product is orthonormalised into it as it arrives, by :class:`~.spectrum.Basis`), plus
    one vector and its product at a time (``tr(QᵀHQ)`` and ``‖HQ‖_F²`` are accumulated row by row), and
    in the probe phase one group of probes with their deflated copies and products, and a float64 sum of
    ``g ⊙ PHPg`` (:func:`_probe_stats`).

    Args:
        op: the Hessian operator (entered as a context manager).
        num_matvecs: total products (at least 3: one each for sketch, basis and residual; the residual part
            needs 2 probes for a standard error, so 4 or more gives one).
        seed: seeds the sketch and the probes.
        on_step: called after each group of products with ``num_matvecs`` and ``total``.

    Returns:
        Trace, Frobenius norm and its square; stderrs are those of the deflated Hutchinson parts, which are
        those of the whole estimator, sketch included (module docstring): the trace's from the products
        (:func:`remainder_stderr`), ‖H‖_F's from pairs of products (:func:`square_norm_stderr`).
    """
    if num_matvecs < 3:
        raise ValueError(f"hutch++ needs num_matvecs >= 3, got {num_matvecs}")
    k = num_matvecs // 3
    generator = torch.Generator().manual_seed(seed)
    like = flatten(op.params)
    q = Basis(like.numel(), like.dtype, like.device, capacity=min(k, like.numel()))
    with op:
        for start in range(0, k, op.batch_size):  # Q: Y = H S orthonormalised as it comes; S is not kept
            group = [rademacher(op.params, generator) for _ in range(min(op.batch_size, k - start))]
            for j, h in enumerate(op.hvp_many(group)):
                q.extend(flatten(h), seed=start + j)
            if on_step is not None:
                on_step({"num_matvecs": start + len(group), "total": num_matvecs})
        top_trace = top_fro = coupling = 0.0  # tr(QᵀHQ), ‖HQ‖_F² = ‖QᵀHQ‖_F² + ‖PHQ‖_F²; coupling: ‖PHQ‖_F²
        for start in range(0, q.size, op.batch_size):  # tr(QᵀHQ) and ‖HQ‖_F², one row at a time
            rows = range(start, min(start + op.batch_size, q.size))
            for j, h in zip(rows, op.hvp_many([unflatten(q.row(j), op.params) for j in rows]), strict=True):
                hf = flatten(h).double()
                top_trace += float(q.row(j).double() @ hf)
                top_fro += float(hf.square().sum())
                coupling += float(q.project_out(hf).square().sum())
            if on_step is not None:
                on_step({"num_matvecs": k + rows.stop, "total": num_matvecs})

        used = k + q.size  # fewer than 2k only when k exceeds the dimension
        probe = _draw(op, generator)
        stats = _probe_stats(op, probe, num_matvecs - used, on_step, used, num_matvecs, q)
    # ‖H‖_F² = ‖HQ‖_F² + ‖QᵀHP‖_F² (= ‖PHQ‖_F², exact) + E‖PHPg‖²
    return _deflated(top_trace, top_fro + coupling, stats, "hutch++", num_matvecs)


def krylov_hutchpp(
    op: Operator,
    num_matvecs: int = 45,
    seed: int = 0,
    on_step: ProgressFn | None = None,
    lanczos_fraction: float = 2 / 3,
) -> TraceFrobenius:
    """Hutch++ with a Lanczos basis: ``k`` Lanczos steps replace the sketch, the rest are deflated probes.

    ``k = round(lanczos_fraction · num_matvecs)`` Lanczos steps with full reorthogonalisation from a
    Rademacher start give an orthonormal basis ``Q_k`` of a Krylov space, which captures the top of the
    spectrum far better than Hutch++'s one-step sketch ``H S``, and the recurrence
    ``H Q_k = Q_k T_k + β_k q_{k+1} e_kᵀ`` gives the top part without further products:

        tr(Q_kᵀ H Q_k) = Σ α_i,      ‖H Q_k‖_F² = ‖T_k‖_F² + β_k²,      ‖P H Q_k‖_F² = β_k²

    (``q_{k+1} ⟂ Q_k``). The other ``num_matvecs − k`` products are Hutchinson probes on the deflated rest,
    exactly as in :func:`hutchpp` (unbiased: ``Q_k`` depends only on the start vector, not on the probes),
    so ``‖H‖_F² = ‖T_k‖_F² + 2β_k² + E‖PHPg‖²``. Hutch++
    spends two products per basis vector (sketch and ``HQ``), this one one. Cf. Chen & Hallman 2023,
    "Krylov-aware stochastic trace estimation" (SIAM J. Matrix Anal. Appl. 44(3)). Measured on seed 000's
    MLP (20 seeds): 20 steps + 10 probes reach the error of Hutch++ with 45 products (trace RMS 1.7%,
    ‖H‖_F 0.6%).

    The basis is stored in the operator's dtype (percent accuracy does not need a float64 basis).

    Args:
        op: the Hessian operator (entered as a context manager).
        num_matvecs: total products (at least 3).
        seed: seeds the start vector and the probes.
        on_step: called after each product with ``num_matvecs`` and ``total``.
        lanczos_fraction: share of the budget spent on Lanczos steps (the rest are probes, at least 1).

    Returns:
        Trace, Frobenius norm and its square; stderrs are those of the deflated Hutchinson parts (and of the
        whole estimator, start vector included: module docstring): the trace's from the products
        (:func:`remainder_stderr`), ‖H‖_F's from pairs of products (:func:`square_norm_stderr`); nan
        when fewer than 2 probes are left.
    """
    if num_matvecs < 3:
        raise ValueError(f"krylov hutch++ needs num_matvecs >= 3, got {num_matvecs}")
    if not 0 < lanczos_fraction < 1:
        raise ValueError(f"lanczos_fraction must be in (0, 1), got {lanczos_fraction}")
    k = min(max(1, round(lanczos_fraction * num_matvecs)), num_matvecs - 1, op.dim)
    generator = torch.Generator().manual_seed(seed)
    with op:
        start = flatten(rademacher(op.params, generator))
        kry = Krylov(op, start, capacity=k, basis_dtype=start.dtype)
        while kry.size < k:
            if not kry.step() and kry.size < k and not kry.restart(generator):
                break
            if on_step is not None:
                on_step({"num_matvecs": kry.size, "total": num_matvecs})
        t = kry.tridiagonal()
        top_trace = float(t.diagonal().sum())
        top_fro = float(t.square().sum()) + 2 * kry.beta[-1] ** 2  # ‖HQ‖_F² and ‖QᵀHP‖_F², both exact
        used = kry.size

        probe = _draw(op, generator)
        stats = _probe_stats(op, probe, num_matvecs - used, on_step, used, num_matvecs, kry.basis)
    return _deflated(top_trace, top_fro, stats, "krylov-hutch++", num_matvecs)


TRACE_METHODS = {"hutchinson": hutchinson, "hutch++": hutchpp, "krylov-hutch++": krylov_hutchpp}
