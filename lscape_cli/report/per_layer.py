"""Per-layer curvature (``lscape probe --per-layer``): a table and a bar figure per probe record.

Each block is a module's principal sub-matrix of the curvature (a transformer's embedding, each layer's
attention and MLP, norms, head: :func:`lscape_cli.core.linalg.blocks.module_blocks`); its λmax carries the
Lanczos error bound and its trace the estimator's standard error, as recorded.
"""

from __future__ import annotations

from typing import Any

from lscape_cli.plotting import report as plots
from lscape_cli.plotting.per_layer import per_layer_bars
from lscape_cli.report.cells import Cell, Source, Table, fmt
from lscape_cli.report.document import Block, Image
from lscape_cli.storage.study import Record


def _cell(rel: str, pointer: str, est: Any, err: Any, note: str) -> Cell:
    text = fmt(est) if err is None else f"{fmt(est)} ± {fmt(err)}"
    return Cell(text, (Source(rel, pointer, est),), note=note, sort=est if isinstance(est, float) else None)


def _rows(rel: str, blocks: list[dict[str, Any]]) -> list[list[Cell]]:
    rows = []
    for i, b in enumerate(blocks):
        base = f"/results/per_layer/blocks/{i}"
        lam, tr = b.get("lambda_max") or {}, b.get("trace") or {}
        rows.append(
            [
                Cell(str(b["block"]), (Source(rel, f"{base}/block", b["block"]),)),
                Cell(fmt(b.get("num_params")), (Source(rel, f"{base}/num_params", b.get("num_params")),)),
                _cell(rel, f"{base}/lambda_max/estimate", lam.get("estimate"), lam.get("error_bound"),
                      f"{lam.get('method')}, {lam.get('num_matvecs')} products; ± is the error bound"),
                _cell(rel, f"{base}/trace/estimate", tr.get("estimate"), tr.get("stderr"),
                      f"{tr.get('method')}, {tr.get('num_matvecs')} products; ± is one standard error"),
            ]
        )  # fmt: skip
    return rows


def per_layer(records: list[Record], rels: dict[str, str]) -> list[Block]:
    """A table and a figure for every probe record with ``per_layer`` results."""
    out: list[Block] = []
    for k, rec in enumerate(r for r in records if (r.data.get("results") or {}).get("per_layer")):
        rel = rels[str(rec.path)]
        layers = rec.data["results"]["per_layer"]
        blocks = layers["blocks"]
        kind = ((rec.data.get("results") or {}).get("curvature") or {}).get("kind", "hessian")
        out.append(
            Table(
                f"per_layer_{k}",
                f"Per-layer {kind} of {rel}",
                ["block", "parameters", "λmax", "trace"],
                _rows(rel, blocks),
                caption=f"{layers.get('grouping')}. {layers.get('note')}.",
            )
        )
        fig = per_layer_bars(
            f"{rel}: {kind} per block",
            [str(b["block"]) for b in blocks],
            [(b.get("lambda_max") or {}).get("estimate") for b in blocks],
            [(b.get("lambda_max") or {}).get("error_bound") for b in blocks],
            [(b.get("trace") or {}).get("estimate") for b in blocks],
            [(b.get("trace") or {}).get("stderr") for b in blocks],
        )
        caption = "bars: estimates; whiskers: λmax error bound, trace standard error"
        out.append(Image(f"per_layer_{k}.png", f"Per-layer {kind}: {rel}", plots.png(fig), caption))
    return out
