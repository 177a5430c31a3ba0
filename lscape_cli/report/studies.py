"""Slice, connect and pareto sections: the numbers each record summarises and the figures beside it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lscape_cli.report.cells import DASH, Cell, Source, Table, fmt, get, value_cell
from lscape_cli.report.document import Block, Image
from lscape_cli.report.runs import rel
from lscape_cli.storage.study import Record, read_bytes

BARRIER_DEFINITIONS = (
    "Barriers along a path v(α), α in [0, 1], on the test split: "
    "max − mean of ends = max_α v − (v(0)+v(1))/2 (Frankle et al. 2020); "
    "chord = max_α [v(α) − ((1−α)v(0) + αv(1))] (Entezari et al. 2022); "
    "max − max of ends = max_α v − max(v(0), v(1)). "
    "On a grid these are lower bounds of the continuous maxima."
)


def _images(rec: Record, names: list[str], title: str) -> list[Image]:
    """The PNG figures a record names (paths relative to it), skipping any that are gone.

    Only files inside the report's directories are read (:meth:`Record.readable`).
    """
    out = []
    for name in names if isinstance(names, list) else []:
        if not isinstance(name, str) or not name.endswith(".png"):
            continue
        resolved = rec.readable(name)
        if resolved is None:
            continue
        path = rec.path.parent / name
        data = read_bytes(resolved)
        if data is not None:
            out.append(Image(path.name, f"{title}: {path.name}", data, file=path))
    return out


def _stale_cell(text: str, rec: Record) -> Cell:
    return Cell(text, note="; ".join(rec.stale), badge="stale" if rec.stale else "")


def _slice_row(rec: Record, r: str) -> list[Cell]:
    d = rec.data
    cfg = get(d, "/config/directions") or {}
    kind = f"{cfg.get('kind')}" + (f", {cfg['norm']}-normalised" if cfg.get("norm") else "")
    row = [
        _stale_cell(r, rec),
        value_cell(r, d, "/config/slice/dims"),
        Cell(kind, (Source(r, "/config/directions/kind", cfg.get("kind")),)),
        value_cell(r, d, "/config/slice/range"),
        value_cell(r, d, "/config/slice/steps"),
        value_cell(r, d, "/config/evaluation/split"),
        value_cell(r, d, "/results/centre/loss"),
    ]
    if get(d, "/results/lines") is not None:
        return row + [
            value_cell(r, d, "/results/sharpness_1d/value", str(get(d, "/results/sharpness_1d/method"))),
            basin_width_cell(r, d),
            Cell(DASH),
        ]
    return row + [
        value_cell(r, d, "/results/plane/max_rise/value", "largest L − L(θ) over the plane"),
        basin_area_cell(r, d),
        quadratic_cell(r, d),
    ]


CENSORED = "censored"


def basin_width_cell(r: str, d: dict[str, Any]) -> Cell:
    """1-D basin widths, min .. max over directions; flagged where a basin reaches the end of the range."""
    lines = get(d, "/results/lines") or []
    widths = [(i, ln["basin"]["width"]) for i, ln in enumerate(lines) if ln["basin"]["width"] is not None]
    if not widths:
        return Cell(DASH)
    lo, hi = min(widths, key=lambda t: t[1]), max(widths, key=lambda t: t[1])
    cell = Cell(
        f"{fmt(lo[1])} .. {fmt(hi[1])}",
        (
            Source(r, f"/results/lines/{lo[0]}/basin/width", lo[1]),
            Source(r, f"/results/lines/{hi[0]}/basin/width", hi[1]),
        ),
        f"width of the interval where L − L(θ) ≤ {get(d, '/results/lines/0/basin/threshold')}; "
        "min .. max over directions; censored: the interval reaches the end of the range (a lower bound)",
        lo=float(lo[1]),
        hi=float(hi[1]),
    )
    cut = sum(bool(ln["basin"].get("censored_left") or ln["basin"].get("censored_right")) for ln in lines)
    return cell.flag(f"{CENSORED} in {cut} of {len(lines)} directions" if cut else "")


def basin_area_cell(r: str, d: dict[str, Any]) -> Cell:
    """The 2-D basin's area, flagged when it reaches the grid's edge (then a lower bound)."""
    note = str(get(d, "/results/plane/basin/method") or "")
    if get(d, "/results/plane/basin/censored"):
        note += "; censored: the basin reaches the edge of the grid, so the area is a lower bound"
        return value_cell(r, d, "/results/plane/basin/area", note).flag(CENSORED)
    return value_cell(r, d, "/results/plane/basin/area", note)


def quadratic_cell(r: str, d: dict[str, Any]) -> Cell:
    """The eigenvalues of the quadratic fitted near θ on a 2-D plane."""
    eig = get(d, "/results/plane/quadratic/eigenvalues") or []
    return Cell(
        ", ".join(fmt(v) for v in eig),
        tuple(Source(r, f"/results/plane/quadratic/eigenvalues/{i}", v) for i, v in enumerate(eig)),
        str(get(d, "/results/plane/quadratic/method") or ""),
        extra=tuple((f"λ{i + 1}", v) for i, v in enumerate(eig)),
    )


def slices(records: list[Record], rels: dict[str, str]) -> list[Block]:
    """Seed 001's 1D/2D slices: 1D sharpness, basin widths, plane curvature, with their plots."""
    table = Table(
        "slices",
        "Slices",
        [
            "record",
            "dims",
            "directions",
            "range",
            "steps",
            "split",
            "loss at θ",
            "1D sharpness / max rise",
            "basin width / area",
            "quadratic-fit eigenvalues (2-D)",
        ],
        caption="1-D: 1D sharpness = max over directions and α of L(θ+αd) − L(θ); "
        "basin width min .. max over "
        "directions. 2-D: max rise, basin area (grid cells around the centre) and the eigenvalues of a "
        "quadratic fitted near θ.",
    )
    blocks: list[Block] = [table]
    for rec in records:
        r = rels[str(rec.path)]
        table.rows.append(_slice_row(rec, r))
        blocks += _images(rec, get(rec.data, "/results/outputs/plots") or [], r)
    return blocks


def barrier_cell(r: str, d: dict[str, Any], path: str, split: str, metric: str, definition: str) -> Cell:
    """One barrier of a connect record (and its value relative to the ends)."""
    base = f"/results/{path}/barriers/{split}/{metric}/{definition}"
    cell = value_cell(r, d, f"{base}/value")
    rel_v = get(d, f"{base}/relative")
    if cell.sources and rel_v is not None:
        cell.text += f" ({fmt(rel_v)}×)"
        cell.sources += (Source(r, f"{base}/relative", rel_v),)
    cell.note = f"at α = {fmt(get(d, f'{base}/alpha'))}; (×) relative to the mean of the end values"
    return cell


def _stem(path: Any) -> str:
    name = Path(str(path)).name
    return name[: -len(".safetensors")] if name.endswith(".safetensors") else name


def connect(records: list[Record], rels: dict[str, str]) -> list[Block]:
    """Mode connectivity: barriers per path with their definitions, and the path plots.

    The error barrier column is left out when no record has one (regression data have no error rate).
    """
    error = any(get(rec.data, "/results/linear/barriers/test/error") is not None for rec in records)
    cols = [
        "record",
        "A → B",
        "path",
        "buffers",
        "distance",
        "test loss: max − mean ends",
        "test loss: chord",
        "test loss: max − max ends",
        *(["test error: max − mean ends"] if error else []),
        "train loss: max − mean ends",
    ]
    table = Table("connect", "Mode connectivity", cols, caption=BARRIER_DEFINITIONS)
    blocks: list[Block] = [table]
    for rec in records:
        r, d = rels[str(rec.path)], rec.data
        a = get(d, "/inputs/checkpoint_a/path")
        b = get(d, "/inputs/checkpoint_b/path")
        for path in ("linear", "aligned", "curve"):
            if get(d, f"/results/{path}") is None:
                continue
            table.rows.append(
                [
                    _stale_cell(r, rec),
                    Cell(f"{_stem(a)} → {_stem(b)}", note=f"A: {a}; B: {b} (relative to the record)"),
                    Cell(
                        f"{path}: {get(d, f'/results/{path}/endpoint_b')}",
                        note=str(get(d, f"/results/{path}/formula")),
                    ),
                    value_cell(r, d, f"/results/{path}/buffers"),
                    value_cell(r, d, f"/results/{path}/distance", "‖θ_B − θ_A‖₂"),
                    barrier_cell(r, d, path, "test", "loss", "max_minus_mean_ends"),
                    barrier_cell(r, d, path, "test", "loss", "chord"),
                    barrier_cell(r, d, path, "test", "loss", "max_minus_max_ends"),
                    *([barrier_cell(r, d, path, "test", "error", "max_minus_mean_ends")] if error else []),
                    barrier_cell(r, d, path, "train", "loss", "max_minus_mean_ends"),
                ]
            )
        png = get(d, "/results/plot/png")
        blocks += _images(rec, [png] if png else [], r)
    return blocks


def pareto(records: list[Record], rels: dict[str, str]) -> list[Block]:
    """Seed 000's analysis: per-group means, λ_d, ρ_RMS, spreads; λ_G and the MAE it buys; figures."""
    blocks: list[Block] = []
    for n, rec in enumerate(records):
        r, d = rels[str(rec.path)], rec.data
        x, y, gkey = get(d, "/results/x"), get(d, "/results/y"), get(d, "/results/group_by")
        table = Table(
            f"pareto-{n + 1}" if len(records) > 1 else "pareto",
            f"Pareto analysis by {gkey} ({r})",
            [
                str(gkey),
                "runs",
                f"mean {x}",
                f"mean {y}",
                "λ_d (TLS on front)",
                "ρ_RMS",
                "spread",
                "aligned spread",
            ],
            caption="λ_d: minus the slope of a total-least-squares line through the group's "
            "Pareto hull chain; "
            "ρ_RMS: RMS parameter norm; spread: mean distance to the centroid (after permutation alignment).",
        )
        for g in get(d, "/results/groups") or {}:
            base = f"/results/groups/{g.replace('~', '~0').replace('/', '~1')}"
            table.rows.append(
                [
                    _stale_cell(g, rec),
                    _group_runs(r, d, base),
                    value_cell(r, d, f"{base}/mean/0"),
                    value_cell(r, d, f"{base}/mean/1"),
                    value_cell(r, d, f"{base}/tls/lambda", str(get(d, f"{base}/tls/status") or "")),
                    value_cell(r, d, f"{base}/parameters/rho_rms"),
                    value_cell(r, d, f"{base}/parameters/spread_about_centroid"),
                    value_cell(r, d, f"{base}/parameters/spread_after_alignment"),
                ]
            )
        blocks.append(table)
        if get(d, "/results/across_groups/lambda_g") is not None:
            blocks.append(_across(r, d, f"pareto-global-{n + 1}" if len(records) > 1 else "pareto-global"))
        blocks += _images(rec, get(d, "/results/figures") or [], r)
    return blocks


def _group_runs(r: str, d: dict[str, Any], base: str) -> Cell:
    """A group's run count, flagged with the runs given a convergence rule that ran out of budget."""
    cell = value_cell(r, d, f"{base}/n")
    budget = get(d, f"{base}/stopped_on_budget") or []
    if budget:
        cell.note = "stopped on budget: " + ", ".join(map(str, budget))
    return cell.flag(f"{len(budget)} budget stop{'s' if len(budget) > 1 else ''}" if budget else "")


def _across(r: str, d: dict[str, Any], key: str) -> Table:
    target = get(d, "/results/target")
    table = Table(
        key,
        "Global trade-off λ_G",
        ["λ_G", f"MAE to {target} without curvature", "MAE with curvature", "relative improvement"],
        caption=str(get(d, "/results/across_groups/method") or ""),
    )
    a = "/results/across_groups"
    table.rows.append(
        [
            value_cell(r, d, f"{a}/lambda_g").flag("at bound" if get(d, f"{a}/lambda_G_at_bound") else ""),
            value_cell(r, d, f"{a}/mae_without_curvature"),
            value_cell(r, d, f"{a}/mae_with_curvature"),
            value_cell(r, d, f"{a}/relative_improvement"),
        ]
    )
    return table


def relative_names(records: list[Record], out_dir: Path) -> dict[str, str]:
    """Each record's path relative to the report's directory."""
    return {str(rec.path): rel(rec.path, out_dir) for rec in records}
