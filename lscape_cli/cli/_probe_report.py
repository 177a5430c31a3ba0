"""What `lscape probe` prints on stderr: the table of estimates with their uncertainty and budget."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def print_table(results: dict[str, Any], scalars: dict[str, float | None], out_path: Path) -> None:
    from rich.table import Table

    cur = results.get("curvature") or {}
    parts = [] if cur.get("kind", "hessian") == "hessian" else [cur["kind"]]
    if isinstance(cur.get("params"), list):
        parts.append(f"block of {cur['num_params']:,} parameters")
    what = f" ({', '.join(parts)})" if parts else ""
    table = Table(title=f"lscape probe{what} -> {out_path}")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_column("uncertainty / convergence")
    table.add_column("method, budget")
    flat = results.get("batches", {}).get("summary")
    for key, value in scalars.items():
        table.add_row(key, "null" if value is None else f"{value:.6g}", *_describe(key, results, flat))
    from lscape_cli.cli._probe_curvature import print_wide

    print_wide(table)


def _uncertainty(r: dict[str, Any]) -> str:
    """``+- u (stderr s, rounding f)`` and the advice when rounding dominates."""
    if r["stderr"] is None:  # an effective rank from one SLQ run
        return "n/a (one run)"
    if "uncertainty" not in r:  # a standard error alone (the effective rank's jackknife)
        return f"+- {r['stderr']:.3g} (1 s.e.)"
    parts = [f"stderr {r['stderr']:.3g}"] + ([f"rounding {r['rounding']:.2g}"] if r.get("rounding") else [])
    text = f"+- {r['uncertainty']:.3g} ({', '.join(parts)})"
    return f"{text}; rounding dominates: rerun with --dtype float64" if r.get("note") else text


def _describe(key: str, results: dict[str, Any], summary: dict[str, Any] | None) -> tuple[str, str]:
    if summary is not None:
        s = summary[key]
        std = "n/a" if s["std"] is None else f"{s['std']:.3g}"
        return (
            f"std {std} over {s['n']} batches (min {s['min']:.4g}, max {s['max']:.4g})",
            "mean over batches",
        )
    r = results.get(key) or {}
    hvps = "HVPs" if (results.get("curvature") or {}).get("kind", "hessian") == "hessian" else "products"
    if "stderr" in r:
        return _uncertainty(r), f"{r['method']}, {r['num_matvecs']} {hvps}"
    if "residual" in r:
        state = "converged" if r["converged"] else "NOT converged"
        return f"residual {r['residual']:.2g} ({state})", f"{r['method']}, {r['num_matvecs']} {hvps}"
    return "", str(r.get("method", ""))
