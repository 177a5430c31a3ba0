"""Checking an explicitly chosen HVP strategy against ``double_backward`` before an estimator trusts it.

``auto`` and ``measure`` drop a ``torch.func`` strategy whose product disagrees with autograd's double
backward (:func:`._hvp_calibration._wrong`); a strategy the user names (``--hvp fwd_rev``,
``--hvp vmap``) would otherwise run unchecked. torch 2.14's ``torch.func`` gets the mixed second
derivative of an affine ``layer_norm`` wrong (λmax of a LayerNorm model off by ~8e-6 relative, converged,
with a residual bound of 1e-14), which no residual can see: the residual is that of the wrong operator.

:func:`verify_strategy` runs once at the start of an estimator run: one product of a Gaussian vector on
the first :data:`CHECK_SAMPLES` samples, in float64 (a few samples cost little even in float64, and
float64 puts the two strategies' rounding at ~1e-15, far below the ~1e-6 of the bug), with the named
strategy and with ``double_backward``. A relative difference above :data:`TOLERANCE` refuses the run,
naming the strategy, the parameter tensor where the products differ most, and its module's type.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TypedDict

import torch

from lscape_cli.core.linalg.hvp import HVP, Objective
from lscape_cli.core.linalg.rounding import cast
from lscape_cli.core.params import gaussian
from lscape_cli.errors import LscapeError

CHECK_SAMPLES = 8  # samples of the check product: enough to exercise every layer, cheap in float64
TOLERANCE = 1e-9  # float64 products of the same matrix agree to ~1e-15 relative; the bug is ~1e-6
CHECKED = ("fwd_rev", "vmap")  # the torch.func strategies (double_backward is the reference)


def relative_difference(obj: Objective, strategy: str, seed: int = 0) -> tuple[float, str]:
    """``‖H_s v − H_db v‖ / ‖H_db v‖`` on a few float64 samples, and the tensor where they differ most.

    Args:
        obj: the objective of the run (any dtype; the check casts a few samples to float64).
        strategy: the strategy to compare with ``double_backward``.
        seed: seeds the Gaussian vector.

    Returns:
        The relative difference over all parameters and the name of the parameter tensor with the largest
        difference.
    """
    n = min(CHECK_SAMPLES, int(obj.y.shape[0]))
    sub = dataclasses.replace(obj, x=obj.x[:n], y=obj.y[:n], max_batch=n, shard=None)
    sub = cast(sub, torch.float64)
    v = gaussian(sub.params, torch.Generator().manual_seed(seed))
    with (
        HVP(sub, "double_backward", retain_chunks=0) as reference,
        HVP(sub, strategy, unchecked=True) as checked,
    ):
        want, got = reference(v), checked(v)
    diff = {name: float((got[name] - want[name]).square().sum()) for name in want}
    scale = math.sqrt(sum(float(t.square().sum()) for t in want.values()))
    worst = max(diff, key=lambda name: diff[name])
    return math.sqrt(sum(diff.values())) / max(scale, 1e-300), worst


def module_type(model: torch.nn.Module, param: str) -> str:
    """The class name of the module that owns parameter ``param`` (``"?"`` when it cannot be found)."""
    owner = param.rpartition(".")[0]
    try:
        return type(model.get_submodule(owner)).__name__ if owner else type(model).__name__
    except AttributeError:
        return "?"


class StrategyCheck(TypedDict):
    """What :func:`verify_strategy` compared (a probe record's ``hvp.check``)."""

    against: str
    dtype: str
    samples: int
    relative_difference: float
    tolerance: float


def verify_strategy(obj: Objective, strategy: str) -> StrategyCheck | None:
    """Refuse ``strategy`` with one :class:`LscapeError` when its product disagrees with ``double_backward``.

    Only the ``torch.func`` strategies are checked (``auto``/``measure`` check their own candidates).

    Returns:
        What was checked (for the record's ``hvp.check``), or None when nothing was.

    Raises:
        LscapeError: naming the strategy, the parameter and its module type, and the difference.
    """
    if strategy not in CHECKED:
        return None
    rel, worst = relative_difference(obj, strategy)
    samples = min(CHECK_SAMPLES, int(obj.y.shape[0]))
    if rel > TOLERANCE:
        raise LscapeError(
            f"--hvp {strategy} disagrees with double_backward by {rel:.1e} (relative, float64, "
            f"{samples} samples), most at {worst} of a "
            f"{module_type(obj.model, worst)} module (torch.func's second derivative is wrong there)",
            f"--hvp {strategy}",
            "use --hvp double_backward or auto",
        )
    return {
        "against": "double_backward",
        "dtype": "float64",
        "samples": samples,
        "relative_difference": rel,
        "tolerance": TOLERANCE,
    }
