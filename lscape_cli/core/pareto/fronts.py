"""Fit-versus-flatness analysis across groups of runs (seed 000, Skriloff 2025) and general Pareto fronts.

Per group (e.g. one MLP depth, R restarts), with points ``(x_i, y_i)`` = (training loss, curvature):

- mean and covariance, and the 50% confidence ellipse of a 2-D Gaussian: Mahalanobis radius
  ``r^2 = chi2_2^{-1}(0.5) = 2 ln 2``;
- the Pareto front two ways (both objectives minimised): the non-dominated set, and seed 000's
  "lower-left chain of the convex hull" -- the lower hull from the point of least ``x`` to the point of
  least ``y``, which keeps only the front points that are also hull vertices (the convex part);
- the total-least-squares line ``x = a + b y`` through the chain and ``lambda_d = -b`` (seed 000 §II-C:
  along that line ``x + lambda_d y`` is constant, the Lagrangian scalarisation that traces the front);
- parameter-space spread: seed 000's ``rho_RMS = sqrt(tr(Theta Theta^T) / R)`` (the RMS *norm* of the
  minima), the RMS distance to their centroid, and that distance after aligning every restart's hidden
  units to the first (permutation symmetry makes equivalent minima look far apart).

Across groups: ``lambda_G = argmin_lambda sum_d |P^_d(lambda) - V^_d|`` with ``P_d = mean x_d + lambda mean
y_d``, both curves min-max normalised across groups. The objective is piecewise smooth with kinks, so
``lambda`` is scanned on a log grid and the best bracket refined by bounded Brent minimisation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypedDict

import numpy as np

HALF_MASS_RADIUS2 = 2.0 * math.log(2.0)  # chi-square(2) quantile at 0.5


def mean_cov(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (2,) and sample covariance (2, 2) (ddof=1; zeros for one point)."""
    mean = points.mean(axis=0)
    cov = np.cov(points.T, ddof=1) if len(points) > 1 else np.zeros((points.shape[1], points.shape[1]))
    return mean, np.atleast_2d(cov)


class Ellipse(TypedDict):
    """:func:`confidence_ellipse`: centre, semi-axes, angle and the probability mass it holds."""

    center: list[float]
    semi_axes: list[float]
    angle_deg: float
    mass: float


# :func:`tls_line`: x = a + b y and lambda = -b (null with the reason in status); "lambda" is a keyword
TlsLine = TypedDict(
    "TlsLine", {"a": float | None, "b": float | None, "lambda": float | None, "n": int, "status": str}
)
# the global lambda's objective over the scan
Scan = TypedDict("Scan", {"lambda": list[float], "objective": list[float]})


class Spreads(TypedDict):
    """:func:`spreads`: RMS distance to the centroid, and the centroid spread."""

    rho_rms: float
    spread_about_centroid: float


class _GlobalLambda(TypedDict):
    lambda_g: float
    objective: float
    mae_without_curvature: float
    mae_with_curvature: float
    relative_improvement: float | None
    scan: Scan
    method: str
    scale: float
    lambda_G_at_bound: bool


class GlobalLambda(_GlobalLambda, total=False):
    """:func:`global_lambda` (``warning`` when lambda_G is the scan's bound)."""

    warning: str


class GroupSummary(TypedDict):
    """:func:`group_summary`: one group's mean, covariance, ellipse, fronts and fitted lines."""

    n: int
    mean: list[float]
    covariance: list[list[float]]
    ellipse_50: Ellipse | None
    front_non_dominated: list[int]
    front_hull_chain: list[int]
    tls: TlsLine
    tls_non_dominated: TlsLine


class MultiFront(TypedDict):
    """:func:`multi_front`: the non-dominated runs, the hypervolume and its reference point."""

    front: list[int]
    hypervolume: float
    reference: list[float]
    senses: list[str]


def confidence_ellipse(mean: np.ndarray, cov: np.ndarray, mass: float = 0.5) -> Ellipse:
    """Centre, semi-axes and angle (degrees, of the first axis from +x) of the ``mass`` ellipse."""
    r2 = -2.0 * math.log(1.0 - mass)  # chi-square(2) quantile
    vals, vecs = np.linalg.eigh(cov)
    vals = np.clip(vals, 0.0, None)
    order = np.argsort(vals)[::-1]
    vals, vecs = vals[order], vecs[:, order]
    return {
        "center": mean.tolist(),
        "semi_axes": np.sqrt(vals * r2).tolist(),
        "angle_deg": float(np.degrees(np.arctan2(vecs[1, 0], vecs[0, 0]))),
        "mass": mass,
    }


def non_dominated(points: np.ndarray) -> np.ndarray:
    """Indices of points no other point weakly beats in every column and strictly in one (minimisation)."""
    keep = []
    for i, p in enumerate(points):
        dominated = np.any(np.all(points <= p, axis=1) & np.any(points < p, axis=1))
        if not dominated:
            keep.append(i)
    return np.asarray(keep, dtype=int)


ORIENT_RTOL = 64 * np.finfo(float).eps  # relative rounding allowance of the orientation test


def _cross(o: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Orientation of ``o -> a -> b`` (positive: a left turn); 0 when collinear within rounding.

    The cross product of two differences carries a rounding error of a few ulps of the products it is
    made of, so three points that are exactly collinear in real arithmetic can come out slightly
    positive and keep a middle point on the hull; values within :data:`ORIENT_RTOL` times the size of
    those products count as collinear (Shewchuk's error bound for the orientation predicate is about
    ``3.3e-16`` of the same quantity; the allowance here also covers inputs rounded once before).
    """
    left = (a[0] - o[0]) * (b[1] - o[1])
    right = (a[1] - o[1]) * (b[0] - o[0])
    cross = float(left - right)
    return 0.0 if abs(cross) <= ORIENT_RTOL * (abs(left) + abs(right)) else cross


def hull_front(points: np.ndarray) -> np.ndarray:
    """Seed 000's front: indices of the lower convex hull chain from least ``x`` to least ``y``.

    Andrew's monotone chain builds the lower hull left to right; the chain stops at the hull vertex of
    least ``y``, after which the hull rises again. Returned in increasing ``x`` (so decreasing ``y``).
    """
    order = sorted(range(len(points)), key=lambda i: (points[i, 0], points[i, 1]))
    lower: list[int] = []
    for i in order:
        while len(lower) >= 2 and _cross(points[lower[-2]], points[lower[-1]], points[i]) <= 0:
            lower.pop()
        lower.append(i)
    # drop duplicate-x leftmost points above the first, and cut at the minimum of y
    stop = int(np.argmin([points[i, 1] for i in lower]))
    return np.asarray(lower[: stop + 1], dtype=int)


def tls_line(points: np.ndarray) -> TlsLine:
    """Total-least-squares fit ``x = a + b y`` (orthogonal distances) and ``lambda_d = -b``.

    Returns ``{"a", "b", "lambda", "n", "status"}``; fewer than two distinct points, or a front that is
    parallel to the ``x`` axis (``b`` infinite), gives ``null`` values with the reason in ``status``.
    """
    n = len(points)
    if n < 2 or np.allclose(points, points[0]):
        return {
            "a": None,
            "b": None,
            "lambda": None,
            "n": n,
            "status": "fewer than two distinct front points",
        }
    centre = points.mean(axis=0)
    _, _, vt = np.linalg.svd(points - centre)
    dx, dy = vt[0]  # direction of largest spread
    if abs(dy) < 1e-300:
        return {"a": None, "b": None, "lambda": None, "n": n, "status": "front is parallel to the x axis"}
    b = dx / dy
    a = centre[0] - b * centre[1]
    return {"a": float(a), "b": float(b), "lambda": float(-b), "n": n, "status": "ok"}


def spreads(thetas: np.ndarray) -> Spreads:
    """``rho_RMS`` (RMS norm, seed 000) and the RMS distance to the centroid, for rows ``theta_i``."""
    r = thetas.shape[0]
    rho = math.sqrt(float(np.einsum("ij,ij->", thetas, thetas)) / r)
    centred = thetas - thetas.mean(axis=0)
    spread = math.sqrt(float(np.einsum("ij,ij->", centred, centred)) / r)
    return {"rho_rms": rho, "spread_about_centroid": spread}


def minmax(v: np.ndarray) -> np.ndarray:
    """``(v - min) / (max - min)``; all zeros when ``v`` is constant."""
    span = float(v.max() - v.min())
    return np.zeros_like(v, dtype=float) if span == 0 else (v - v.min()) / span


def proxy_objective(lam: float, x: np.ndarray, y: np.ndarray, target: np.ndarray) -> float:
    """``sum_d |minmax(x + lam y)_d - minmax(target)_d|``."""
    return float(np.abs(minmax(x + lam * y) - minmax(target)).sum())


def global_lambda(
    x: np.ndarray, y: np.ndarray, target: np.ndarray, num: int = 241, span: float = 1e6
) -> GlobalLambda:
    """``lambda_G`` by a log-spaced scan over ``[0] + scale * [1/span, span]`` then bounded refinement.

    ``scale = mean|x| / mean|y|`` puts the scan where both terms matter. Reports the objective curve,
    ``lambda_G``, the MAE of the normalised proxy to the normalised target with and without the
    curvature term, and the relative improvement. When the best scan point is the scan's upper end the
    objective may still fall beyond it: ``lambda_G_at_bound`` is then true, ``lambda_g`` is the bound
    (not a fitted minimum) and ``warning`` says so; otherwise ``lambda_G_at_bound`` is false.
    """
    from scipy.optimize import minimize_scalar

    scale = float(np.mean(np.abs(x)) / max(float(np.mean(np.abs(y))), 1e-300))
    grid = np.concatenate([[0.0], scale * np.logspace(-math.log10(span), math.log10(span), num)])
    values = np.array([proxy_objective(v, x, y, target) for v in grid])
    best = int(np.argmin(values))
    lo, hi = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    lam, obj = float(grid[best]), float(values[best])
    if hi > lo:
        res = minimize_scalar(
            proxy_objective,
            bounds=(lo, hi),
            args=(x, y, target),
            method="bounded",
            options={"xatol": 1e-10 * max(hi, 1e-300)},
        )
        if res.fun < obj:  # only a strict improvement moves lambda off the scan point (0 stays 0)
            lam, obj = float(res.x), float(res.fun)
    at_bound = best == len(grid) - 1 and len(grid) > 1
    d = len(x)
    mae0 = proxy_objective(0.0, x, y, target) / d
    mae = obj / d
    out: GlobalLambda = {
        "lambda_g": lam,
        "objective": obj,
        "mae_without_curvature": mae0,
        "mae_with_curvature": mae,
        "relative_improvement": (mae0 - mae) / mae0 if mae0 > 0 else None,
        "scan": {"lambda": grid.tolist(), "objective": values.tolist()},
        "method": "log-spaced scan then bounded Brent refinement",
        "scale": scale,
        "lambda_G_at_bound": at_bound,
    }
    if at_bound:
        out["warning"] = _bound_warning(grid[-1], values)
    return out


def _bound_warning(bound: float, values: np.ndarray) -> str:
    return (
        f"lambda_G is the scan's upper bound {bound:.4g} (the objective is least there: "
        f"{values[-1]:.6g} against {values[-2]:.6g} at the previous point) and may fall further beyond it; "
        "it is a boundary value, not a fitted minimum"
    )


def hypervolume(points: np.ndarray, reference: Sequence[float] | np.ndarray) -> float:
    """Exact hypervolume dominated by ``points`` (minimisation) up to ``reference``, any dimension.

    Recursive slicing on the last objective; exact and fine for the tens of points a study has.
    """
    ref = np.asarray(reference, dtype=float)
    pts = points[np.all(points < ref, axis=1)]
    if len(pts) == 0:
        return 0.0
    if pts.shape[1] == 1:
        return float(ref[0] - pts[:, 0].min())
    pts = pts[np.argsort(pts[:, -1])]
    volume = 0.0
    for i, p in enumerate(pts):
        upper = pts[i + 1, -1] if i + 1 < len(pts) else ref[-1]
        if upper > p[-1]:
            volume += (upper - p[-1]) * hypervolume(pts[: i + 1, :-1], ref[:-1])
    return volume


def group_summary(points: np.ndarray) -> GroupSummary:
    """Everything seed 000 reports for one group's ``(x, y)`` points (rows)."""
    mean, cov = mean_cov(points)
    chain = hull_front(points)
    nd = non_dominated(points)
    return {
        "n": len(points),
        "mean": mean.tolist(),
        "covariance": cov.tolist(),
        "ellipse_50": confidence_ellipse(mean, cov) if len(points) > 2 else None,
        "front_non_dominated": nd.tolist(),
        "front_hull_chain": chain.tolist(),
        "tls": tls_line(points[chain]),
        "tls_non_dominated": tls_line(points[nd]),
    }


def multi_front(
    values: np.ndarray, senses: Sequence[str], reference: Sequence[float] | None = None
) -> MultiFront:
    """Non-dominated set and hypervolume for any metrics; ``senses[j]`` is ``min`` or ``max``.

    Maximised metrics are negated internally. The default reference point is each metric's worst value
    pushed out by 10% of its range (1 when the range is 0), recorded in the output.
    """
    signs = np.array([1.0 if s == "min" else -1.0 for s in senses])
    v = values * signs
    if reference is None:
        span = v.max(axis=0) - v.min(axis=0)
        ref = v.max(axis=0) + 0.1 * np.where(span > 0, span, 1.0)
    else:
        ref = np.asarray(reference, dtype=float) * signs
    front = non_dominated(v)
    return {
        "front": front.tolist(),
        "hypervolume": hypervolume(v[front], ref),
        "reference": (ref * signs).tolist(),
        "senses": list(senses),
    }
