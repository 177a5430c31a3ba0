"""The ``results`` of a probe, typed: one TypedDict per measurement, as :func:`.engine.run_probe` builds it.

The probe record (``storage/probe_record.py``) writes these unchanged and the report reads them back; a
renamed key fails mypy here and the report's pointer test (``tests/test_report_pointers.py``).
"""

from __future__ import annotations

from typing import TypedDict

from lscape_cli.core.landscape.sharpness import (
    BallPrediction,
    RandomSharpness,
    SigmaSearch,
    Stability,
    WeightNoise,
    WorstCaseSharpness,
)
from lscape_cli.core.linalg.curvature import CurvatureDict
from lscape_cli.core.linalg.density import EffectiveRankDict
from lscape_cli.core.linalg.eigen_bounds import CertificateDict
from lscape_cli.core.linalg.hvp import ProductsDescription
from lscape_cli.core.linalg.hvp_check import StrategyCheck
from lscape_cli.core.linalg.rounding import RoundingDict
from lscape_cli.core.linalg.spectrum import VectorMemory
from lscape_cli.core.linalg.trace import EstimateDict
from lscape_cli.core.probe.checks import CheckRow
from lscape_cli.core.probe.pac_bayes import PacBayesBound


class LossEntry(TypedDict):
    """``loss``: the loss and accuracy at the checkpoint."""

    value: float
    accuracy: float
    num_samples: int
    num_units: int


class HvpEntry(ProductsDescription):
    """``hvp``: how the products were computed, the strategy check, and the memory plan."""

    check: StrategyCheck | None
    memory_budget_mib: float
    graph_bytes_per_sample: int
    largest_tensor_bytes_per_sample: int
    limited_by: str
    retained_graph_bytes: int


class CurvatureEntry(CurvatureDict):
    """``curvature``: which matrix, over which parameters."""

    params: list[str] | str  # the --params names, or "all"
    num_params: int


class EigenRun(TypedDict):
    """What every eigenvalue entry says of the run that found it."""

    iterations: int
    num_matvecs: int
    method: str
    tol: float
    stop: str | None
    seed: int
    shared_run: bool
    residual_method: str
    error_bound_includes_rounding: bool
    certificate: CertificateDict | None


class EigenPair(TypedDict):
    """One Ritz pair's value, residual, bounds and convergence."""

    estimate: float
    residual: float
    relative_residual: float
    rounding: float | None
    nearest_eigenvalue_bound: float | None
    error_bound: float | None
    error_bound_note: str | None
    ritz_residual_estimate: float
    converged: bool


class LanczosRun(EigenRun):
    """The Lanczos run behind ``lambda_max``, ``top_k`` and ``lambda_min`` (one run serves all three)."""

    vector_memory: VectorMemory | None


class LanczosEigenvalue(EigenPair, LanczosRun):
    """``lambda_max`` / ``lambda_min`` by Lanczos: one eigenvalue, its bounds, and the run that found it."""


class PowerEigenvalue(EigenPair, EigenRun):
    """``lambda_max`` by power iteration (``--eig-method power``)."""

    note: str  # no certificate that it is the extreme one


EigenvalueEntry = LanczosEigenvalue | PowerEigenvalue


class PairLists(TypedDict):
    """Pairs ``start:stop`` of one run: values, residuals and bounds as lists."""

    eigenvalues: list[float]
    residuals: list[float]
    relative_residuals: list[float]
    roundings: list[float] | None
    nearest_eigenvalue_bounds: list[float | None]
    error_bounds: list[float | None]
    error_bound_notes: list[str | None]
    ritz_residual_estimates: list[float]


class EigenPairs(PairLists):
    """:class:`PairLists` with their convergence (all of them, and each)."""

    converged: bool
    converged_pairs: list[bool]


class TopKEntry(EigenPairs, LanczosRun):
    """``top_k``: the top k eigenvalues with their bounds, and the run."""


class ConditionNumberEntry(TypedDict):
    """``condition_number``: λmax / λmin (null when λmin <= 0)."""

    estimate: float | None
    note: str


class TraceEntry(EstimateDict):
    """``trace`` / ``frobenius``: a stochastic estimate with its seed."""

    seed: int


class DensityEntry(TypedDict):
    """``density``: the SLQ quadrature, its smoothed curve and the trace and second moment it implies."""

    nodes: list[float]
    weights: list[float]
    run: list[int]
    grid: list[float]
    density: list[float]
    sigma: float
    num_runs: int
    num_steps: int
    num_matvecs: int
    seed: int
    method: str
    dim: int
    trace: EstimateDict
    moment2: EstimateDict


class EffectiveRankEntry(EffectiveRankDict):
    """``effective_rank``: the entropy rank of the SLQ measure."""

    method: str


# ``stable_rank`` / ``participation_ratio``: a ratio of other estimates ("from" is a keyword)
DerivedEntry = TypedDict("DerivedEntry", {"estimate": float, "from": str})


class GradNormEntry(TypedDict):
    """``grad_norm``: ‖g‖ over the split."""

    estimate: float
    method: str


class _SharpnessRadius(TypedDict):
    eps: float
    kind: str
    random: RandomSharpness


class SharpnessRow(_SharpnessRadius, total=False):
    """One radius of ``sharpness``."""

    worst_case: WorstCaseSharpness  # --ascent-steps N
    quadratic_prediction: BallPrediction  # l2 kind, with λmax of the full Hessian


class _Isotropic(TypedDict):
    isotropic: SigmaSearch
    bound: PacBayesBound


class PacBayesEntry(_Isotropic, total=False):
    """``pac_bayes``: the isotropic σ, the bound at it, and the magnitude-aware σ when asked."""

    magnitude_aware: SigmaSearch


class SpectralResults(TypedDict, total=False):
    """What one operator gives (a whole probe, or one block of ``per_layer``)."""

    lambda_max: EigenvalueEntry
    top_k: TopKEntry
    lambda_min: EigenvalueEntry
    condition_number: ConditionNumberEntry
    trace: TraceEntry
    frobenius: TraceEntry
    density: DensityEntry
    effective_rank: EffectiveRankEntry
    rounding: RoundingDict


class ScalarSummary(TypedDict):
    """Mean, std (ddof=1), min and max of one scalar over batches (``n``: the non-null ones)."""

    mean: float | None
    std: float | None
    min: float | None
    max: float | None
    n: int


class ProbeResults(SpectralResults, total=False):
    """``results`` of a ``lscape.probe/1`` record: one entry per measurement asked for.

    A batched probe holds ``batches`` only, a probe over a trajectory ``snapshots`` only; ``checks`` is
    added by ``--check``.
    """

    loss: LossEntry
    hvp: HvpEntry
    curvature: CurvatureEntry
    per_layer: PerLayerEntry
    grad_norm: GradNormEntry
    sharpness: list[SharpnessRow]
    noise: WeightNoise
    pac_bayes: PacBayesEntry
    stability: Stability
    stable_rank: DerivedEntry
    participation_ratio: DerivedEntry
    batches: BatchesEntry
    snapshots: SnapshotsEntry
    checks: list[CheckRow]


class BatchesEntry(TypedDict):
    """``batches`` (``--num-batches``): each batch's results and the summary of every scalar."""

    num_batches: int
    batch_size: int
    seed: int
    summary: dict[str, ScalarSummary]
    per_batch: list[ProbeResults]


class BlockHead(ProbeResults):
    """A ``per_layer`` block: its module, parameters and their count, and its results."""

    block: str
    params: list[str]
    num_params: int


class BlockRow(BlockHead):
    """One block of ``per_layer``: its parameters, its spectral results and what they cost."""

    num_matvecs: int
    seconds: float


class PerLayerEntry(TypedDict):
    """``per_layer``: one row per module block."""

    grouping: str
    blocks: list[BlockRow]
    num_matvecs: int
    seconds: float
    note: str


class SnapshotRow(ProbeResults, total=False):
    """One snapshot of a trajectory probe: where it is, and its results."""

    index: int
    epoch: int
    step: int


class SnapshotsEntry(TypedDict):
    """``snapshots`` (a trajectory with ``--snapshot``): one row per chosen snapshot."""

    count: int
    series: list[SnapshotRow]
