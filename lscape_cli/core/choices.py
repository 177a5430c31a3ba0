"""The fixed vocabularies of lscape's options, one ``str`` Enum each, shared by the library and the CLI.

Each member's value is the spelling on the command line and in records (``Norm.FILTER == "filter"``).
The core's constants derive from these (``directions.NORMS``, ``spectrum.STOPS`` ...), and the commands
check a value with :meth:`Choice.check`, which refuses it with one ``Error:`` line naming the flag.
"""

from __future__ import annotations

from enum import Enum

from lscape_cli.errors import LscapeError


class Choice(str, Enum):
    """A value from a fixed set (``class X(str, Enum)``: Python 3.10 has no ``StrEnum``)."""

    @classmethod
    def values(cls) -> tuple[str, ...]:
        """The spellings, in the order help and error messages list them."""
        return tuple(m.value for m in cls)

    @classmethod
    def check(cls, value: str, option: str) -> None:
        """Refuse ``value`` unless it is one of the spellings, naming ``option``."""
        if value not in cls.values():
            raise LscapeError(f"unknown value {value!r}", option, f"choose one of: {', '.join(cls.values())}")


class Norm(Choice):
    """How random directions are scaled (filter: Li et al. 2018)."""

    FILTER = "filter"
    LAYER = "layer"
    NONE = "none"
    UNIT = "unit"


class BiasPolicy(Choice):
    """What random directions do on biases and BatchNorm parameters."""

    ZERO = "zero"
    FILTER = "filter"
    KEEP = "keep"


class SliceStrategy(Choice):
    """How a slice evaluates its grid points: one by one, vmapped, or chosen per device."""

    AUTO = "auto"
    LOOP = "loop"
    VMAP = "vmap"


class ZScale(Choice):
    """The loss axis of 2-D slice plots."""

    AUTO = "auto"
    LINEAR = "linear"
    LOG = "log"


class TraceMethod(Choice):
    """Stochastic trace estimators."""

    KRYLOV_HUTCHPP = "krylov-hutch++"
    HUTCHPP = "hutch++"
    HUTCHINSON = "hutchinson"


class SharpnessKind(Choice):
    """The geometry of sharpness perturbations."""

    L2 = "l2"
    FILTER = "filter"
    ADAPTIVE = "adaptive"


class PacBayesMetric(Choice):
    """What the PAC-Bayes sigma search keeps under its target."""

    ERROR = "error"
    LOSS = "loss"


class HvpStrategy(Choice):
    """How Hessian-vector products are computed (auto: by device; measure: time them all)."""

    AUTO = "auto"
    MEASURE = "measure"
    DOUBLE_BACKWARD = "double_backward"
    FWD_REV = "fwd_rev"
    VMAP = "vmap"


class CurvatureKind(Choice):
    """The matrix every spectral quantity of `probe` describes (see ``core/linalg/curvature.py``)."""

    HESSIAN = "hessian"
    GGN = "ggn"
    FISHER = "fisher"
    EMPIRICAL_FISHER = "empirical-fisher"


class EigStop(Choice):
    """What an eigenvalue's tolerance applies to: its error bound or its residual."""

    BOUND = "bound"
    RESIDUAL = "residual"


class EigMethod(Choice):
    """How probe finds lambda_max: Lanczos, or power iteration (seed 002's method)."""

    LANCZOS = "lanczos"
    POWER = "power"


class AxisScale(Choice):
    """Axes of pareto's ellipse figure: linear, log, or log where the values span decades."""

    AUTO = "auto"
    LINEAR = "linear"
    LOG = "log"


class Align(Choice):
    """Permutation alignment of connect's second checkpoint."""

    NONE = "none"
    WEIGHTS = "weights"


class Curve(Choice):
    """The trained path of connect (none: only straight lines)."""

    NONE = "none"
    BEZIER = "bezier"
    POLYCHAIN = "polychain"


class CurveOptimizer(Choice):
    """The optimizer of a curve's bend."""

    ADAM = "adam"
    SGD = "sgd"
