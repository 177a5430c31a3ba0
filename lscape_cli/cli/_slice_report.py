"""What `lscape slice` reports: the record's ``results`` and the console's progress line and summary.

:func:`build_results` derives the results from the finished grid: the centre, the grid itself (non-finite
losses as null, never imputed), per-line 1-D sharpness, basin width and curvature or the plane's basin
area and fitted quadratic, the trajectory's coordinates for ``--pca``, and the speed of the grid engine.
Keys are documented in docs/formats.md. :class:`Progress` is the status line while the grid is computed;
:func:`print_summary` the table printed at the end.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

from lscape_cli.cli.console import StatusLine, err

if TYPE_CHECKING:
    from lscape_cli.cli._slice_options import Paths
    from lscape_cli.cli._slice_run import Run


def _nested(t: Any) -> list[list[float | None]]:
    return [[v if math.isfinite(v) else None for v in row] for row in t.tolist()]


def build_results(run: Run, centre: dict[str, Any]) -> dict[str, Any]:
    """The record's ``results`` (less ``outputs``), from the finished grid and ``centre`` (L at theta)."""
    import torch

    grid, loss, acc = run.grid, run.loss, run.acc
    alphas = grid.alphas
    bad = int((~torch.isfinite(loss)).sum())
    if bad:
        run.warnings.append(
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
        "directions": run.extra["results"],
    }
    if grid.dims == 1:
        out.update(_lines(run, centre["loss"]))
    else:
        out["plane"] = _plane(run, centre["loss"])
    if "coords" in run.extra:
        out["trajectory"] = _trajectory(run)
    out["speed"] = _speed(run)
    return out


def _lines(run: Run, l0: float) -> dict[str, Any]:
    """``lines`` (max rise, basin, parabola per direction) and ``sharpness_1d`` (the largest rise)."""
    import torch

    from lscape_cli.core import slices as S

    grid, loss, alphas = run.grid, run.loss, run.grid.alphas
    a = torch.tensor(alphas, dtype=torch.float64)
    eig = run.extra.get("eigenvalues")
    lines = []
    for k in range(grid.count):
        row = loss[k].tolist()
        line = {
            "direction": k,
            "max_rise": S.max_rise(loss[k], l0, [a]),
            "basin": S.basin_1d(alphas, row, l0, run.opts.basin_threshold),
            "curvature": S.parabola_1d(alphas, row, run.fit_radius),
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
        "method": "max over directions and alpha in [-range, range] of L(theta + alpha d) - L(theta) (seed 001's 1D sharpness)",
    }
    return {"lines": lines, "sharpness_1d": sharpness}


def _plane(run: Run, l0: float) -> dict[str, Any]:
    """Max rise, basin area and fitted quadratic of the plane, and the same 1-D facts along its axes."""
    import torch

    from lscape_cli.core import slices as S

    loss, alphas = run.loss, run.grid.alphas
    a = torch.tensor(alphas, dtype=torch.float64)
    radius, thr = run.fit_radius, run.opts.basin_threshold
    plane: dict[str, Any] = {
        "max_rise": S.max_rise(loss, l0, [a, a]),
        "basin": S.basin_2d(alphas, alphas, loss, l0, thr),
        "quadratic": S.quadratic_2d(alphas, alphas, loss, radius),
    }
    c = run.grid.centre_index
    if c is not None:
        plane["axes"] = {
            name: {
                "basin": S.basin_1d(alphas, line.tolist(), l0, thr),
                "curvature": S.parabola_1d(alphas, line.tolist(), radius),
                "max_rise": S.max_rise(line, l0, [a]),
            }
            for name, line in (("alpha", loss[:, c]), ("beta", loss[c, :]))
        }
    eig = run.extra.get("eigenvalues")
    if eig is not None:
        plane["eigenvalues"] = eig
    return plane


def _trajectory(run: Run) -> dict[str, Any]:
    """The ``--pca`` trajectory in the slice's coordinates."""
    grid = run.grid
    coords = run.extra["coords"][:, : grid.dims if grid.dims == 2 else grid.count]
    return {
        "coords": coords.tolist(),
        "epochs": run.extra["epochs"],
        "steps": run.extra.get("steps"),
        "in_span_fraction": run.extra["in_span_fraction"],
        "explained_variance_ratio": run.extra["explained"],
        "inside_range": bool(float(coords.abs().max()) <= grid.radius),
    }


def _speed(run: Run) -> dict[str, Any]:
    n = run.evaluated
    per_point = run.compute_s / n if n else None
    fwd = run.reference[2]
    return {
        "points_evaluated": n,
        "seconds": run.compute_s,
        "seconds_per_point": per_point,
        "forward_pass_s": fwd,
        "seconds_per_point_over_forward_pass": per_point / fwd if per_point is not None and fwd > 0 else None,
        "engine": dict(run.engine),
        "world_size": run.group.world_size,
        "note": "seconds: wall-clock of the grid (rank 0, all ranks in parallel); forward_pass_s: median of 3 "
        "plain forward passes over the split at the checkpoint",
    }


class Progress:
    """Points done and time per point, on the shared one-line status (``console.StatusLine``)."""

    def __init__(self, quiet: bool, total: int) -> None:
        self.line = StatusLine(quiet, "slice")
        self.total, self.done, self.computed = total, 0, 0
        self.on_step: Any = None
        self.t0 = time.perf_counter()

    def __enter__(self) -> Progress:
        self.on_step = self.line.__enter__()
        return self

    def advance(self, done: int, computed: int) -> None:
        self.done += done
        self.computed += computed
        if self.on_step is not None and self.computed:
            per = (time.perf_counter() - self.t0) / self.computed
            self.on_step({"points": f"{self.done}/{self.total}", "ms_per_point": per * 1e3})

    def __exit__(self, *exc: object) -> None:
        self.line.__exit__(*exc)


def print_summary(record: dict[str, Any], paths: Paths) -> None:
    """The results as a table on stderr, then the files written and the warnings."""
    from rich.table import Table

    res = record["results"]
    table = Table(title=f"lscape slice -> {paths.record}")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_column("settings")
    c = res["centre"]
    table.add_row("centre loss", f"{c['loss']:.6g}", f"forward pass: {c['reference_loss']:.6g}")
    if "lines" in res:
        _line_rows(table, res)
    else:
        _plane_rows(table, res["plane"])
    sp = res["speed"]
    if sp["seconds_per_point"] is not None:
        table.add_row(
            "speed",
            f"{sp['seconds_per_point'] * 1e3:.3g} ms/point",
            f"{sp['seconds_per_point_over_forward_pass']:.2f} forward passes per point; {sp['points_evaluated']} points",
        )
    err.print(table)
    files = [res["outputs"]["grid"], res["outputs"]["directions"], *res["outputs"]["plots"]]
    err.print("wrote " + ", ".join(files))
    for w in record["warnings"]:
        err.print(f"warning: {w}")


def _line_rows(table: Any, res: dict[str, Any]) -> None:
    s = res["sharpness_1d"]
    table.add_row(
        "1D sharpness",
        _fmt(s["value"]),
        f"max rise over {len(res['lines'])} direction(s), range {s['range']:g}",
    )
    for ln in res["lines"][:10]:
        b, q = ln["basin"], ln["curvature"]
        table.add_row(
            f"  direction {ln['direction'] + 1}",
            f"rise {_fmt(ln['max_rise']['value'])}",
            f"basin width {b['width']:.3g}{'+' if b['censored_left'] or b['censored_right'] else ''}, curvature {_fmt(q['curvature'])}",
        )


def _plane_rows(table: Any, p: dict[str, Any]) -> None:
    table.add_row("max rise", _fmt(p["max_rise"]["value"]), f"at {p['max_rise']['at']}")
    b = p["basin"]
    table.add_row(
        "basin area", f"{b['area']:.3g}{'+' if b['censored'] else ''}", f"L - L0 <= {b['threshold']:g}"
    )
    ev = p["quadratic"]["eigenvalues"]
    table.add_row(
        "curvature",
        "n/a" if ev is None else ", ".join(f"{v:.4g}" for v in ev),
        "eigenvalues of the fitted 2x2 Hessian",
    )


def _fmt(v: float | None) -> str:
    return "null" if v is None else f"{v:.4g}"
