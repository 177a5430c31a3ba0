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

from lscape_cli.plotting import level_format, level_label, new_figure, signature

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
    run: str = ""  # the run's name: a marker tells apart runs that share a colour


@dataclass
class Panel:
    """One set of axes."""

    title: str
    xlabel: str
    ylabel: str
    series: list[Series] = field(default_factory=list)
    points: list[tuple[float, float, Any]] = field(default_factory=list)  # scatter: x, y, colour key
    log_y: bool = False
    labels: list[str] = field(default_factory=list)  # the run of each point, written beside it


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


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")


def run_markers(panels: list[Panel]) -> dict[str, str]:
    """A marker per run, for runs whose colour (compare value) another run shares; others get none."""
    runs: dict[Any, list[str]] = {}
    for panel in panels:
        pairs = [(s.colour_key, s.run) for s in panel.series]
        pairs += [(k, lab) for (_, _, k), lab in zip(panel.points, panel.labels, strict=False)]
        for key, run in pairs:
            if run and run not in runs.setdefault(key, []):
                runs[key].append(run)
    shared = [r for rs in runs.values() if len(rs) > 1 for r in rs]
    return {run: MARKERS[i % len(MARKERS)] for i, run in enumerate(dict.fromkeys(shared))}


def _spans_decades(values: list[float]) -> bool:
    """Positive values whose largest is over 100 times the smallest: a log axis shows them all."""
    finite = [v for v in values if math.isfinite(v)]
    return bool(finite) and min(finite) > 0 and max(finite) / min(finite) > 100


def _draw_markers(ax: Any, panel: Panel, colours: dict[Any, Any], markers: dict[str, str]) -> None:
    for s in panel.series:
        if s.run in markers:
            every = max(1, len(s.epochs) // 8)
            ax.plot(s.epochs, _nan(s.values), ls="none", marker=markers[s.run], ms=4.5, markevery=every,
                    color=colours[s.colour_key], mec="black", mew=0.3)  # fmt: skip


def _draw_points(ax: Any, panel: Panel, colours: dict[Any, Any], markers: dict[str, str]) -> None:
    """One point per run, its marker telling runs of one colour apart, its name written beside it."""
    from matplotlib.ticker import MaxNLocator

    labels = panel.labels or [""] * len(panel.points)
    xs, ys = [p[0] for p in panel.points], [p[1] for p in panel.points]
    log = _spans_decades(xs)
    for (x, y, k), lab in zip(panel.points, labels, strict=True):
        ax.scatter([x], [y], c=[colours[k]], s=30, marker=markers.get(lab, "o"), edgecolors="black",
                   linewidths=0.4, zorder=3)  # fmt: skip
        if lab and len(panel.points) <= 12:
            _label(ax, lab, (x, y), _right_half(x, xs, log), _right_half(y, ys, False))
    if log:
        ax.set_xscale("log")
    else:
        ax.xaxis.set_major_locator(MaxNLocator(nbins=6))  # small values: short tick labels, an offset
        ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4), useOffset=False)


def _right_half(v: float, values: list[float], log: bool) -> bool:
    """Whether ``v`` lies in the upper half of ``values``' range (on a log scale when ``log``)."""
    import math

    finite = [u for u in values if math.isfinite(u) and (u > 0 or not log)]
    if not math.isfinite(v) or len(finite) < 2 or (log and v <= 0):
        return False
    f = math.log10 if log else float
    lo, hi = f(min(finite)), f(max(finite))
    return hi > lo and (f(v) - lo) / (hi - lo) > 0.5


def _label(ax: Any, text: str, xy: tuple[float, float], left: bool, below: bool) -> None:
    """A point's name beside it, on the side facing the middle of the panel, so it stays inside."""
    ax.annotate(text, xy, xytext=(-4 if left else 4, -4 if below else 3), textcoords="offset points",
                ha="right" if left else "left", va="top" if below else "bottom", fontsize=6.5,
                color="0.25")  # fmt: skip


def _draw(ax: Any, panel: Panel, colours: dict[Any, Any], markers: dict[str, str] | None = None) -> None:
    from matplotlib.collections import LineCollection

    # one LineCollection per line style: hundreds of runs draw in one call instead of one per line
    for style in sorted({s.style for s in panel.series}):
        lines = [s for s in panel.series if s.style == style]
        segs = [list(zip(s.epochs, _nan(s.values), strict=True)) for s in lines]
        ax.add_collection(
            LineCollection(
                segs, colors=[colours[s.colour_key] for s in lines], linestyles=style, lw=1.1, alpha=0.85
            )
        )
    for s in panel.series:
        if s.low is not None and s.high is not None:
            ax.fill_between(s.epochs, _nan(s.low), _nan(s.high), color=colours[s.colour_key], alpha=0.2, lw=0)
    if panel.series:
        _draw_markers(ax, panel, colours, markers or {})
        ax.autoscale_view()
    if panel.points:
        _draw_points(ax, panel, colours, markers or {})
    ax.set_title(panel.title, fontsize=10)
    ax.set_xlabel(panel.xlabel)
    ax.set_ylabel(panel.ylabel)
    if panel.xlabel == "epoch":
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    values = [float(v) for s in panel.series for v in s.values if v is not None]
    if panel.log_y or _spans_decades(values + [p[1] for p in panel.points]):
        ax.set_yscale("log")
    ax.grid(alpha=0.3)


LEFT, RIGHT, TOP, BOTTOM = 1.0, 1.5, 0.35, 0.6  # fixed margins (inches): constrained layout is slow
PANEL_W, PANEL_H = 4.0, 2.6  # each panel's axes, in inches
GAP_W, GAP_H = 1.05, 0.75  # between panels: room for the tick labels and axis labels


def _legend(
    fig: Any,
    keys: list[Any],
    colours: dict[Any, Any],
    few: bool,
    title: str,
    splits: bool,
    top_in: float = TOP,
    bottom_in: float = BOTTOM,
    right_in: float = RIGHT,
    markers: dict[str, str] | None = None,
) -> None:
    from matplotlib import cm, colors
    from matplotlib.lines import Line2D

    w, h = fig.get_size_inches()
    x0 = 1 - (right_in - 0.15) / w
    handles = []
    if few and title:
        handles += [Line2D([], [], color=colours[k], lw=2, label=str(k)) for k in keys]
    if splits:
        handles += [Line2D([], [], color="0.3", ls=st, label=sp) for sp, st in SPLIT_STYLE.items()]
    handles += [Line2D([], [], color="0.3", marker=m, ls="none", label=r) for r, m in (markers or {}).items()]
    if handles:
        fig.legend(
            handles=handles,
            loc="upper left",
            bbox_to_anchor=(x0, 1 - top_in / h),
            title=title or None,
            fontsize=8,
            title_fontsize=8,
        )
    if not few:
        bottom = bottom_in / h
        top = 1 - top_in / h - (0.9 / h if splits else 0)
        cax = fig.add_axes((x0 + 0.05 / w, bottom, 0.15 / w, max(top - bottom, 0.1)))
        bar = fig.colorbar(
            cm.ScalarMappable(colors.Normalize(0, len(keys) - 1), "viridis"), cax=cax, label=title
        )
        ticks = list(range(0, len(keys), max(1, len(keys) // 8)))
        bar.set_ticks(ticks, labels=[str(keys[i]) for i in ticks])


def _right_margin(keys: list[Any], few: bool, title: str, runs: tuple[str, ...] = ()) -> float:
    """Inches right of the panels: room for the longest legend label (8 pt: about 0.07 in a character)."""
    labels = ([str(k) for k in keys] if few and title else []) + list(runs)
    return max(RIGHT, 0.85 + 0.07 * max([len(t) for t in [*labels, title]] + [0]))


def _extra_lines(texts: list[str]) -> float:
    """Inches to add for titles or axis labels of more than one line."""
    return 0.2 * max([t.count("\n") for t in texts] + [0])


def grid(
    panels: list[Panel],
    keys: list[Any],
    compare: str,
    splits: bool = False,
    ncols: int = 2,
    share_y: bool = False,
) -> Any:
    """Panels in a grid sharing one colour scale (a legend or colour bar) for the compare key.

    Runs that share a colour get a marker each (in the legend by name). Titles and x labels may span
    several lines (e.g. a panel's probe settings); the margins grow to fit. ``share_y``: one y range for
    every panel (group panels of one quantity).
    """
    ncols = min(ncols, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    above, below = _extra_lines([p.title for p in panels]), _extra_lines([p.xlabel for p in panels])
    top, bottom, gap_h = TOP + above, BOTTOM + below, GAP_H + above + below
    colours, few = _palette(keys)
    markers = run_markers(panels)
    right = _right_margin(keys, few, compare, tuple(markers))
    width = LEFT + right + ncols * PANEL_W + (ncols - 1) * GAP_W
    height = top + bottom + nrows * PANEL_H + (nrows - 1) * gap_h
    fig = new_figure(width, height, layout=None)
    fig.subplots_adjust(
        left=LEFT / width,
        right=1 - right / width,
        top=1 - top / height,
        bottom=bottom / height,
        wspace=GAP_W / PANEL_W,
        hspace=gap_h / PANEL_H,
    )
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    for ax, panel in zip(axes, panels, strict=False):
        _draw(ax, panel, colours, markers)
    for ax in axes[len(panels) :]:
        ax.set_axis_off()
    if share_y and len(panels) > 1:
        used = axes[: len(panels)]
        lows, highs = zip(*(ax.get_ylim() for ax in used), strict=True)
        for ax in used:
            ax.set_ylim(min(lows), max(highs))
    _legend(fig, keys, colours, few, compare, splits, top, bottom, right, markers)
    return fig


def png(fig: Any, dpi: int = 100) -> bytes:
    """The figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata=signature("png"))
    return buf.getvalue()


@dataclass
class SlicePanel:
    """One model's slices, either of which may be missing.

    1-D: ``lines[k][i]`` at ``alphas1[i]``; 2-D: ``plane[i][j]`` at ``(alphas2[i], betas2[j])``.
    """

    label: str
    colour_key: Any
    alphas1: list[float] = field(default_factory=list)
    lines: list[list[float | None]] = field(default_factory=list)
    alphas2: list[float] = field(default_factory=list)
    betas2: list[float] = field(default_factory=list)
    plane: list[list[float | None]] = field(default_factory=list)


def _loss_scale(values: list[float]) -> tuple[bool, float, float]:
    """Whether a shared loss axis needs a log scale (positive, spanning over a decade), and its range."""
    lo, hi = min(values), max(values)
    return lo > 0 and hi / lo > 10, lo, max(hi, lo + 1e-12)


def _contour_levels(values: list[float]) -> tuple[Any, Any]:
    """Twelve shared contour levels (log-spaced when the losses span decades) and their colour norm."""
    import numpy as np
    from matplotlib.colors import LogNorm, Normalize

    log, lo, hi = _loss_scale(values)
    levels = np.geomspace(lo, hi, 12) if log else np.linspace(lo, hi, 12)
    return levels, (LogNorm(lo, hi) if log else Normalize(lo, hi))


def _draw_lines(ax: Any, p: SlicePanel, colour: Any, log: bool) -> None:
    for values in p.lines:
        ax.plot(p.alphas1, _nan(values), color=colour, lw=1.0, alpha=0.8)
    if log:
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_title(f"{p.label}: {len(p.lines)} directions", fontsize=9.5, color=colour)
    ax.grid(alpha=0.3)


def _draw_plane(ax: Any, p: SlicePanel, levels: Any, norm: Any) -> Any:
    import numpy as np

    z = np.ma.masked_invalid(np.array([_nan(r) for r in p.plane]).T)  # rows: beta, columns: alpha
    filled = ax.contourf(p.alphas2, p.betas2, z, levels=levels, cmap="viridis", norm=norm)
    ax.contour(p.alphas2, p.betas2, z, levels=levels, colors="black", linewidths=0.4, norm=norm)
    ax.plot([0], [0], marker="x", color="white", ms=6, mew=1.5)
    ax.set_title(f"{p.label}: 2-D plane", fontsize=9.5)
    return filled


def _empty(ax: Any, text: str) -> None:
    ax.set_axis_off()  # not set_xticks([]): the axes share their ticks with the others
    write = ax.text2D if ax.name == "3d" else ax.text  # a 3-D axes' text() takes x, y, z
    write(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=8.5, color="0.4")


def _colour_bar(fig: Any, filled: Any, levels: Any, where: tuple[float, float, float, float]) -> None:
    from matplotlib.ticker import FuncFormatter

    label, base = level_format(levels[::2])
    bar = fig.colorbar(
        filled, cax=fig.add_axes(where), ticks=levels[::2], format=FuncFormatter(lambda v, _: label(v))
    )
    bar.ax.minorticks_off()
    bar.set_label(level_label("loss", base) + " (2-D panels, shared levels)", fontsize=8)


def _finite(rows: list[list[float | None]]) -> list[float]:
    return [float(v) for r in rows for v in r if v is not None and math.isfinite(v)]


def _panel_bar(fig: Any, ax: Any, filled: Any, levels: Any) -> None:
    """A colour bar beside one panel (its own levels)."""
    from matplotlib.ticker import FuncFormatter

    label, base = level_format(levels[::3])
    cax = ax.inset_axes((1.03, 0.0, 0.045, 1.0))
    bar = fig.colorbar(filled, cax=cax, ticks=levels[::3], format=FuncFormatter(lambda v, _: label(v)))
    bar.ax.minorticks_off()
    bar.ax.tick_params(labelsize=7)
    if base:
        bar.set_label(level_label("loss", base), fontsize=7)


def _own_levels(p: SlicePanel, levels: Any) -> tuple[Any, Any] | None:
    """A panel's own levels when the shared ones would paint it flat (its range under two level steps)."""
    values = [float(v) for r in p.plane for v in r if v is not None and math.isfinite(v)]
    if not values or len(levels) < 2:
        return None
    step = min(b - a for a, b in zip(levels[:-1], levels[1:], strict=True))
    if max(values) - min(values) >= 2 * step:
        return None
    return _contour_levels(values)


def _grid_axes(fig: Any, nrows: int, ncols: int, surface: int | None, gs: Any) -> list[list[Any]]:
    """Axes sharing α (all flat panels) and y (per column); column ``surface`` is 3-D."""
    axes: list[list[Any]] = []
    x_first: Any = None
    col_first: dict[int, Any] = {}
    for i in range(nrows):
        row = []
        for j in range(ncols):
            if j == surface:
                row.append(fig.add_subplot(gs[i, j], projection="3d"))
                continue
            ax = fig.add_subplot(gs[i, j], sharex=x_first, sharey=col_first.get(j))
            x_first = x_first or ax
            col_first.setdefault(j, ax)
            row.append(ax)
        axes.append(row)
    return axes


def _draw_surface(ax: Any, p: SlicePanel, norm: Any) -> None:
    """The plane as a 3-D surface, coloured as its contours are (the same norm)."""
    import numpy as np

    z = np.ma.masked_invalid(np.array([_nan(r) for r in p.plane]))  # rows: alpha, columns: beta
    aa, bb = np.meshgrid(p.alphas2, p.betas2, indexing="ij")
    ax.plot_surface(aa, bb, z, cmap="viridis", norm=norm, linewidth=0, antialiased=True,
                    rcount=len(p.alphas2), ccount=len(p.betas2))  # fmt: skip
    ax.view_init(elev=32, azim=-58)
    ax.set_title(f"{p.label}: surface", fontsize=9.5)
    ax.set_xlabel("α", fontsize=8, labelpad=-2)
    ax.set_ylabel("β", fontsize=8, labelpad=-2)
    ax.tick_params(labelsize=7, pad=0)


def slice_comparison(panels: list[SlicePanel], keys: list[Any], compare: str, directions: str) -> Any:
    """One row per model: its 1-D curves (left), 2-D surface and 2-D contours (right), on shared axes.

    α is shared by every panel, the loss axis by every 1-D panel (log when the losses span more than a
    decade), β by every 2-D panel, and one colour scale (one colour bar) by every contour plot, unless
    a plane's loss range is under two of the shared levels (it would be painted flat): then every
    plane gets its own levels and colour bar.
    ``directions`` names the α/β units (e.g. ``filter-normalised random directions``).
    """
    has1, has2 = any(p.lines for p in panels), any(p.plane for p in panels)
    ncols, nrows = int(has1) + 2 * int(has2), len(panels)
    pw, ph, left, right, top, bottom, gw, gh = 3.4, 2.0, 0.85, 1.35, 0.35, 0.55, 0.75, 0.7
    width = left + right + ncols * pw + (ncols - 1) * gw
    height = top + bottom + nrows * ph + (nrows - 1) * gh
    fig = new_figure(width, height, layout=None)
    gs = fig.add_gridspec(
        nrows, ncols, left=left / width, right=1 - right / width, top=1 - top / height,
        bottom=bottom / height, wspace=gw / pw, hspace=gh / ph,
    )  # fmt: skip
    surface = ncols - 2 if has2 else None
    axes = _grid_axes(fig, nrows, ncols, surface, gs)
    colours, _ = _palette(keys)
    line_values = [
        float(v) for p in panels for ln in p.lines for v in ln if v is not None and math.isfinite(v)
    ]
    plane_values = [
        float(v) for p in panels for r in p.plane for v in r if v is not None and math.isfinite(v)
    ]
    log1 = bool(line_values) and _loss_scale(line_values)[0]
    levels, norm = _contour_levels(plane_values) if plane_values else (None, None)
    per_panel = has2 and any(_own_levels(p, levels) is not None for p in panels if p.plane)
    filled = None
    for row, p in zip(axes, panels, strict=True):
        colour = colours[p.colour_key] if len(keys) > 1 else "tab:blue"
        if has1 and p.lines:
            _draw_lines(row[0], p, colour, log1)
            row[0].set_ylabel("loss", fontsize=9)
        elif has1:
            _empty(row[0], "no 1-D slice")
        if has2 and p.plane:
            _draw_surface(row[-2], p, _contour_levels(_finite(p.plane))[1] if per_panel else norm)
        elif has2:
            _empty(row[-2], "no 2-D slice")
        if has2 and p.plane and per_panel:  # one panel flat on the shared levels: each gets its own
            own = _contour_levels(_finite(p.plane))
            own_filled = _draw_plane(row[-1], p, *own)
            row[-1].set_title(f"{p.label}: 2-D plane (own levels)", fontsize=9.5)
            _panel_bar(fig, row[-1], own_filled, own[0])
            row[-1].set_ylabel("β", fontsize=9)
        elif has2 and p.plane:
            filled = _draw_plane(row[-1], p, levels, norm)
            row[-1].set_ylabel("β", fontsize=9)
        elif has2:
            _empty(row[-1], "no 2-D slice")
        for ax in row:
            if ax.name != "3d":
                ax.tick_params(labelbottom=True, labelsize=9)
    for ax in axes[-1]:
        if ax.name != "3d":
            ax.set_xlabel(f"α ({directions})", fontsize=9)
    if filled is not None and levels is not None:
        _colour_bar(fig, filled, levels, (1 - (right - 0.25) / width, bottom / height, 0.15 / width,
                                          1 - (top + bottom) / height))  # fmt: skip
    return fig
