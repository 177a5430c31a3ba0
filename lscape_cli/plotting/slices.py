"""Plots of loss slices: 1-D curves, 2-D contour (labelled levels), 3-D surface, heat map.

Every figure marks the checkpoint (a red star at the origin), labels both axes with the direction
each one follows, has a colour bar where colour carries the loss, and overlays the training
trajectory on PCA planes. Non-finite losses are left blank (masked), never filled in.

``zscale="auto"`` uses a logarithmic loss scale when the finite losses span more than two decades
(typical at filter-normalised distance 1.5, where the edges of the plane are 100x the minimum).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lscape_cli.plotting import level_format, level_label, new_figure, save

if TYPE_CHECKING:
    from lscape_cli.core.landscape.slice_results import SliceResult

CMAP = "viridis"


@dataclass
class SliceFigure:
    """What the slice plots need (tensors or nested lists; converted to numpy here)."""

    alphas: list[float]
    loss: Any  # (count, steps) or (steps, steps), [i, j] at (alpha_i, beta_j)
    accuracy: Any
    centre_loss: float
    dims: int
    labels: list[str]  # one per direction: axis labels (2-D) or legend entries (1-D)
    title: str
    description: str = ""  # 1-D: what the directions are, for the x-axis label
    trajectory: list[list[float]] | None = None  # (T, dims) coordinates of snapshots (PCA)
    trajectory_epochs: list[int] | None = None
    zscale: str = "auto"


def slice_figure(res: SliceResult, title: str) -> SliceFigure:
    """The figure of a finished slice (rank 0's :class:`~lscape_cli.core.SliceResult`)."""
    from lscape_cli.core.landscape.slice_results import trajectory_coords

    d = res.directions
    coords = trajectory_coords(res)
    return SliceFigure(
        alphas=res.grid.alphas,
        loss=res.loss,
        accuracy=res.accuracy,
        centre_loss=res.centre_loss,
        dims=res.grid.dims,
        labels=d.labels if res.grid.dims == 2 else d.short,
        description=d.what,
        title=title,
        trajectory=None if coords is None else coords.tolist(),
        trajectory_epochs=None if d.trajectory is None else d.trajectory.epochs,
        zscale=res.request.zscale,
    )


def _np(x: Any) -> Any:
    import numpy as np

    return np.asarray(x.tolist() if hasattr(x, "tolist") else x, dtype=float)


def _log_scale(values: Any, zscale: str) -> bool:
    import numpy as np

    if zscale != "auto":
        return zscale == "log"
    finite = values[np.isfinite(values)]
    return bool(finite.size and finite.min() > 0 and finite.max() / finite.min() > 100)


def save_slice_plots(fig: SliceFigure, stem: Path) -> list[Path]:
    """Write ``STEM.lines`` (1-D) or ``STEM.contour``, ``.surface``, ``.heatmap`` (2-D), PNG and PDF."""
    if fig.dims == 1:
        return save(lines_figure(fig), stem.with_name(f"{stem.name}.lines"))
    out = []
    for name, make in (("contour", contour_figure), ("surface", surface_figure), ("heatmap", heatmap_figure)):
        out += save(make(fig), stem.with_name(f"{stem.name}.{name}"))
    return out


def _mark_centre_2d(ax: Any, fig: SliceFigure) -> None:
    ax.plot(
        [0],
        [0],
        marker="*",
        color="red",
        markersize=14,
        markeredgecolor="white",
        linestyle="none",
        label=f"checkpoint (loss {fig.centre_loss:.4g})",
        zorder=5,
    )


def _trajectory(ax: Any, fig: SliceFigure) -> None:
    if fig.trajectory is None:
        return
    t = _np(fig.trajectory)
    ax.plot(t[:, 0], t[:, 1], color="white", linewidth=2.2, zorder=3)
    ax.plot(
        t[:, 0],
        t[:, 1],
        color="tab:orange",
        marker="o",
        markersize=4,
        linewidth=1.2,
        zorder=4,
        label="training trajectory (projected)",
    )
    epochs = fig.trajectory_epochs or list(range(len(t)))
    for i in (0, len(t) - 1):
        ax.annotate(
            f"epoch {epochs[i]}",
            (t[i, 0], t[i, 1]),
            textcoords="offset points",
            xytext=(6, 6),
            fontsize=8,
            color="black",
            bbox={"boxstyle": "round,pad=0.2", "fc": "white", "alpha": 0.8},
        )


def _axes_2d(ax: Any, fig: SliceFigure) -> None:
    ax.set_xlabel(fig.labels[0], fontsize=9)
    ax.set_ylabel(fig.labels[1], fontsize=9)
    ax.set_title(fig.title, fontsize=10)
    a = fig.alphas
    pad = 0.0
    if fig.trajectory is not None:  # keep the whole trajectory in view
        t = _np(fig.trajectory)
        pad = max(0.0, float(abs(t).max()) * 1.05 - a[-1])
    ax.set_xlim(a[0] - pad, a[-1] + pad)
    ax.set_ylim(a[0] - pad, a[-1] + pad)
    ax.set_aspect("equal")
    ax.legend(loc="upper right", fontsize=8, framealpha=0.85)


def _levels(z: Any, log: bool, n: int = 14) -> Any:
    import numpy as np

    finite = z[np.isfinite(z)]
    lo, hi = float(finite.min()), float(finite.max())
    if hi <= lo:
        hi = lo + 1e-12
    return np.geomspace(lo, hi, n) if log else np.linspace(lo, hi, n)


def contour_figure(fig: SliceFigure) -> Any:
    """Filled contours with labelled contour lines, a colour bar, the checkpoint and any trajectory."""
    import numpy as np
    from matplotlib.colors import LogNorm

    z = np.ma.masked_invalid(_np(fig.loss).T)  # rows: beta, columns: alpha
    a = _np(fig.alphas)
    log = _log_scale(_np(fig.loss), fig.zscale)
    levels = _levels(_np(fig.loss), log)
    f = new_figure(7.0, 6.0)
    ax = f.add_subplot()
    norm = LogNorm(levels[0], levels[-1]) if log else None
    filled = ax.contourf(a, a, z, levels=levels, cmap=CMAP, norm=norm, alpha=0.85)
    lines = ax.contour(a, a, z, levels=levels, colors="black", linewidths=0.6, norm=norm)
    label, base = level_format(levels[::2])
    ax.clabel(lines, lines.levels[::2], inline=True, fontsize=7, fmt=label)
    from matplotlib.ticker import FuncFormatter

    bar = f.colorbar(
        filled, ax=ax, shrink=0.85, ticks=levels[::2], format=FuncFormatter(lambda v, _: label(v))
    )
    bar.ax.minorticks_off()
    bar.set_label(
        level_label("loss", base) + (" (contour levels, log-spaced)" if log else " (contour levels)")
    )
    _mark_centre_2d(ax, fig)
    _trajectory(ax, fig)
    _axes_2d(ax, fig)
    return f


def heatmap_figure(fig: SliceFigure) -> Any:
    """The loss as colour on the grid (log colour scale when it spans decades) with a colour bar."""
    import numpy as np
    from matplotlib.colors import LogNorm

    loss = _np(fig.loss)
    z = np.ma.masked_invalid(loss.T)
    a = _np(fig.alphas)
    log = _log_scale(loss, fig.zscale)
    levels = _levels(loss, log)
    f = new_figure(7.0, 6.0)
    ax = f.add_subplot()
    norm = LogNorm(levels[0], levels[-1]) if log else None
    mesh = ax.pcolormesh(a, a, z, cmap=CMAP, norm=norm, shading="nearest")
    bar = f.colorbar(mesh, ax=ax, shrink=0.85)
    bar.set_label("loss" + (" (log scale)" if log else ""))
    _mark_centre_2d(ax, fig)
    _trajectory(ax, fig)
    _axes_2d(ax, fig)
    return f


def surface_figure(fig: SliceFigure) -> Any:
    """3-D surface of the loss (log10 of it when it spans decades), the checkpoint marked."""
    import numpy as np

    loss = _np(fig.loss)
    log = _log_scale(loss, fig.zscale)
    z = np.log10(np.where(loss > 0, loss, np.nan)) if log else loss
    a = _np(fig.alphas)
    aa, bb = np.meshgrid(a, a, indexing="ij")
    f = new_figure(7.5, 6.2)
    ax = f.add_subplot(projection="3d")
    surf = ax.plot_surface(
        aa,
        bb,
        np.ma.masked_invalid(z),
        cmap=CMAP,
        linewidth=0,
        antialiased=True,
        rcount=len(a),
        ccount=len(a),
    )
    c = math.log10(fig.centre_loss) if log and fig.centre_loss > 0 else fig.centre_loss
    ax.plot(
        [0],
        [0],
        [c],
        marker="*",
        color="red",
        markersize=14,
        markeredgecolor="white",
        linestyle="none",
        label=f"checkpoint (loss {fig.centre_loss:.4g})",
        zorder=10,
    )
    ax.set_xlabel("alpha")
    ax.set_ylabel("beta")
    zlabel = "log10 loss" if log else "loss"
    ax.set_zlabel(zlabel)
    ax.view_init(elev=32, azim=-58)
    bar = f.colorbar(surf, ax=ax, shrink=0.6, pad=0.08)
    bar.set_label(zlabel)
    ax.set_title(fig.title, fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    f.text(0.01, 0.01, f"{fig.labels[0]}\n{fig.labels[1]}", fontsize=7, va="bottom")
    return f


def lines_figure(fig: SliceFigure) -> Any:
    """Loss (top) and accuracy (bottom) along every direction; loss alone for regression data.

    Regression targets have no accuracy (NaN at every point), so the figure then has one panel.
    """
    import numpy as np

    loss, acc, a = _np(fig.loss), _np(fig.accuracy), _np(fig.alphas)
    has_acc = not np.isnan(acc).all()
    f = new_figure(8.5, 6.5 if has_acc else 4.6)
    top, bottom = f.subplots(2, 1, sharex=True, height_ratios=[2, 1]) if has_acc else (f.subplots(), None)
    many = len(loss) > 12
    for k in range(len(loss)):
        label = None if many else fig.labels[k]
        top.plot(a, np.ma.masked_invalid(loss[k]), linewidth=1.3, label=label)
        if bottom is not None:
            bottom.plot(a, acc[k], linewidth=1.1)
    top.plot(
        [0],
        [fig.centre_loss],
        marker="*",
        color="red",
        markersize=13,
        markeredgecolor="white",
        linestyle="none",
        label=f"checkpoint (loss {fig.centre_loss:.4g})",
        zorder=5,
    )
    for ax in (top, bottom) if bottom is not None else (top,):
        ax.axvline(0, color="grey", linestyle=":", linewidth=0.8)
        ax.grid(alpha=0.3)
    if _log_scale(loss, fig.zscale):
        top.set_yscale("log")
    if fig.trajectory is not None:
        t = _np(fig.trajectory)[:, 0]
        top.plot(
            t,
            np.full_like(t, np.nanmin(loss)),
            linestyle="none",
            marker="|",
            markersize=12,
            color="tab:orange",
            label="trajectory snapshots (projected)",
        )
    top.set_ylabel("loss")
    what = f"{fig.description}; " if fig.description else ""
    (bottom or top).set_xlabel(f"alpha ({what}0 = checkpoint)")
    if bottom is not None:
        bottom.set_ylabel("accuracy")
    top.set_title(fig.title, fontsize=10)
    top.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), framealpha=0.85)
    return f
