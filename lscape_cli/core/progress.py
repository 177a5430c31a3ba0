"""The one progress callback of the library: every long computation reports through it.

A core function that runs for a while takes ``on_step: ProgressFn | None`` and calls it with a small
dict of what it has done so far (e.g. ``{"iteration": 12, "residual": 3e-5}``); the command turns that
into a status line. The library itself never prints.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypedDict


class ProgressEvent(TypedDict, total=False):
    """What a long computation reports so far (the keys of the estimator that sends it)."""

    estimator: str  # sharpness, surface, path, "<curve> fit"
    step: int
    total: int
    loss: float
    num_matvecs: int  # trace estimators, density
    run: int
    num_runs: int
    iteration: int  # power iteration, Lanczos
    eigenvalue: float
    residual: float
    eigenvalues: list[float]
    residuals: list[float]
    points: str  # a slice's grid: "done/total"
    ms_per_point: float
    epoch: int  # training: the epoch finished, the restarts still running, their running losses
    epochs: int
    active: int
    train_loss: list[float]


ProgressFn = Callable[[ProgressEvent], None]
