"""``lscape report``: gather every record of a study and write one page (HTML + Markdown) and its tables.

It reads, never recomputes: every number shown comes from a record (its source travels with it).
"""

from __future__ import annotations

import datetime as _dt
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lscape_cli import __version__
from lscape_cli.errors import LscapeError
from lscape_cli.report import curvature, figures, inventory, landscape, paper, per_layer, studies, verdicts
from lscape_cli.report.cells import Table
from lscape_cli.report.claims import ClaimSpec
from lscape_cli.report.document import Block, Bullets, Document, Image, Section
from lscape_cli.report.render import to_csv, to_html, to_latex, to_markdown
from lscape_cli.report.runs import RUN_KEY, Run, check_key, join, order, rel
from lscape_cli.storage.study import Record, Study, report_paths, scan, write_report


@dataclass(frozen=True)
class ReportRequest:
    """What to report on and where to write it."""

    inputs: tuple[Path, ...]  # directories (searched recursively) or record files
    out: Path = Path("report.html")  # the HTML page; Markdown, tables and figures go beside it
    compare: str | None = None  # settings key that orders and colours runs, e.g. training.optimizer
    group_by: str | None = None  # settings key whose values group restarts, e.g. model.depth
    title: str | None = None
    tables: tuple[paper.TableSpec, ...] = ()  # paper tables (--table, --tables), shown first
    claims: tuple[ClaimSpec, ...] = ()  # paper claims (--claim, --tables), their verdicts after the tables


@dataclass
class ReportResult:
    """What was written, and what the reader should know about the inputs."""

    paths: dict[str, Path]
    num_runs: int
    counts: dict[str, int]
    stale: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)  # "table: row: column: flag" for each flagged value
    claims: list[verdicts.Verdict] = field(default_factory=list)  # each claim's verdict, in order

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (what ``lscape report --json`` prints)."""
        return {
            "html": str(self.paths["html"]),
            "markdown": str(self.paths["markdown"]),
            "tables_dir": str(self.paths["tables"]),
            "figures_dir": str(self.paths["figures"]),
            "runs": self.num_runs,
            "records": self.counts,
            "stale": self.stale,
            "skipped": self.skipped,
            "tables": self.tables,
            "figures": self.figures,
            "flags": self.flags,
            "claims": [v.row() for v in self.claims],
        }


def _check_out(out: Path) -> None:
    if out.suffix.lower() not in (".html", ".htm"):
        raise LscapeError("--out must name an .html file", str(out), "e.g. --out study/report.html")


def _root(inputs: tuple[Path, ...]) -> Path:
    dirs = [p.resolve() if p.is_dir() else p.resolve().parent for p in inputs]
    return Path(os.path.commonpath(dirs))


def make_report(req: ReportRequest) -> ReportResult:
    """Scan, assemble, render and write the report (the one call behind ``lscape report``)."""
    _check_out(req.out)
    study = scan(list(req.inputs))
    out_dir = req.out.resolve().parent
    rels = studies.relative_names(study.records, out_dir)
    runs = join(study.records, _root(req.inputs), out_dir)
    check_key(runs, req.compare, "--compare")
    check_key(runs, req.group_by, "--group-by")
    runs = order(runs, req.compare or req.group_by)
    joined = paper.Joined(runs, rels, _of(study.records, "slice"), _of(study.records, "connect"))
    claims = verdicts.evaluate_all(list(req.claims), joined)
    doc = document(req, study, runs, rels, claims)
    _check_keys(doc)
    paths = report_paths(req.out)
    links = _image_links(doc.images, paths["figures"], out_dir)
    origin = ", ".join(str(p) for p in req.inputs)
    tables = {f"{t.key}.csv": to_csv(t) for t in doc.tables}
    tables.update({f"{t.key}.tex": to_latex(t, origin) for t in doc.tables})
    generated = {img.name: img.png for img in doc.images if img.file is None}
    written = write_report(req.out, to_html(doc), to_markdown(doc, links), tables, generated)
    study.skipped.extend(note for r in study.records for note in r.skipped)
    stale = [f"{rels[str(r.path)]}: {s}" for r in study.records for s in r.stale]
    return ReportResult(
        written,
        len(runs),
        _counts(study),
        stale,
        study.skipped,
        sorted(tables),
        sorted(generated),
        flags(doc.tables),
        claims,
    )


def flags(tables: list[Table]) -> list[str]:
    """Every flagged value, as ``table: row: column: flag`` (what the terminal and ``--json`` list)."""
    return [
        f"{t.key}: {row[0].text}: {col}: {cell.badge}"
        for t in tables
        for row in t.rows
        for col, cell in zip(t.columns, row, strict=True)
        if cell.badge and col != t.columns[0]
    ]


def _check_keys(doc: Document) -> None:
    """A paper table may not take the name (and so the CSV/LaTeX file) of another table."""
    keys = [t.key for t in doc.tables]
    dup = next((k for k in keys if keys.count(k) > 1), None)
    if dup is not None:
        raise LscapeError(
            f"the table name {dup!r} is taken by the report's own table", "--table", "rename it"
        )


def _counts(study: Study) -> dict[str, int]:
    """Records per kind."""
    counts: dict[str, int] = {}
    for r in study.records:
        counts[r.kind] = counts.get(r.kind, 0) + 1
    return counts


def _image_links(images: list[Image], figures_dir: Path, out_dir: Path) -> dict[int, str]:
    return {id(i): rel(i.file if i.file is not None else figures_dir / i.name, out_dir) for i in images}


def _of(records: list[Record], kind: str) -> list[Record]:
    return [r for r in records if r.kind == kind]


def document(
    req: ReportRequest,
    study: Study,
    runs: list[Run],
    rels: dict[str, str],
    claims: list[verdicts.Verdict] | None = None,
) -> Document:
    """Every section that has records to show, in the order of the issue's seed studies."""
    recs = study.records
    # the compare/group keys as inventory columns ("run" is one already)
    keys = [k for k in dict.fromkeys([req.compare, req.group_by]) if k and k != RUN_KEY]
    colour = req.compare or req.group_by
    sections = [_provenance(study, rels)]
    if req.tables:
        joined = paper.Joined(runs, rels, _of(recs, "slice"), _of(recs, "connect"))
        made: list[Block] = list(paper.tables(list(req.tables), joined))
        sections.append(Section("tables", "Tables", made))
    if claims:
        sections.append(Section("claims", "Claims", [verdicts.table(claims)]))
    trained = [r for r in runs if r.train is not None or r.meta]
    if trained:
        sections.append(Section("inventory", "Run inventory", list(inventory.inventory(trained, rels, keys))))
    tables = curvature.curvature(runs, rels)
    if tables:
        sections.append(Section("curvature", "Curvature", list[Block](tables)))
    layers = per_layer.per_layer(_of(recs, "probe"), rels)
    if layers:
        sections.append(Section("per_layer", "Per-layer curvature", layers))
    if req.group_by:
        sections.append(
            Section("groups", f"Groups by {req.group_by}", [inventory.groups(runs, rels, req.group_by)])
        )
    groups = _groups(runs, req.group_by)
    curves: list[Block] = [
        *figures.training_curves(groups, colour, req.group_by),
        *figures.tracked(runs, colour),
    ]
    if curves:
        sections.append(Section("training", "Training curves", curves))
    versus = figures.versus(runs, rels, colour)
    if versus:
        sections.append(Section("versus", "Generalisation versus curvature", list(versus)))
    for kind, title, fn in (
        ("slice", "Slices", studies.slices),
        ("connect", "Mode connectivity", studies.connect),
        ("pareto", "Pareto analysis", studies.pareto),
    ):
        if _of(recs, kind):
            blocks = fn(_of(recs, kind), rels)
            if kind == "slice":  # seed 001: every model's slices on shared axes, after the table
                blocks[1:1] = landscape.comparison(_of(recs, kind), runs, rels, colour)
            sections.append(Section(kind, title, blocks))
    sections = [s for s in sections if s.blocks]
    return Document(req.title or "lscape report", _summary(req, study, runs), sections, _footer(study))


def _groups(runs: list[Run], key: str | None) -> dict[Any, list[Run]]:
    if key is None:
        return {"all runs": runs}
    out: dict[Any, list[Run]] = {}
    for run in runs:
        out.setdefault(figures.colour_key(run, key), []).append(run)
    return out


def _provenance(study: Study, rels: dict[str, str]) -> Section:
    blocks: list[Block] = []
    stale = [f"{rels[str(r.path)]}: {s}" for r in study.records for s in r.stale]
    if stale:
        blocks.append(f"{len(stale)} stale input(s): these records describe files that are gone or changed.")
        blocks.append(Bullets(stale, warn=True))
    if study.skipped:
        blocks.append(f"{len(study.skipped)} JSON file(s) skipped (not lscape records this version reads):")
        blocks.append(Bullets(study.skipped))
    return Section("provenance", "Stale and skipped records", blocks)


def _summary(req: ReportRequest, study: Study, runs: list[Run]) -> str:
    kinds = ", ".join(f"{n} {k}" for k, n in sorted(_counts(study).items()))
    stale = sum(bool(r.stale) for r in study.records)
    when = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    extra = "".join(f"; {o} {k}" for o, k in (("compare", req.compare), ("group by", req.group_by)) if k)
    return (
        f"{len(runs)} runs from {len(study.records)} records ({kinds}) under "
        f"{', '.join(map(str, req.inputs))}{extra}; {stale} stale. Written {when} by lscape {__version__}."
    )


def _footer(study: Study) -> list[str]:
    datas = [r.data for r in study.records]
    lscape = sorted({str(d.get("lscape_version")) for d in datas})
    torch = sorted({str((d.get("environment") or {}).get("torch")) for d in datas} - {"None"})
    python = sorted({str((d.get("environment") or {}).get("python")) for d in datas} - {"None"})
    # in the order they ran (the records' created_at), so the list replays the study
    ran = sorted(datas, key=_written_at)
    commands = list(dict.fromkeys(shlex.join(map(str, d.get("command") or [])) for d in ran))
    return [
        f"Records written by lscape {', '.join(lscape)}; torch {', '.join(torch) or '–'}; "
        f"python {', '.join(python) or '–'}.",
        f"Report written by lscape {__version__}; it reads the records and recomputes nothing.",
        *commands,
    ]


def _written_at(data: dict[str, Any]) -> _dt.datetime:
    """A record's ``created_at`` as a time (records of one second, written before microseconds, tie)."""
    try:
        when = _dt.datetime.fromisoformat(str(data.get("created_at")))
    except ValueError:
        return _dt.datetime.min.replace(tzinfo=_dt.timezone.utc)
    return when if when.tzinfo else when.replace(tzinfo=_dt.timezone.utc)
