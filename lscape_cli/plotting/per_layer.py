"""The per-layer figure of ``lscape report``: λmax and trace of each parameter block, one bar each."""

from __future__ import annotations

from typing import Any

from lscape_cli.plotting import new_figure


def per_layer_bars(
    title: str,
    blocks: list[str],
    lambda_max: list[float | None],
    lambda_err: list[float | None],
    trace: list[float | None],
    trace_err: list[float | None],
) -> Any:
    """Two panels of horizontal bars, blocks top to bottom in model order; error bars where recorded."""
    height = 1.2 + 0.28 * len(blocks)
    fig = new_figure(9.0, height)
    axes = fig.subplots(1, 2, sharey=True)
    rows = list(range(len(blocks)))
    for ax, values, errors, label in (
        (axes[0], lambda_max, lambda_err, "λmax of the block"),
        (axes[1], trace, trace_err, "trace of the block"),
    ):
        shown = [v if v is not None else 0.0 for v in values]
        err = [e if e is not None else 0.0 for e in errors]
        ax.barh(rows, shown, xerr=err, color="#4c72b0", ecolor="#333333", capsize=2)
        if all(v is not None and v > 0 for v in values):
            ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(rows, blocks, fontsize=8)
    axes[0].invert_yaxis()
    fig.suptitle(title, fontsize=10)
    return fig
