"""A finished slice (:class:`SliceResult`) and its ``results``, derived from the grid (docs/formats.md).

:func:`build_results` gives the centre, the grid itself (non-finite losses as null, never imputed),
per-line 1-D sharpness, basin width and curvature or the plane's basin area and fitted quadratic, the
trajectory's coordinates for ``--pca``, and the speed of the grid engine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from lscape_cli.core.landscape import slices as S
from lscape_cli.core.landscape.slice_directions import SliceDirections
from lscape_cli.core.landscape.slice_request import SliceRequest
from lscape_cli.core.landscape.slices import Grid


@dataclass
class SliceResult:
    """A finished slice: the grid, its directions and, on rank 0, the record's ``results``."""

    request: SliceRequest
    grid: Grid
    directions: SliceDirections
    digest: str
    loss: torch.Tensor | None  # grid-shaped, float64 (rank 0)
    accuracy: torch.Tensor | None
    results: dict[str, Any]  # the record's results less ``outputs`` (rank 0)
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


def build_results(res: SliceResult, centre: dict[str, Any], speed: dict[str, Any]) -> dict[str, Any]:
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
    out: dict[str, Any] = {
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


def _lines(res: SliceResult, loss: torch.Tensor, l0: float) -> dict[str, Any]:
    """``lines`` (max rise, basin, parabola per direction) and ``sharpness_1d`` (the largest rise)."""
    grid, alphas = res.grid, res.grid.alphas
    a = torch.tensor(alphas, dtype=torch.float64)
    eig = res.directions.eigenvalues
    lines = []
    for k in range(grid.count):
        row = loss[k].tolist()
        line: dict[str, Any] = {
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
    sharpness = {
        "value": best[0],
        "direction": best[1],
        "per_direction": rises,
        "range": grid.radius,
        "method": "max over directions and alpha in [-range, range] of L(theta + alpha d) - L(theta) "
        "(seed 001's 1D sharpness)",
    }
    return {"lines": lines, "sharpness_1d": sharpness}


def _plane(res: SliceResult, loss: torch.Tensor, l0: float) -> dict[str, Any]:
    """Max rise, basin area and fitted quadratic of the plane, and the same 1-D facts along its axes."""
    alphas = res.grid.alphas
    a = torch.tensor(alphas, dtype=torch.float64)
    radius, thr = res.fit_radius, res.request.basin_threshold
    plane: dict[str, Any] = {
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


def _trajectory(res: SliceResult) -> dict[str, Any]:
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


def _speed(res: SliceResult, speed: dict[str, Any]) -> dict[str, Any]:
    n, fwd = speed["evaluated"], speed["forward_s"]
    per_point = speed["compute_s"] / n if n else None
    return {
        "points_evaluated": n,
        "seconds": speed["compute_s"],
        "seconds_per_point": per_point,
        "forward_pass_s": fwd,
        "seconds_per_point_over_forward_pass": per_point / fwd if per_point is not None and fwd > 0 else None,
        "engine": dict(speed["engine"]),
        "world_size": res.world_size,
        "note": "seconds: wall-clock of the grid (rank 0, all ranks in parallel); forward_pass_s: median "
        "of 3 plain forward passes over the split at the checkpoint",
    }
