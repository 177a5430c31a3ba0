"""Figures made for ``lscape report``: training curves, tracked quantities, gap and test loss vs curvature.

Each function takes plain data (lists of numbers and labels, prepared by ``lscape_cli.report``) and
returns a Figure; :func:`png` renders one to bytes. Runs are coloured by the value of the report's
compare key: up to ten values get distinct colours and a legend, more get a viridis scale by rank.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from typing import Any

from lscape_cli.plotting import new_figure

SPLIT_STYLE = {"train": "-", "val": "--", "test": ":"}


@dataclass
class Series:
    """One run's values over epochs (``low``/``high``: an uncertainty band, when known)."""

    colour_key: Any
    epochs: list[float]
    values: list[float | None]
    style: str = "-"
    low: list[float | None] | None = None
    high: list[float | None] | None = None


@dataclass
class Panel:
    """One set of axes."""

    title: str
    xlabel: str
    ylabel: str
    series: list[Series] = field(default_factory=list)
    points: list[tuple[float, float, Any]] = field(default_factory=list)  # scatter: x, y, colour key
    log_y: bool = False


def _palette(keys: list[Any]) -> tuple[dict[Any, Any], bool]:
    """Colour per compare value, and whether the values are few enough for a legend."""
    from matplotlib import colormaps

    if len(keys) <= 10:
        tab = colormaps["tab10"]
        return {k: tab(i) for i, k in enumerate(keys)}, True
    cmap = colormaps["viridis"]
    return {k: cmap(i / (len(keys) - 1)) for i, k in enumerate(keys)}, False


def _nan(values: list[float | None]) -> list[float]:
    return [math.nan if v is None else float(v) for v in values]


def _draw(ax: Any, panel: Panel, colours: dict[Any, Any]) -> None:
    for s in panel.series:
        c = colours[s.colour_key]
        ax.plot(s.epochs, _nan(s.values), s.style, color=c, lw=1.1, alpha=0.85)
        if s.low is not None and s.high is not None:
            ax.fill_between(s.epochs, _nan(s.low), _nan(s.high), color=c, alpha=0.2, lw=0)
    if panel.points:
        xs, ys, ks = zip(*panel.points, strict=True)
        ax.scatter(xs, ys, c=[colours[k] for k in ks], s=28, edgecolors="black", linewidths=0.4, zorder=3)
    ax.set_title(panel.title, fontsize=10)
    ax.set_xlabel(panel.xlabel)
    ax.set_ylabel(panel.ylabel)
    if panel.xlabel == "epoch":
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if panel.log_y:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)


def _legend(fig: Any, axes: list[Any], keys: list[Any], colours: dict[Any, Any], few: bool, title: str, splits: bool) -> None:
    from matplotlib import cm, colors
    from matplotlib.lines import Line2D

    handles = []
    if few and title:
        handles += [Line2D([], [], color=colours[k], lw=2, label=str(k)) for k in keys]
    if splits:
        handles += [Line2D([], [], color="0.3", ls=st, label=sp) for sp, st in SPLIT_STYLE.items()]
    if handles:
        fig.legend(handles=handles, loc="outside right upper", title=title or None, fontsize=8, title_fontsize=8)
    if not few:
        bar = fig.colorbar(
            cm.ScalarMappable(colors.Normalize(0, len(keys) - 1), "viridis"), ax=axes, label=title, pad=0.01
        )
        ticks = list(range(0, len(keys), max(1, len(keys) // 8)))
        bar.set_ticks(ticks, labels=[str(keys[i]) for i in ticks])


def grid(panels: list[Panel], keys: list[Any], compare: str, splits: bool = False, ncols: int = 2) -> Any:
    """Panels in a grid sharing one colour scale (a legend or colour bar) for the compare key."""
    ncols = min(ncols, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = new_figure(4.2 * ncols + 1.4, 3.0 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    colours, few = _palette(keys)
    for ax, panel in zip(axes, panels, strict=False):
        _draw(ax, panel, colours)
    for ax in axes[len(panels) :]:
        ax.set_axis_off()
    _legend(fig, axes[: len(panels)], keys, colours, few, compare, splits)
    return fig


def png(fig: Any, dpi: int = 110) -> bytes:
    """The figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()
