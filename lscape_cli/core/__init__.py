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

Where the code lives, by domain (bottom up; each subpackage imports only those before it, and its
``__init__`` says what it owns):

- top level: what every layer shares -- :mod:`.objective` (the loss as a function of the parameters),
  :mod:`.params`, :mod:`.losses`, :mod:`.samples`, :mod:`.attention`, :mod:`.choices` (the options'
  vocabularies), :mod:`.progress`, and :mod:`.budget` (counts refused before any work starts).
- :mod:`.linalg`: operators (Hessian, GGN, Fisher products) and the estimators that read them
  (Lanczos, trace, density, eigenvalue bounds, rounding).
- :mod:`.landscape`: directions, surfaces, slices and sharpness around one point.
- :mod:`.probe`: the probe engine, its batches, the PAC-Bayes bound and the CI gates.
- :mod:`.training`: restarts trained together, schedules, curvature tracked during training.
- :mod:`.connectivity`: paths between two minima, weight matching, permutation structure.
- :mod:`.pareto`: fit versus flatness across runs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_WHERE = {
    # the commands' library calls
    "ProbeRequest": "probe.engine",
    "run_probe": "probe.engine",
    "run_on_batches": "probe.engine",
    "Batches": "probe.batches",
    "SplitData": "probe.batches",
    "probe_split": "probe.batches",
    "SliceRequest": "landscape.slice_request",
    "SliceData": "landscape.slice_run",
    "SliceResult": "landscape.slice_results",
    "run_slice": "landscape.slice_run",
    "Grid": "landscape.slices",
    "ConnectRequest": "connectivity.paths",
    "CurveConfig": "connectivity.paths",
    "Endpoint": "connectivity.paths",
    "run_connect": "connectivity.paths",
    "ParetoRequest": "pareto.study",
    "run_pareto": "pareto.study",
    "TrainConfig": "training.engine",
    "train_restarts": "training.engine",
    # building blocks
    "LOSSES": "objective",
    "evaluate": "objective",
    "loss_sum": "objective",
    "Objective": "linalg.hvp",
    "HVP": "linalg.hvp",
    "Curvature": "linalg.curvature",
    "GGN": "linalg.curvature",
    "curvature_operator": "linalg.curvature",
    "restrict": "linalg.blocks",
    "layers": "linalg.blocks",
    "gradient": "linalg.hvp",
    "loss_and_gradient": "linalg.hvp",
    "EigenResult": "linalg.spectrum",
    "lanczos": "linalg.spectrum",
    "power_iteration": "linalg.spectrum",
    "hutchinson": "linalg.trace",
    "hutchpp": "linalg.trace",
    "krylov_hutchpp": "linalg.trace",
    "slq": "linalg.density",
    "effective_rank": "linalg.density",
    "random_sharpness": "landscape.sharpness",
    "worst_case_sharpness": "landscape.sharpness",
    "weight_noise": "landscape.sharpness",
    "pac_bayes_sigma": "landscape.sharpness",
    "random_directions": "landscape.directions",
    "pca_directions": "landscape.directions",
    "eigen_directions": "landscape.directions",
    "align": "connectivity.alignment",
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
    from lscape_cli.core.connectivity.alignment import align
    from lscape_cli.core.connectivity.paths import ConnectRequest, CurveConfig, Endpoint, run_connect
    from lscape_cli.core.landscape.directions import eigen_directions, pca_directions, random_directions
    from lscape_cli.core.landscape.sharpness import (
        pac_bayes_sigma,
        random_sharpness,
        weight_noise,
        worst_case_sharpness,
    )
    from lscape_cli.core.landscape.slice_request import SliceRequest
    from lscape_cli.core.landscape.slice_results import SliceResult
    from lscape_cli.core.landscape.slice_run import SliceData, run_slice
    from lscape_cli.core.landscape.slices import Grid
    from lscape_cli.core.linalg.blocks import layers, restrict
    from lscape_cli.core.linalg.curvature import GGN, Curvature, curvature_operator
    from lscape_cli.core.linalg.density import effective_rank, slq
    from lscape_cli.core.linalg.hvp import HVP, Objective, gradient, loss_and_gradient
    from lscape_cli.core.linalg.spectrum import EigenResult, lanczos, power_iteration
    from lscape_cli.core.linalg.trace import hutchinson, hutchpp, krylov_hutchpp
    from lscape_cli.core.objective import LOSSES, evaluate, loss_sum
    from lscape_cli.core.pareto.study import ParetoRequest, run_pareto
    from lscape_cli.core.probe.batches import Batches, SplitData, probe_split
    from lscape_cli.core.probe.engine import ProbeRequest, run_on_batches, run_probe
    from lscape_cli.core.progress import ProgressFn
    from lscape_cli.core.training.engine import TrainConfig, train_restarts


def __getattr__(name: str) -> Any:
    """Load the module that defines ``name`` on first use (PEP 562)."""
    if name not in _WHERE:
        raise AttributeError(f"module 'lscape_cli.core' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"lscape_cli.core.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
