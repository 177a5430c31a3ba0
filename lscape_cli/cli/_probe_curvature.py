"""`lscape probe`'s curvature options: parameter blocks, the per-layer table, the eigenvector file."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lscape_cli.errors import LscapeError

if TYPE_CHECKING:
    from lscape_cli.core.landscape.slice_directions import DirectionsMade
    from lscape_cli.core.landscape.slice_request import DirectionSettings

GREEK = {"lambda_max": "λmax", "lambda_min": "λmin"}
LOG_WIDTH = 160  # the most columns a table takes when stderr is a file or pipe (a terminal: its width)


def check_params(module: Any, patterns: list[str] | None) -> None:
    """Refuse a ``--params`` pattern that is not a regular expression or matches no parameter."""
    if not patterns:
        return
    from lscape_cli.core.linalg import blocks

    try:
        blocks.select(dict(module.named_parameters()), tuple(patterns))
    except ValueError as exc:
        raise LscapeError(
            str(exc), "--params", "give a regular expression matching whole names, e.g. 'hidden\\.0\\..*'"
        ) from exc


def check_eigenvector_output(
    path: Path | None, num_batches: int, batch_size: int | None, snapshots: bool = False
) -> None:
    """Refuse ``--save-eigenvectors`` where it cannot be written or is ambiguous (batches, snapshots)."""
    if path is None:
        return
    if num_batches > 1 or batch_size is not None:
        raise LscapeError(
            "eigenvectors differ from batch to batch",
            "--save-eigenvectors",
            "drop --num-batches/--batch-size, or drop --save-eigenvectors",
        )
    if snapshots:
        raise LscapeError(
            "eigenvectors differ from snapshot to snapshot",
            "--save-eigenvectors",
            "probe one checkpoint for its eigenvectors, or drop --save-eigenvectors",
        )
    if not path.parent.is_dir():
        raise LscapeError(
            "output directory does not exist",
            str(path.parent),
            "create it or choose another --save-eigenvectors",
        )
    if not path.name.endswith(".safetensors"):
        raise LscapeError(
            "eigenvectors are written as safetensors", str(path), "give a file name ending in .safetensors"
        )


def save_eigenvectors(
    path: Path, vectors: list[Any], checkpoint: Path, model: dict[str, object], results: Mapping[str, Any]
) -> None:
    """The top-k Ritz vectors as a ``lscape.directions/1`` file (kind ``eigen``) that `lscape slice` reads."""
    from lscape_cli.core.landscape.directions import digest, unit_eigenvectors
    from lscape_cli.storage.directions import save_directions
    from lscape_cli.storage.files import sha256_file

    dirs = unit_eigenvectors(vectors)
    top = results.get("top_k") or results["lambda_max"]
    eig = top.get("eigenvalues", [top.get("estimate")])
    settings: DirectionSettings = {
        "kind": "eigen",
        "source": "lscape probe",
        "curvature": results["curvature"],
        "eigenvalues": eig[: len(dirs)],
        "residuals": top.get("residuals", [top.get("residual")])[: len(dirs)],
        "converged": top["converged"],
        "method": top["method"],
        "tol": top["tol"],
        "seed": top["seed"],
        "num_matvecs": top["num_matvecs"],
    }
    info: DirectionsMade = {
        "kind": "eigen",
        "settings": settings,
        "digest": digest(dirs),
        "origin": {"checkpoint": checkpoint.name, "sha256": sha256_file(checkpoint)},
    }
    save_directions(path, dirs, model, info)


def print_wide(table: Any) -> None:
    """Print a rich table on stderr; into a file or pipe as wide as it needs (up to :data:`LOG_WIDTH`).

    Rich assumes 80 columns off a terminal and wraps every cell to fit, which makes logs hard to read.
    """
    from rich.console import Console

    from lscape_cli.cli.console import err

    console = err if err.is_terminal else Console(stderr=True, highlight=False, width=LOG_WIDTH)
    console.print(table)


def _eig(entry: dict[str, Any] | None) -> str:
    if not entry:
        return ""
    mark = "" if entry["converged"] else " (NOT converged)"
    bound = entry.get("error_bound")
    shown = (
        f" ±{bound:.1g}"
        if bound is not None
        else f" (an eigenvalue within {entry['nearest_eigenvalue_bound']:.1g})"
    )
    return f"{entry['estimate']:.4g}{shown}{mark}"


def _est(entry: dict[str, Any] | None) -> str:
    if not entry:
        return ""
    return f"{entry['estimate']:.4g} ± {entry['stderr']:.2g}"


def layer_table(results: Mapping[str, Any]) -> Any:
    """The ``per_layer`` results as a rich table: one row per block, its cost in the last columns."""
    from rich.table import Table

    layers = results["per_layer"]
    rows = layers["blocks"]
    kind = results.get("curvature", {}).get("kind", "hessian")
    table = Table(
        title=f"per-layer {kind} blocks: {len(rows)} runs, {layers['num_matvecs']} products, "
        f"{layers['seconds']:.1f} s",
    )
    columns = [("block", "left"), ("params", "right")]
    present = [
        k
        for k in ("lambda_max", "top_k", "lambda_min", "trace", "frobenius", "effective_rank")
        if k in rows[0]
    ]
    notes = ["λ: estimate ± error bound"] if "lambda_max" in present or "lambda_min" in present else []
    if "trace" in present:
        notes.append("trace, ‖·‖_F: estimate ± 1 s.e.")
    table.caption = "; ".join(notes)
    columns += [
        (GREEK.get(k, "‖·‖_F" if k == "frobenius" else k.replace("_", " ")), "right") for k in present
    ]
    columns += [("products", "right"), ("s", "right")]
    for name, justify in columns:
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for row in rows:
        cells = [row["block"], f"{row['num_params']:,}"]
        for key in present:
            entry = row.get(key)
            if key in ("lambda_max", "lambda_min"):
                cells.append(_eig(entry))
            elif key == "top_k":
                cells.append(", ".join(f"{v:.4g}" for v in entry["eigenvalues"]) if entry else "")
            elif key == "effective_rank":
                cells.append(f"{entry['estimate']:.4g}" if entry else "")
            else:
                cells.append(_est(entry))
        cells += [str(row["num_matvecs"]), f"{row['seconds']:.2f}"]
        table.add_row(*cells)
    return table
