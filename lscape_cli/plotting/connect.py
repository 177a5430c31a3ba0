"""The ``connect`` figure: loss and error along the paths between two minima, barriers marked.

A 2x2 grid (rows: loss, error; columns: train, test split); one row (loss) for regression data, which
have no error rate. Every path in the record (linear, linear to the aligned B, trained curve) is one
coloured line. The barrier ``max - mean of the ends`` is drawn as a vertical segment at its ``alpha``,
from the mean of the end values (a dashed horizontal line) up to the path's maximum, and labelled with
its value.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lscape_cli.plotting import new_figure, save

_STYLE = {  # record key -> (legend label, colour)
    "linear": ("linear path", "tab:blue"),
    "aligned": ("linear path, B aligned to A", "tab:orange"),
    "curve": ("trained {kind}", "tab:green"),
}


_SHORT = {"linear": "linear", "aligned": "aligned", "curve": "curve"}


def _label(key: str, path: dict[str, Any]) -> str:
    label = _STYLE[key][0]
    return label.format(kind="Bezier curve" if path["path"] == "bezier" else "polygonal chain")


def _panel(ax: Any, paths: list[tuple[str, dict[str, Any]]], split: str, metric: str) -> None:
    lines = []
    for key, path in paths:
        colour = _STYLE[key][1]
        b = path["barriers"][split][metric]
        ax.plot(path["alpha"], path[split][metric], color=colour, lw=1.6, label=_label(key, path))
        barrier = b["max_minus_mean_ends"]
        if barrier["value"] is None or b["path_max"] is None or b["mean_ends"] is None:
            lines.append((f"{_SHORT[key]}: n/a", colour))
            continue
        x = barrier["alpha"]
        ax.vlines(x, b["mean_ends"], b["path_max"], colors=colour, linestyles=":", lw=1.4)
        ax.plot([x], [b["path_max"]], marker="v", color=colour, ms=6, ls="none")
        lines.append((f"{_SHORT[key]}: {barrier['value']:.3g} at α={x:.2f}", colour))
    mean_ends = paths[0][1]["barriers"][split][metric]["mean_ends"]
    if mean_ends is not None:
        ax.axhline(mean_ends, color="0.45", ls="--", lw=0.9, label="mean of the end values")
    box = {"facecolor": "white", "alpha": 0.85, "edgecolor": "none", "pad": 1.0}
    for i, (text, colour) in enumerate([("barrier (max − mean of ends)", "black"), *lines]):
        ax.text(
            0.98,
            0.97 - 0.075 * i,
            text,
            transform=ax.transAxes,
            ha="right",
            va="top",
            fontsize=7.5,
            color=colour,
            bbox=box,
        )
    ax.set_xlim(0, 1)
    ax.grid(alpha=0.3)


def plot_connect(record: Mapping[str, Any], stem: Path, title: str) -> list[Path]:
    """Draw the figure of a ``lscape.connect/1`` record's results; writes ``stem.png`` and ``stem.pdf``."""
    results = record["results"]
    paths = [(k, results[k]) for k in ("linear", "aligned", "curve") if results.get(k)]
    splits = [s for s in ("train", "test") if s in paths[0][1]]
    loss_name = record["config"]["evaluation"]["loss"]
    # regression data have no error rate: their barriers (and this figure) are on the loss alone
    metrics = [m for m in ("loss", "error") if m in paths[0][1]["barriers"][splits[0]]]
    fig = new_figure(9.5, 3.4 + 3.2 * (len(metrics) - 1))
    axes = fig.subplots(len(metrics), len(splits), sharex=True, squeeze=False)
    for col, split in enumerate(splits):
        for row, metric in enumerate(metrics):
            ax = axes[row][col]
            _panel(ax, paths, split, metric)
            if row == 0:
                ax.set_title(f"{split} split")
            if row == len(metrics) - 1:
                ax.set_xlabel("α (linear paths) / t (curve): 0 = A, 1 = B")
            if col == 0:
                ax.set_ylabel(f"{loss_name} loss" if metric == "loss" else "error (1 − accuracy)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(
        handles, labels, loc="outside lower center", ncol=min(4, len(labels)), fontsize=8, frameon=False
    )
    what = " and ".join(metrics)
    fig.suptitle(f"{title}: {what} along the paths (dotted: barrier above the mean of the ends)", fontsize=10)
    return save(fig, stem)
