"""What `lscape probe` prints on stderr: the table of estimates with their uncertainty and budget."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lscape_cli.core.probe.checks import CheckRow
    from lscape_cli.core.probe.results import ProbeResults


def print_table(results: Mapping[str, Any], scalars: dict[str, float | None], out_path: Path) -> None:
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


def _describe(key: str, results: Mapping[str, Any], summary: dict[str, Any] | None) -> tuple[str, str]:
    if summary is not None:
        s = summary[key]
        std = "n/a" if s["std"] is None else f"{s['std']:.3g}"
        return (
            f"std {std} over {s['n']} batches (min {s['min']:.4g}, max {s['max']:.4g})",
            "mean over batches",
        )
    if key.startswith("pac_bayes_") and "pac_bayes" in results:
        return _pac_bayes(key, results["pac_bayes"])
    r = results.get(key) or {}
    hvps = "HVPs" if (results.get("curvature") or {}).get("kind", "hessian") == "hessian" else "products"
    if "stderr" in r:
        return _uncertainty(r), f"{r['method']}, {r['num_matvecs']} {hvps}"
    if "residual" in r:
        return _eigen_state(r), f"{r['method']}, {r['num_matvecs']} {hvps}"
    return "", str(r.get("method", ""))


def _eigen_state(r: dict[str, Any]) -> str:
    """An eigenvalue's certified bound, the nearest-eigenvalue bound and its convergence, in one cell."""
    state = "converged" if r["converged"] else "NOT converged"
    near = r.get("nearest_eigenvalue_bound", r["residual"])
    bound = r.get("error_bound")
    head = f"±{bound:.2g} certified, " if bound is not None else "no certified bound, "
    return f"{head}an eigenvalue within {near:.2g} ({state})"


def _pac_bayes(key: str, pac: dict[str, Any]) -> tuple[str, str]:
    """The sigma search's bracket, or the bound's Monte-Carlo error and its terms."""
    iso = pac["magnitude_aware" if key == "pac_bayes_sigma_magnitude" else "isotropic"]
    if key.startswith("pac_bayes_sigma"):
        lo, hi = iso["bracket"]
        return f"bracket [{lo:.4g}, {hi:.4g}] ({iso['status']})", f"{iso['method']}, {iso['samples']} draws"
    b = pac["bound"]
    tight = key == "pac_bayes_bound_kl"
    se = b["kl_inverse_bound_stderr" if tight else "bound_stderr"]
    unc = "n/a" if se is None else f"+- {se:.2g} (Monte-Carlo s.e. of the noisy error, {b['draws']} draws)"
    form = "kl inverse" if tight else "Pinsker"
    terms = f"prior at {b['prior_mean']}, KL {b['kl']:.4g}, m {b['m']}, delta {b['delta']:g}"
    return unc, f"Maurer PAC-Bayes bound ({form}), {terms}" + (f"; {b['note']}" if b["bound"] is None else "")


def print_results(results: ProbeResults, scalars: dict[str, float | None], out_path: Path) -> None:
    """The table of estimates, then the per-layer table when there is one."""
    from lscape_cli.cli._probe_curvature import layer_table, print_wide

    print_table(results, scalars, out_path)
    if "per_layer" in results:
        print_wide(layer_table(results))


def print_failed(check_rows: list[CheckRow]) -> bool:
    """One ``Check failed:`` line per failed --check on stderr; whether any failed."""
    failed = [c for c in check_rows if not c["passed"]]
    for c in failed:
        print(f"Check failed: {c['expr']} (values: {c['values']})", file=sys.stderr)
    return bool(failed)
