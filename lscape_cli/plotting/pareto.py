"""Seed 000's three figures: loss-curvature ellipses, per-group scalars, and the proxy against validation."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lscape_cli.plotting import new_figure, save

LABELS = {
    "train_loss": "training loss",
    "val_loss": "validation loss",
    "test_loss": "test loss",
    "frobenius": r"curvature $\kappa = \|H\|_F$",
    "trace": r"tr$(H)$",
    "lambda_max": r"$\lambda_{max}$",
}


def _label(name: str) -> str:
    return LABELS.get(name, name)


def _group_axis(ax: Any, keys: list[Any], pos: np.ndarray) -> None:
    """One tick per group, labelled with its key."""
    ax.set_xticks(pos, [str(k) for k in keys])


def _positions(keys: list[Any]) -> np.ndarray:
    try:
        return np.array([float(k) for k in keys])
    except (TypeError, ValueError):
        return np.arange(len(keys), dtype=float)


def axis_scales(table: dict[Any, Any], axes: str) -> tuple[str, str]:
    """Linear or log for x and y.

    ``log`` asks for both (an axis with a non-positive value stays linear); ``auto`` takes log where the
    values are positive and span two decades or more (seed 000's loss and curvature do).
    """
    pts = np.concatenate([np.asarray(v)[:, :2] for v in table.values()])
    out = []
    for col in pts.T:
        positive = bool(np.all(col > 0))
        decades = positive and float(col.max()) >= 100.0 * float(col.min())
        out.append("log" if (axes == "log" and positive) or (axes == "auto" and decades) else "linear")
    return out[0], out[1]


def _ellipse_outline(pts: np.ndarray, logs: tuple[bool, bool]) -> tuple[np.ndarray, np.ndarray] | None:
    """The 50% ellipse of the (log10 where asked) points, as a closed outline in data coordinates."""
    from lscape_cli.core.pareto.fronts import confidence_ellipse, mean_cov

    if len(pts) <= 2:
        return None
    z = np.column_stack([np.log10(pts[:, i]) if logs[i] else pts[:, i] for i in (0, 1)])
    mean, cov = mean_cov(z)
    e = confidence_ellipse(mean, cov)
    t = np.linspace(0.0, 2.0 * np.pi, 121)
    a, b = e["semi_axes"]
    c, s = np.cos(np.radians(e["angle_deg"])), np.sin(np.radians(e["angle_deg"]))
    u, v = a * np.cos(t), b * np.sin(t)
    ring = np.column_stack([mean[0] + c * u - s * v, mean[1] + s * u + c * v])
    centre = mean.copy()
    for i in (0, 1):
        if logs[i]:
            ring[:, i], centre[i] = 10.0 ** ring[:, i], 10.0 ** centre[i]
    return ring, centre


def ellipses(
    results: Mapping[str, Any], keys: list[Any], table: dict[Any, Any], stem: Path, axes: str = "linear"
) -> list[Path]:
    """50% confidence ellipses and means, joined in group order and coloured by group (seed 000 Fig. 1).

    On a log axis (``axes``: linear, log or auto, see :func:`axis_scales`) the ellipse and the mean are
    those of log10 of the values (the mean shown is then the geometric mean), so the picture stays an
    ellipse where the values span decades.
    """
    from matplotlib import cm, colors
    from matplotlib.patches import Polygon

    scales = axis_scales(table, axes)
    logs = (scales[0] == "log", scales[1] == "log")
    fig = new_figure(7.0, 5.2)
    ax = fig.add_subplot()
    pos = _positions(keys)
    norm = colors.Normalize(pos.min(), pos.max() if pos.max() > pos.min() else pos.min() + 1)
    cmap = cm.viridis
    means = []
    for key, p in zip(keys, pos, strict=True):
        colour = cmap(norm(p))
        pts = np.asarray(table[key])[:, :2]
        ax.scatter(pts[:, 0], pts[:, 1], s=10, color=colour, alpha=0.35, linewidths=0)
        outline = _ellipse_outline(pts, logs)
        if outline is not None:
            ax.add_patch(Polygon(outline[0], closed=True, facecolor=colour, edgecolor=colour, alpha=0.25))
            means.append(outline[1].tolist())
        else:
            means.append(results["groups"][str(key)]["mean"])
    means_arr = np.array(means)
    ax.plot(means_arr[:, 0], means_arr[:, 1], "--", color="0.3", lw=1, zorder=3)
    ax.scatter(
        means_arr[:, 0], means_arr[:, 1], c=[cmap(norm(p)) for p in pos], edgecolors="black", s=60, zorder=4
    )
    for key, (mx, my) in zip(keys, means_arr, strict=True):
        ax.annotate(str(key), (mx, my), textcoords="offset points", xytext=(6, 4), fontsize=8)
    bar = fig.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=results["group_by"])
    if len(keys) <= 12:
        bar.set_ticks(pos, labels=[str(k) for k in keys])
    ax.set_xscale(scales[0])
    ax.set_yscale(scales[1])
    ax.set_xlabel(_label(results["x"]) + (" (log scale)" if logs[0] else ""))
    ax.set_ylabel(_label(results["y"]) + (" (log scale)" if logs[1] else ""))
    title = "50% confidence ellipses and group means"
    if any(logs):
        title += "\n(of log10 values on log axes: geometric means)"
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return save(fig, stem.with_name(stem.name + "-ellipses"))


def summary(results: Mapping[str, Any], keys: list[Any], stem: Path) -> list[Path]:
    """Parameter-space spread and lambda_d per group, with the lambda_G line (seed 000 Fig. 2)."""
    fig = new_figure(6.4, 6.4)
    top, bottom = fig.subplots(2, 1, sharex=True)
    pos = _positions(keys)
    groups = [results["groups"][str(k)] for k in keys]
    params = [g.get("parameters") or {} for g in groups]
    for name, style in (
        ("rho_rms", "o-"),
        ("spread_about_centroid", "s--"),
        ("spread_after_alignment", "^:"),
    ):
        vals = [p.get(name) for p in params]
        if any(v is not None for v in vals):
            top.plot(pos, [np.nan if v is None else v for v in vals], style, label=name.replace("_", " "))
    top.set_ylabel("parameter-space distance")
    top.set_title(r"$\rho_{RMS}$ (RMS norm), spread about the centroid, and after alignment")
    if top.get_legend_handles_labels()[0]:
        top.legend(fontsize=8)
    top.grid(alpha=0.3)
    lam = [g["tls"]["lambda"] for g in groups]
    bottom.plot(
        pos, [np.nan if v is None else v for v in lam], "o-", color="C0", label=r"$\lambda_d$ (TLS on front)"
    )
    lg = results["across_groups"].get("lambda_g")
    if lg is not None:
        bottom.axhline(lg, color="red", lw=1.2, label=rf"$\lambda_G$ = {lg:.3g}")
    bottom.set_xlabel(results["group_by"])
    _group_axis(bottom, keys, pos)
    bottom.set_ylabel(r"trade-off weight $\lambda$")
    bottom.legend(fontsize=8)
    bottom.grid(alpha=0.3)
    return save(fig, stem.with_name(stem.name + "-summary"))


def proxy(results: Mapping[str, Any], keys: list[Any], table: dict[Any, Any], stem: Path) -> list[Path]:
    """Normalised train/target curves and the proxy x + lambda_G y against the target (seed 000 Fig. 3)."""
    from lscape_cli.core.pareto.fronts import minmax

    fig = new_figure(6.4, 6.4)
    top, bottom = fig.subplots(2, 1, sharex=True)
    pos = _positions(keys)
    means = np.array([table[k].mean(axis=0) for k in keys])
    tgt = minmax(means[:, 2])
    top.plot(pos, minmax(means[:, 0]), "o-", color="red", label=f"{_label(results['x'])} (normalised)")
    top.plot(pos, tgt, "s-", color="black", label=f"{_label(results['target'])} (normalised)")
    top.set_ylabel("min-max normalised")
    top.legend(fontsize=8)
    top.grid(alpha=0.3)
    lg = results["across_groups"].get("lambda_g")
    if lg is not None:
        a = results["across_groups"]
        bottom.plot(
            pos,
            minmax(means[:, 0] + lg * means[:, 1]),
            "o-",
            color="red",
            label=rf"proxy $P(\lambda_G)$, MAE {a['mae_with_curvature']:.3g}",
        )
        bottom.plot(
            pos,
            minmax(means[:, 0]),
            ":",
            color="0.5",
            label=f"{_label(results['x'])} alone, MAE {a['mae_without_curvature']:.3g}",
        )
    bottom.plot(pos, tgt, "s-", color="black", label=f"{_label(results['target'])}")
    bottom.set_xlabel(results["group_by"])
    _group_axis(bottom, keys, pos)
    bottom.set_ylabel("min-max normalised")
    bottom.legend(fontsize=8)
    bottom.grid(alpha=0.3)
    return save(fig, stem.with_name(stem.name + "-proxy"))


def all_figures(
    results: Mapping[str, Any], stem: Path, keys: list[Any], table: dict[Any, Any], axes: str = "linear"
) -> list[Path]:
    """The three figures, PNG and PDF each (``axes`` scales the ellipse figure's axes)."""
    return (
        ellipses(results, keys, table, stem, axes)
        + summary(results, keys, stem)
        + proxy(results, keys, table, stem)
    )
