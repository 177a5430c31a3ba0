"""Slice grids through a checkpoint and the numbers read off them.

A slice is ``L(theta + alpha d_1)`` on a line or ``L(theta + alpha d_1 + beta d_2)`` on a plane, on a
grid of ``steps`` coefficients per axis spaced evenly over ``[-range, range]``; ``count`` independent
lines make a 1-D slice with several directions (seed 001's ten random directions). Coefficients are
``range * (2i - (steps-1)) / (steps-1)``, so with an odd ``steps`` the middle one is exactly 0 and the
grid holds the checkpoint itself.

Points are numbered row-major over :attr:`Grid.shape` (line j, step i -> ``j*steps + i``; plane
``(alpha_i, beta_j)`` -> ``i*steps + j``); :func:`run_grid` evaluates any subset of them in blocks, so
``torchrun`` ranks take disjoint subsets and ``--resume`` takes the points not yet done.

Derived numbers (each carries its settings):

- :func:`max_rise`: seed 001's "1D sharpness", the largest ``L - L(theta)`` within the range.
- :func:`basin_1d` / :func:`basin_2d`: the interval (area) around the centre where ``L - L(theta)``
  stays within a threshold, with crossings interpolated linearly and a ``censored`` flag when the basin
  reaches the edge of the grid (the width is then a lower bound).
- :func:`parabola_1d` / :func:`quadratic_2d`: least-squares fit of a quadratic to the points within
  ``fit_radius`` of the centre; ``curvature`` is its second derivative ``d^2L/dalpha^2`` (for a unit
  eigenvector it estimates the eigenvalue; for a quadratic loss it is exactly ``d^T H d``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypedDict

import torch

from lscape_cli.core.landscape.surface import SurfaceEvaluator

BlockFn = Callable[[list[int], torch.Tensor, torch.Tensor], None]


class GridDescription(TypedDict):
    """:meth:`Grid.describe`: a slice's ``config.slice`` less its coefficients."""

    dims: int
    range: float
    steps: int
    count: int


@dataclass(frozen=True)
class Grid:
    """The coefficients of a slice: ``dims`` 1 (``count`` lines) or 2 (one plane)."""

    dims: int
    radius: float
    steps: int
    count: int = 1

    def __post_init__(self) -> None:
        if self.dims not in (1, 2):
            raise ValueError(f"dims must be 1 or 2, got {self.dims}")
        if not (math.isfinite(self.radius) and self.radius > 0):
            raise ValueError(f"range must be a positive number, got {self.radius}")
        if self.steps < 2:
            raise ValueError(f"steps must be at least 2, got {self.steps}")
        if self.count < 1 or (self.dims == 2 and self.count != 1):
            raise ValueError(f"count must be >= 1 (and 1 for a plane), got {self.count}")

    @property
    def alphas(self) -> list[float]:
        """Coefficients along an axis, symmetric about 0 (exactly 0 in the middle for odd steps)."""
        s = self.steps - 1
        return [self.radius * (2 * i - s) / s for i in range(self.steps)]

    @property
    def shape(self) -> tuple[int, int]:
        """``(count, steps)`` for lines, ``(steps, steps)`` for a plane."""
        return (self.count, self.steps) if self.dims == 1 else (self.steps, self.steps)

    @property
    def num_points(self) -> int:
        """Points in the grid."""
        return self.shape[0] * self.shape[1]

    @property
    def centre_index(self) -> int | None:
        """Index of the middle step (coefficient exactly 0) when ``steps`` is odd."""
        return self.steps // 2 if self.steps % 2 else None

    def subspace(self, p: int) -> int:
        """Which subspace point ``p`` belongs to: its line for 1-D slices, 0 for a plane."""
        return p // self.steps if self.dims == 1 else 0

    def coeffs(self, p: int) -> list[float]:
        """Coefficients of point ``p`` in its subspace (1 for a line, 2 for a plane)."""
        a = self.alphas
        return [a[p % self.steps]] if self.dims == 1 else [a[p // self.steps], a[p % self.steps]]

    def describe(self) -> GridDescription:
        """Plain-JSON form."""
        return {"dims": self.dims, "range": self.radius, "steps": self.steps, "count": self.count}


def blocks(grid: Grid, todo: Sequence[int], size: int) -> list[list[int]]:
    """``todo`` cut into runs of at most ``size`` consecutive entries that share a subspace."""
    out: list[list[int]] = []
    for p in todo:
        if out and len(out[-1]) < size and grid.subspace(out[-1][-1]) == grid.subspace(p):
            out[-1].append(p)
        else:
            out.append([p])
    return out


def run_grid(
    evaluators: Sequence[SurfaceEvaluator], grid: Grid, todo: Sequence[int], block: int, on_block: BlockFn
) -> None:
    """Evaluate points ``todo`` block by block; ``on_block(indices, loss, accuracy)`` after each.

    ``evaluators[k]`` evaluates subspace k (line k of a 1-D slice; the plane of a 2-D one).
    """
    for idx in blocks(grid, todo, max(1, block)):
        ev = evaluators[grid.subspace(idx[0])]
        coeffs = torch.tensor([grid.coeffs(p) for p in idx], dtype=torch.float64)
        loss, acc = ev.evaluate(coeffs)
        on_block(idx, loss, acc)


# ------------------------------------------------------------------------------------------------------
# Numbers read off a slice.


class MaxRise(TypedDict):
    """:func:`max_rise`: the largest rise over the finite points and where it is (null when none)."""

    num_nonfinite: int
    value: float | None
    at: list[float] | None


def max_rise(values: torch.Tensor, centre: float, coords: Sequence[torch.Tensor]) -> MaxRise:
    """The largest ``L - L(theta)`` over the finite points, where it is, and how many were non-finite."""
    flat = values.reshape(-1).double()
    finite = torch.isfinite(flat)
    bad = int((~finite).sum())
    if not bool(finite.any()):
        return {"num_nonfinite": bad, "value": None, "at": None}
    masked = torch.where(finite, flat, torch.tensor(-math.inf, dtype=flat.dtype))
    i = int(masked.argmax())
    where = torch.unravel_index(torch.tensor(i), values.shape)
    return {
        "num_nonfinite": bad,
        "value": float(flat[i]) - centre,
        "at": [float(c[int(w)]) for c, w in zip(coords, where, strict=True)],
    }


def _crossing(a0: float, r0: float, a1: float, r1: float, t: float) -> float:
    """Where the straight line from ``(a0, r0)`` to ``(a1, r1)`` reaches ``t`` (``r0 <= t < r1``)."""
    if not math.isfinite(r1):
        return a1
    return a0 + (t - r0) / (r1 - r0) * (a1 - a0)


def _edge(alphas: list[float], rises: list[float], order: list[int], t: float) -> tuple[float, bool]:
    a_prev, r_prev = 0.0, 0.0  # the centre itself, L - L(theta) = 0
    for i in order:
        r = rises[i]
        if not (r <= t):  # above the threshold or non-finite
            return _crossing(a_prev, r_prev, alphas[i], r, t), False
        a_prev, r_prev = alphas[i], r
    return a_prev, True


class Basin1D(TypedDict):
    """:func:`basin_1d`: the interval where the rise stays under the threshold."""

    threshold: float
    left: float
    right: float
    width: float
    censored_left: bool
    censored_right: bool


class Basin2D(TypedDict):
    """:func:`basin_2d`: the connected area under the threshold around the centre."""

    threshold: float
    num_points: int
    area: float
    fraction_of_grid: float
    censored: bool
    method: str


class _Fit(TypedDict):
    fit_radius: float
    method: str


class _ParabolaFit(_Fit):
    curvature: float | None
    slope: float | None


class _ParabolaPoints(_ParabolaFit):
    num_points: int
    rms_residual: float | None


class Parabola1D(_ParabolaPoints, total=False):
    """:func:`parabola_1d` (``intercept`` and ``span`` only when the fit was made)."""

    intercept: float
    span: float


class _QuadraticFit(_Fit):
    hessian: list[list[float]] | None
    eigenvalues: list[float] | None
    gradient: list[float] | None
    num_points: int


class Quadratic2D(_QuadraticFit, total=False):
    """:func:`quadratic_2d` (``rms_residual`` only when the fit was made)."""

    rms_residual: float


def basin_1d(alphas: list[float], losses: list[float], centre: float, threshold: float) -> Basin1D:
    """The interval around 0 where ``L(alpha) - L(0) <= threshold`` (linear interpolation at crossings).

    ``censored_left``/``censored_right`` say the basin reaches the end of the range (a lower bound).
    """
    rises = [v - centre if math.isfinite(v) else math.inf for v in losses]
    right = [i for i, a in enumerate(alphas) if a > 0]
    left = [i for i, a in reversed(list(enumerate(alphas))) if a < 0]
    hi, cens_hi = _edge(alphas, rises, right, threshold)
    lo, cens_lo = _edge(alphas, rises, left, threshold)
    return {
        "threshold": threshold,
        "left": lo,
        "right": hi,
        "width": hi - lo,
        "censored_left": cens_lo,
        "censored_right": cens_hi,
    }


def basin_2d(
    alphas: list[float], betas: list[float], losses: torch.Tensor, centre: float, threshold: float
) -> Basin2D:
    """Area of the 4-connected set of grid points around the centre with ``L - L(theta) <= threshold``.

    Each point counts for one cell (``d_alpha * d_beta``); ``censored`` when the set touches the edge.
    """
    s, t = len(alphas), len(betas)
    rises = losses.double() - centre
    ok = torch.isfinite(rises) & (rises <= threshold)
    i0 = min(range(s), key=lambda i: abs(alphas[i]))
    j0 = min(range(t), key=lambda j: abs(betas[j]))
    seen: set[tuple[int, int]] = set()
    stack = [(i0, j0)] if bool(ok[i0, j0]) else []
    while stack:
        i, j = stack.pop()
        if (i, j) in seen:
            continue
        seen.add((i, j))
        for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            a, b = i + di, j + dj
            if 0 <= a < s and 0 <= b < t and bool(ok[a, b]) and (a, b) not in seen:
                stack.append((a, b))
    cell = (alphas[1] - alphas[0]) * (betas[1] - betas[0])
    edge = any(i in (0, s - 1) or j in (0, t - 1) for i, j in seen)
    return {
        "threshold": threshold,
        "num_points": len(seen),
        "area": len(seen) * cell,
        "fraction_of_grid": len(seen) / (s * t),
        "censored": edge,
        "method": "4-connected grid points around the centre, one cell each",
    }


def _nearest(points: Sequence[tuple[float, ...]], radius: float, minimum: int) -> list[int]:
    """Indices of the points within ``radius`` (max-norm) of 0, or the ``minimum`` nearest."""
    dist = [max(abs(c) for c in p) for p in points]
    inside = [i for i, d in enumerate(dist) if d <= radius + 1e-12 * max(radius, 1.0)]
    if len(inside) >= minimum:
        return inside
    return sorted(range(len(points)), key=lambda i: (dist[i], i))[:minimum]


def _lstsq(design: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, float]:
    sol = torch.linalg.lstsq(design, target[:, None], driver="gelsd").solution[:, 0]
    resid = target - design @ sol
    return sol, float(resid.pow(2).mean().sqrt())


def parabola_1d(alphas: list[float], losses: list[float], radius: float) -> Parabola1D:
    """Fit ``L(alpha) = a + b alpha + c alpha^2`` near 0; ``curvature`` = ``2c`` = ``d^2L/dalpha^2``."""
    pts = [(a,) for a, v in zip(alphas, losses, strict=True) if math.isfinite(v)]
    vals = [v for v in losses if math.isfinite(v)]
    base: _Fit = {"fit_radius": radius, "method": "least-squares parabola a + b*alpha + c*alpha^2 near 0"}
    if len(pts) < 3:
        fit = base["method"]
        return {
            "fit_radius": radius,
            "method": fit,
            "curvature": None,
            "slope": None,
            "num_points": len(pts),
            "rms_residual": None,
        }
    idx = _nearest(pts, radius, min(5, len(pts)))
    a = torch.tensor([pts[i][0] for i in idx], dtype=torch.float64)
    y = torch.tensor([vals[i] for i in idx], dtype=torch.float64)
    sol, rms = _lstsq(torch.stack([torch.ones_like(a), a, a * a], dim=1), y)
    return {
        **base,
        "curvature": float(2 * sol[2]),
        "slope": float(sol[1]),
        "intercept": float(sol[0]),
        "num_points": len(idx),
        "span": max(abs(float(v)) for v in a),
        "rms_residual": rms,
    }


def quadratic_2d(alphas: list[float], betas: list[float], losses: torch.Tensor, radius: float) -> Quadratic2D:
    """Fit ``L = a + g.x + x^T H x / 2`` (x = (alpha, beta)) near 0; ``hessian`` H and its eigenvalues."""
    pts, vals = [], []
    for i, ai in enumerate(alphas):
        for j, bj in enumerate(betas):
            v = float(losses[i, j])
            if math.isfinite(v):
                pts.append((ai, bj))
                vals.append(v)
    base: _Fit = {"fit_radius": radius, "method": "least-squares quadratic a + g.x + x^T H x / 2 near 0"}
    if len(pts) < 6:
        fit = base["method"]
        return {
            "fit_radius": radius,
            "method": fit,
            "hessian": None,
            "eigenvalues": None,
            "gradient": None,
            "num_points": len(pts),
        }
    idx = _nearest(pts, radius, min(9, len(pts)))
    a = torch.tensor([pts[i][0] for i in idx], dtype=torch.float64)
    b = torch.tensor([pts[i][1] for i in idx], dtype=torch.float64)
    y = torch.tensor([vals[i] for i in idx], dtype=torch.float64)
    design = torch.stack([torch.ones_like(a), a, b, a * a / 2, a * b, b * b / 2], dim=1)
    sol, rms = _lstsq(design, y)
    h = torch.tensor([[sol[3], sol[4]], [sol[4], sol[5]]], dtype=torch.float64)
    return {
        **base,
        "hessian": h.tolist(),
        "eigenvalues": torch.linalg.eigvalsh(h).flip(0).tolist(),
        "gradient": [float(sol[1]), float(sol[2])],
        "num_points": len(idx),
        "rms_residual": rms,
    }
