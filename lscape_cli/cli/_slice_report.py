"""What `lscape slice` prints: the summary table of a finished slice, the files written, the warnings."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lscape_cli.cli.console import err


def print_summary(record: Mapping[str, Any], path: Path) -> None:
    """The results as a table on stderr, then the files written and the warnings."""
    from rich.table import Table

    res = record["results"]
    table = Table(title=f"lscape slice -> {path}")
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
