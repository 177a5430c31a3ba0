"""lscape's library: loss-landscape geometry on (model, parameters, data), with no files and no printing.

What a notebook imports (each name loads its module on first use, so ``import lscape_cli.core`` stays
cheap)::

    from lscape_cli.core import Objective, HVP, lanczos, hutchpp

    obj = Objective.from_module(model, x, y, loss="ce")   # the mean loss over (x, y), chunked
    op = HVP(obj)                                           # Hessian-vector products at obj.params
    top = lanczos(op, k=3)                                  # top-3 eigenvalues, residuals, error bounds
    tf = hutchpp(op, num_matvecs=45, seed=0)                # tr(H) and ||H||_F with standard errors
    top.eigenvalues, tf.trace.estimate, tf.trace.stderr

The commands' library calls, one per command (request in, typed result out):

- :func:`run_probe` / :func:`probe_split` (:class:`ProbeRequest`): curvature and flatness at a point.
- :func:`run_slice` (:class:`SliceRequest`, :class:`SliceData`): loss on a line or plane.
- :func:`run_connect` (:class:`ConnectRequest`): paths between two minima and their barriers.
- :func:`run_pareto` (:class:`ParetoRequest`): fit versus flatness across runs.
- :func:`train_restarts` (:class:`TrainConfig`): restarts of one model trained together.

The building blocks: :func:`evaluate` (whole-split loss and accuracy), :class:`Objective` and
:class:`HVP` (Hessian-vector products), :class:`GGN` and :class:`Curvature` (GGN, Fisher and empirical
Fisher products; :func:`curvature_operator` picks the operator of a :class:`Curvature`), :func:`restrict`
and :func:`layers` (parameter blocks), :func:`lanczos`, :func:`power_iteration`, :func:`hutchinson`,
:func:`hutchpp`, :func:`krylov_hutchpp`, :func:`slq` (spectral density), the sharpness measures,
:func:`random_directions` / :func:`pca_directions` / :func:`eigen_directions`, :func:`align` (weight
matching), and :data:`ProgressFn`, the one progress callback every long computation takes.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_WHERE = {
    # the commands' library calls
    "ProbeRequest": "probe",
    "run_probe": "probe",
    "run_on_batches": "probe",
    "Batches": "probe_batches",
    "SplitData": "probe_batches",
    "probe_split": "probe_batches",
    "SliceRequest": "slice_request",
    "SliceData": "slice_run",
    "SliceResult": "slice_results",
    "run_slice": "slice_run",
    "Grid": "slices",
    "ConnectRequest": "connectivity",
    "CurveConfig": "connectivity",
    "Endpoint": "connectivity",
    "run_connect": "connectivity",
    "ParetoRequest": "pareto_study",
    "run_pareto": "pareto_study",
    "TrainConfig": "training",
    "train_restarts": "training",
    # building blocks
    "LOSSES": "objective",
    "evaluate": "objective",
    "loss_sum": "objective",
    "Objective": "hvp",
    "HVP": "hvp",
    "Curvature": "curvature",
    "GGN": "curvature",
    "curvature_operator": "curvature",
    "restrict": "blocks",
    "layers": "blocks",
    "gradient": "hvp",
    "loss_and_gradient": "hvp",
    "EigenResult": "spectrum",
    "lanczos": "spectrum",
    "power_iteration": "spectrum",
    "hutchinson": "trace",
    "hutchpp": "trace",
    "krylov_hutchpp": "trace",
    "slq": "density",
    "effective_rank": "density",
    "random_sharpness": "sharpness",
    "worst_case_sharpness": "sharpness",
    "weight_noise": "sharpness",
    "pac_bayes_sigma": "sharpness",
    "random_directions": "directions",
    "pca_directions": "directions",
    "eigen_directions": "directions",
    "align": "alignment",
    "ProgressFn": "progress",
    # the options' vocabularies (str Enums)
    "Align": "choices",
    "AxisScale": "choices",
    "BiasPolicy": "choices",
    "Curve": "choices",
    "CurveOptimizer": "choices",
    "CurvatureKind": "choices",
    "EigMethod": "choices",
    "EigStop": "choices",
    "HvpStrategy": "choices",
    "Norm": "choices",
    "PacBayesMetric": "choices",
    "SharpnessKind": "choices",
    "SliceStrategy": "choices",
    "TraceMethod": "choices",
    "ZScale": "choices",
}

__all__ = [
    "Align",
    "AxisScale",
    "Batches",
    "BiasPolicy",
    "ConnectRequest",
    "Curve",
    "CurveConfig",
    "CurveOptimizer",
    "Curvature",
    "CurvatureKind",
    "EigMethod",
    "EigStop",
    "EigenResult",
    "Endpoint",
    "GGN",
    "Grid",
    "HVP",
    "HvpStrategy",
    "LOSSES",
    "Norm",
    "Objective",
    "PacBayesMetric",
    "ParetoRequest",
    "ProbeRequest",
    "ProgressFn",
    "SharpnessKind",
    "SliceData",
    "SliceRequest",
    "SliceResult",
    "SliceStrategy",
    "SplitData",
    "TraceMethod",
    "TrainConfig",
    "ZScale",
    "align",
    "curvature_operator",
    "effective_rank",
    "eigen_directions",
    "evaluate",
    "gradient",
    "hutchinson",
    "hutchpp",
    "krylov_hutchpp",
    "lanczos",
    "layers",
    "loss_and_gradient",
    "loss_sum",
    "pac_bayes_sigma",
    "pca_directions",
    "power_iteration",
    "probe_split",
    "random_directions",
    "random_sharpness",
    "restrict",
    "run_connect",
    "run_on_batches",
    "run_pareto",
    "run_probe",
    "run_slice",
    "slq",
    "train_restarts",
    "weight_noise",
    "worst_case_sharpness",
]

if TYPE_CHECKING:
    from lscape_cli.core.alignment import align
    from lscape_cli.core.blocks import layers, restrict
    from lscape_cli.core.choices import (
        Align,
        AxisScale,
        BiasPolicy,
        CurvatureKind,
        Curve,
        CurveOptimizer,
        EigMethod,
        EigStop,
        HvpStrategy,
        Norm,
        PacBayesMetric,
        SharpnessKind,
        SliceStrategy,
        TraceMethod,
        ZScale,
    )
    from lscape_cli.core.connectivity import ConnectRequest, CurveConfig, Endpoint, run_connect
    from lscape_cli.core.curvature import GGN, Curvature, curvature_operator
    from lscape_cli.core.density import effective_rank, slq
    from lscape_cli.core.directions import eigen_directions, pca_directions, random_directions
    from lscape_cli.core.hvp import HVP, Objective, gradient, loss_and_gradient
    from lscape_cli.core.objective import LOSSES, evaluate, loss_sum
    from lscape_cli.core.pareto_study import ParetoRequest, run_pareto
    from lscape_cli.core.probe import ProbeRequest, run_on_batches, run_probe
    from lscape_cli.core.probe_batches import Batches, SplitData, probe_split
    from lscape_cli.core.progress import ProgressFn
    from lscape_cli.core.sharpness import (
        pac_bayes_sigma,
        random_sharpness,
        weight_noise,
        worst_case_sharpness,
    )
    from lscape_cli.core.slice_request import SliceRequest
    from lscape_cli.core.slice_results import SliceResult
    from lscape_cli.core.slice_run import SliceData, run_slice
    from lscape_cli.core.slices import Grid
    from lscape_cli.core.spectrum import EigenResult, lanczos, power_iteration
    from lscape_cli.core.trace import hutchinson, hutchpp, krylov_hutchpp
    from lscape_cli.core.training import TrainConfig, train_restarts


def __getattr__(name: str) -> Any:
    """Load the module that defines ``name`` on first use (PEP 562)."""
    if name not in _WHERE:
        raise AttributeError(f"module 'lscape_cli.core' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"lscape_cli.core.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
