"""A finished slice (:class:`SliceResult`) and its ``results``, derived from the grid (docs/formats.md).

:func:`build_results` gives the centre, the grid itself (non-finite losses as null, never imputed),
per-line 1-D sharpness, basin width and curvature or the plane's basin area and fitted quadratic, the
trajectory's coordinates for ``--pca``, and the speed of the grid engine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TypedDict

import torch

from lscape_cli.core.landscape import slices as S
from lscape_cli.core.landscape.slice_directions import DirectionFacts, SliceDirections
from lscape_cli.core.landscape.slice_request import SliceRequest
from lscape_cli.core.landscape.slices import Grid
from lscape_cli.core.landscape.surface import EngineStats


class SliceCentre(TypedDict):
    """``results.centre``: L(theta) from the grid engine next to the model's own forward pass."""

    loss: float  # the grid engine at coefficients 0
    accuracy: float
    reference_loss: float  # the model's forward over the split
    reference_accuracy: float
    abs_difference: float
    checkpoint_metric: float | None  # the checkpoint's recorded <split>_loss
    method: str


class SliceGrid(TypedDict, total=False):
    """``results.grid``: the values (``[i][j]`` at ``(alpha_i, beta_j)``, or line i at ``alpha_j``)."""

    shape: list[int]  # (count, steps) or (steps, steps)
    alpha: list[float]
    beta: list[float]  # planes only
    loss: list[list[float | None]]  # non-finite as null, never imputed
    accuracy: list[list[float | None]]
    num_points: int
    num_nonfinite: int


class _Line(TypedDict):
    direction: int
    max_rise: S.MaxRise
    basin: S.Basin1D
    curvature: S.Parabola1D


class Line(_Line, total=False):
    """One direction of a 1-D slice (``eigenvalue`` for eigenvector directions)."""

    eigenvalue: float


class Sharpness1D(TypedDict):
    """``results.sharpness_1d``: seed 001's 1-D sharpness, the largest rise over the lines."""

    value: float | None
    direction: int | None
    per_direction: list[float | None]
    range: float
    method: str


class Axis(TypedDict):
    """A plane's facts along one of its axes through the centre."""

    basin: S.Basin1D
    curvature: S.Parabola1D
    max_rise: S.MaxRise


class _Plane(TypedDict):
    max_rise: S.MaxRise
    basin: S.Basin2D
    quadratic: S.Quadratic2D


class Plane(_Plane, total=False):
    """``results.plane`` of a 2-D slice."""

    axes: dict[str, Axis]  # alpha, beta (when the grid has a centre point)
    eigenvalues: list[float]  # eigenvector directions


class TrajectoryCoords(TypedDict):
    """``results.trajectory`` (``--pca``): the snapshots in the slice's coordinates."""

    coords: list[list[float]]
    epochs: list[int]
    steps: list[int] | None
    in_span_fraction: list[float]
    explained_variance_ratio: list[float]
    inside_range: bool


class Speed(TypedDict):
    """``results.speed``: what the grid cost next to a plain forward pass."""

    points_evaluated: int
    seconds: float
    seconds_per_point: float | None
    forward_pass_s: float
    seconds_per_point_over_forward_pass: float | None
    engine: EngineStats
    world_size: int
    note: str


class SpeedInputs(TypedDict):
    """What the run measured for :func:`build_results`'s ``speed``."""

    evaluated: int
    compute_s: float
    forward_s: float
    engine: EngineStats


class SliceOutputs(TypedDict):
    """``results.outputs``: the files beside the record (names)."""

    grid: str
    directions: str
    plots: list[str]


class SliceResults(TypedDict, total=False):
    """``results`` of a ``lscape.slice/1`` record (details in docs/formats.md)."""

    centre: SliceCentre
    grid: SliceGrid
    directions: DirectionFacts
    lines: list[Line]  # 1-D
    sharpness_1d: Sharpness1D  # 1-D
    plane: Plane  # 2-D
    trajectory: TrajectoryCoords  # --pca
    speed: Speed
    outputs: SliceOutputs  # added by the writer


@dataclass
class SliceResult:
    """A finished slice: the grid, its directions and, on rank 0, the record's ``results``."""

    request: SliceRequest
    grid: Grid
    directions: SliceDirections
    digest: str
    loss: torch.Tensor | None  # grid-shaped, float64 (rank 0)
    accuracy: torch.Tensor | None
    results: SliceResults  # the record's results less ``outputs`` (rank 0)
    centre_loss: float
    points_reused: int
    world_size: int
    is_main: bool
    warnings: list[str] = field(default_factory=list)
    timing: dict[str, float] = field(default_factory=dict)

    @property
    def fit_radius(self) -> float:
        """The parabola-fit radius, resolved."""
        return fit_radius(self.request, self.grid.radius)


def fit_radius(req: SliceRequest, radius: float) -> float:
    """``--fit-radius``, or a tenth of the range."""
    return req.fit_radius if req.fit_radius is not None else 0.1 * radius


def _nested(t: torch.Tensor) -> list[list[float | None]]:
    return [[v if math.isfinite(v) else None for v in row] for row in t.tolist()]


def build_results(res: SliceResult, centre: SliceCentre, speed: SpeedInputs) -> SliceResults:
    """The record's ``results`` (less ``outputs``); a warning joins ``res.warnings`` for non-finite points.

    ``speed``: ``evaluated`` (points computed here), ``compute_s``, ``forward_s`` and ``engine`` stats.
    """
    grid, loss, acc = res.grid, res.loss, res.accuracy
    assert loss is not None and acc is not None
    alphas = grid.alphas
    bad = int((~torch.isfinite(loss)).sum())
    if bad:
        res.warnings.append(
            f"{bad} of {grid.num_points} grid points have a non-finite loss; written as null (never imputed)"
        )
    out: SliceResults = {
        "centre": centre,
        "grid": {
            "shape": list(grid.shape),
            "alpha": alphas,
            **({"beta": alphas} if grid.dims == 2 else {}),
            "loss": _nested(loss),
            "accuracy": _nested(acc),
            "num_points": grid.num_points,
            "num_nonfinite": bad,
        },
        "directions": res.directions.facts,
    }
    if grid.dims == 1:
        out.update(_lines(res, loss, centre["loss"]))
    else:
        out["plane"] = _plane(res, loss, centre["loss"])
    if res.directions.trajectory is not None:
        out["trajectory"] = _trajectory(res)
    out["speed"] = _speed(res, speed)
    return out


def _lines(res: SliceResult, loss: torch.Tensor, l0: float) -> SliceResults:
    """``lines`` (max rise, basin, parabola per direction) and ``sharpness_1d`` (the largest rise)."""
    grid, alphas = res.grid, res.grid.alphas
    a = torch.tensor(alphas, dtype=torch.float64)
    eig = res.directions.eigenvalues
    lines: list[Line] = []
    for k in range(grid.count):
        row = loss[k].tolist()
        line: Line = {
            "direction": k,
            "max_rise": S.max_rise(loss[k], l0, [a]),
            "basin": S.basin_1d(alphas, row, l0, res.request.basin_threshold),
            "curvature": S.parabola_1d(alphas, row, res.fit_radius),
        }
        if eig is not None:
            line["eigenvalue"] = eig[k]
        lines.append(line)
    rises = [ln["max_rise"]["value"] for ln in lines]
    finite = [(v, k) for k, v in enumerate(rises) if v is not None and math.isfinite(v)]
    best = max(finite) if finite else (None, None)
    sharpness: Sharpness1D = {
        "value": best[0],
        "direction": best[1],
        "per_direction": rises,
        "range": grid.radius,
        "method": "max over directions and alpha in [-range, range] of L(theta + alpha d) - L(theta) "
        "(seed 001's 1D sharpness)",
    }
    return {"lines": lines, "sharpness_1d": sharpness}


def _plane(res: SliceResult, loss: torch.Tensor, l0: float) -> Plane:
    """Max rise, basin area and fitted quadratic of the plane, and the same 1-D facts along its axes."""
    alphas = res.grid.alphas
    a = torch.tensor(alphas, dtype=torch.float64)
    radius, thr = res.fit_radius, res.request.basin_threshold
    plane: Plane = {
        "max_rise": S.max_rise(loss, l0, [a, a]),
        "basin": S.basin_2d(alphas, alphas, loss, l0, thr),
        "quadratic": S.quadratic_2d(alphas, alphas, loss, radius),
    }
    c = res.grid.centre_index
    if c is not None:
        plane["axes"] = {
            name: {
                "basin": S.basin_1d(alphas, line.tolist(), l0, thr),
                "curvature": S.parabola_1d(alphas, line.tolist(), radius),
                "max_rise": S.max_rise(line, l0, [a]),
            }
            for name, line in (("alpha", loss[:, c]), ("beta", loss[c, :]))
        }
    eig = res.directions.eigenvalues
    if eig is not None:
        plane["eigenvalues"] = eig
    return plane


def trajectory_coords(res: SliceResult) -> torch.Tensor | None:
    """The ``--pca`` snapshots' coordinates along the slice's directions, ``(T, dims or count)``."""
    traj = res.directions.trajectory
    return None if traj is None else traj.coords[:, : res.request.needed]


def _trajectory(res: SliceResult) -> TrajectoryCoords:
    """The ``--pca`` trajectory in the slice's coordinates."""
    traj = res.directions.trajectory
    coords = trajectory_coords(res)
    assert traj is not None and coords is not None
    return {
        "coords": coords.tolist(),
        "epochs": traj.epochs,
        "steps": traj.steps,
        "in_span_fraction": traj.in_span_fraction,
        "explained_variance_ratio": traj.explained,
        "inside_range": bool(float(coords.abs().max()) <= res.grid.radius),
    }


def _speed(res: SliceResult, speed: SpeedInputs) -> Speed:
    n, fwd = speed["evaluated"], speed["forward_s"]
    per_point = speed["compute_s"] / n if n else None
    return {
        "points_evaluated": n,
        "seconds": speed["compute_s"],
        "seconds_per_point": per_point,
        "forward_pass_s": fwd,
        "seconds_per_point_over_forward_pass": per_point / fwd if per_point is not None and fwd > 0 else None,
        "engine": EngineStats(**speed["engine"]),  # a copy
        "world_size": res.world_size,
        "note": "seconds: wall-clock of the grid (rank 0, all ranks in parallel); forward_pass_s: median "
        "of 3 plain forward passes over the split at the checkpoint",
    }
