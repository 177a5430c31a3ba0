"""Seed 001's comparison figure: every model's random-direction slices on shared axes, one row each.

It reads the grid each slice record holds (``results.grid``), never the ``.slice.safetensors`` file, so
the report stays free of torch. Slices along data-dependent directions (``--pca``, ``--toward``,
eigenvectors) differ from model to model by construction and are left to their own figures.
"""

from __future__ import annotations

from typing import Any

from lscape_cli.plotting import report as plots
from lscape_cli.report.cells import get
from lscape_cli.report.document import Image
from lscape_cli.report.figures import colour_key
from lscape_cli.report.runs import Run, sort_key
from lscape_cli.storage.study import Record

COMPARED_KINDS = ("random",)


def _panel_for(
    rec: Record, runs: dict[str, tuple[int, Run]], rels: dict[str, str], colour: str | None
) -> Any:
    sha = get(rec.data, "/inputs/checkpoint/sha256")
    if sha in runs:
        index, run = runs[sha]
        return (index, run.label), colour_key(run, colour), run.label
    name = str(get(rec.data, "/inputs/checkpoint/path") or rels[str(rec.path)])
    label = name[: -len(".safetensors")] if name.endswith(".safetensors") else name
    return (len(runs), rels[str(rec.path)]), None if colour else "all runs", label


def comparable(records: list[Record]) -> list[Record]:
    """Slice records along random directions, the ones seed 001 compares across models."""
    return [r for r in records if get(r.data, "/config/directions/kind") in COMPARED_KINDS]


def comparison(
    records: list[Record], runs: list[Run], rels: dict[str, str], colour: str | None
) -> list[Image]:
    """The figure, when at least one random-direction slice exists; its caption names each panel's records.

    One row per model (ordered as the runs are, by ``--compare``): the first 1-D and the first 2-D
    random-direction slice record of its checkpoint.
    """
    by_sha = {r.key: (i, r) for i, r in enumerate(runs)}
    rows: dict[str, tuple[Any, plots.SlicePanel, list[str]]] = {}
    for rec in sorted(comparable(records), key=lambda r: rels[str(r.path)]):
        order, key, label = _panel_for(rec, by_sha, rels, colour)
        row = str(get(rec.data, "/inputs/checkpoint/sha256") or order)
        if row not in rows:
            rows[row] = (order, plots.SlicePanel(_label(label, key, colour), key), [])
        _, panel, used = rows[row]
        grid = rec.data["results"]["grid"]
        if get(rec.data, "/config/slice/dims") == 1 and not panel.lines:
            panel.alphas1, panel.lines = grid["alpha"], grid["loss"]
        elif get(rec.data, "/config/slice/dims") == 2 and not panel.plane:
            panel.alphas2, panel.plane = grid["alpha"], grid["loss"]
            panel.betas2 = grid.get("beta") or grid["alpha"]
        else:
            continue
        used.append(rels[str(rec.path)])
    if not rows:
        return []
    ordered = sorted(rows.values(), key=lambda t: t[0])
    panels = [p for _, p, _ in ordered]
    keys = sorted({p.colour_key for p in panels}, key=sort_key)
    norms = sorted({str(get(r.data, "/config/directions/norm") or "not") for r in comparable(records)})
    directions = f"random directions, {' / '.join(norms)}-normalised"
    fig = plots.slice_comparison(panels, keys, colour or "", directions)
    listing = "; ".join(f"{p.label}: {', '.join(u)}" for _, p, u in ordered)
    caption = (
        "one row per model, top to bottom, in the report's run order: 1-D curves, the 2-D plane as a "
        "surface and as contours; α shared by every flat panel, loss by the 1-D panels, β and the "
        "contour levels by the 2-D panels (each plane its own levels and "
        f"colour bar where one would be flat on the shared ones); {directions}; records: {listing}"
    )
    return [Image("slices-compared.png", "Slices compared across models", plots.png(fig), caption)]


def _label(label: str, key: Any, colour: str | None) -> str:
    return f"{label} ({colour} = {key})" if colour else label
