"""Paper tables: chosen columns of every record about a run, joined into one table (``--table``).

A table is ``NAME=COLUMNS`` with options after ``;`` (``where=KEY=VALUE``, ``sort=KEY``,
``group=KEY``, ``title=TEXT``; ``where`` repeats, ``!`` negates), or the same in a TOML/JSON study file
(:func:`read_study`). A column is
``FIELD[OPTION=VALUE ...]`` with an optional ``:HEADER``:

- ``run``, or a settings key (``training.optimizer``, ``model.width``);
- a train value: ``test_accuracy``, ``test_loss``, ``train_loss``, ``val_loss`` (and accuracies),
  ``gap_acc``, ``gap_loss``, ``epochs``, ``best_epoch``, ``parameters``, ``stop``;
- a probe value: ``lambda_max``, ``lambda_K``, ``trace``, ``frobenius``, ``lambda_min``,
  ``condition_number``, ``effective_rank``, ``grad_norm``, ``sharpness`` (``kind``, ``eps``,
  ``stat`` max/mean), ``noise`` (``sigma``), ``pac_bayes_sigma``, ``pac_bayes_bound``, ``stability``;
  the probe record is chosen by ``split``, ``method`` (of λmax/top-k), ``batches`` (number of
  batches; ``whole``: the whole split) and ``record`` (a part of its path), else the first record by
  path that holds the value;
- a slice value: ``slice.sharpness_1d``, ``slice.basin_width``, ``slice.basin_area``,
  ``slice.max_rise``, ``slice.centre_loss``, ``slice.quadratic`` (``dims``, ``directions``, ``record``);
- a connect value: ``connect.barrier`` (``path`` linear/aligned/curve, ``split``, ``metric``,
  ``definition``), ``connect.distance`` (``path``), from the connect records whose end A or B is the run.

Each cell is the one the full report shows for that record (its sources, flags and tooltip travel).
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lscape_cli.errors import LscapeError
from lscape_cli.report import curvature, studies
from lscape_cli.report.cells import DASH, Cell, Source, Table, get, mean_std_cell, text_cell, value_cell
from lscape_cli.report.inventory import gap_cell, run_cell, run_values, source_cell, stop_cell
from lscape_cli.report.runs import Run, key_source, sort_key
from lscape_cli.storage.study import Record

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
COLUMN = re.compile(r"\s*([A-Za-z0-9_.]+)\s*(?:\[([^\]]*)\])?\s*(?::\s*(.+?))?\s*")
TRAIN = {  # field: (header, run_values name)
    "test_accuracy": ("test acc", "test_accuracy"),
    "test_loss": ("test loss", "test_loss"),
    "train_accuracy": ("train acc", "train_accuracy"),
    "train_loss": ("train loss", "train_loss"),
    "val_accuracy": ("val acc", "val_accuracy"),
    "val_loss": ("val loss", "val_loss"),
    "epochs": ("epochs", "epochs_run"),
    "best_epoch": ("best epoch", "best_epoch"),
    "parameters": ("parameters", "num_parameters"),
}
OTHER = {"run": "run", "gap_acc": "gap (acc)", "gap_loss": "gap (loss)", "stop": "stop"}
SLICE = {
    "slice.sharpness_1d": "1D sharpness",
    "slice.basin_width": "basin width",
    "slice.basin_area": "basin area",
    "slice.max_rise": "max rise (2-D)",
    "slice.centre_loss": "loss at θ",
    "slice.quadratic": "quadratic-fit eigenvalues",
}
CONNECT = {"connect.barrier": "barrier", "connect.distance": "‖θ_B − θ_A‖₂"}
CELL_OPTIONS = {"kind", "eps", "stat", "sigma", "noise_method", "path", "metric", "definition"}
PROBE_OPTIONS = {"split", "method", "batches", "record", "kind", "eps", "stat", "sigma", "noise_method"}
SLICE_OPTIONS = {"dims", "directions", "record"}
CONNECT_OPTIONS = {"path", "split", "metric", "definition", "record"}
FIX = "e.g. --table 'table1=run,training.optimizer,test_accuracy,lambda_max[method=power]'"


@dataclass(frozen=True)
class Column:
    """One column: a field, the options that choose its record and value, and its header."""

    field: str
    options: tuple[tuple[str, str], ...] = ()
    header: str = ""

    @property
    def opts(self) -> dict[str, str]:
        """The options as a dict."""
        return dict(self.options)

    def title(self) -> str:
        """The header as given, else the field's name with its options (``λmax (method power)``)."""
        if self.header:
            return self.header
        base = {**{k: h for k, (h, _) in TRAIN.items()}, **OTHER, **SLICE, **CONNECT, **curvature.FIELDS}
        name = base.get(self.field) or (
            f"λ{self.field[7:]}" if self.field.startswith("lambda_") else self.field
        )
        return name + (f" ({', '.join(f'{k} {v}' for k, v in self.options)})" if self.options else "")


@dataclass(frozen=True)
class TableSpec:
    """A paper table: its columns, which runs (``where``), their order (``sort``), and grouping."""

    name: str
    columns: tuple[Column, ...]
    title: str = ""
    where: tuple[tuple[str, str], ...] = ()
    sort: tuple[str, ...] = ()
    group_by: str | None = None
    caption: str = ""


def split_top(text: str) -> list[str]:
    """Split at commas outside brackets."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += (ch == "[") - (ch == "]")
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return [p for p in (*parts, cur) if p.strip()]


def parse_column(text: str, where: str) -> Column:
    """``FIELD[OPTION=VALUE ...]:HEADER`` (options separated by spaces or commas)."""
    m = COLUMN.fullmatch(text)
    if m is None:
        raise LscapeError(
            f"cannot read the column {text.strip()!r}", where, "write FIELD[OPTION=VALUE]:HEADER"
        )
    options = []
    for item in re.split(r"[\s,]+", m.group(2) or ""):
        if not item:
            continue
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise LscapeError(f"cannot read the option {item!r} of {m.group(1)}", where, "write OPTION=VALUE")
        options.append((key, value))
    return Column(m.group(1), tuple(options), m.group(3) or "")


def _pairs(items: list[str], what: str, where: str) -> tuple[tuple[str, str], ...]:
    out = []
    for item in items:
        key, eq, value = item.partition("=")
        if not eq:
            raise LscapeError(f"cannot read {what} {item!r}", where, f"write {what}=KEY=VALUE")
        out.append((key.strip(), value.strip()))
    return tuple(out)


def check_name(name: str, where: str, what: str = "table") -> str:
    """``name`` if it can name a file (a table's CSV, a claim's row), else one ``Error:`` line."""
    if not NAME.fullmatch(name):
        raise LscapeError(f"{what} name {name!r} is not a file name", where, "use letters, digits, - and _")
    return name


def parse_table(text: str) -> TableSpec:
    """``NAME=COLUMNS[;where=KEY=VALUE][;sort=KEY][;group=KEY][;title=TEXT]`` (the ``--table`` option)."""
    name, eq, rest = text.partition("=")
    if not eq or not rest.strip():
        raise LscapeError(f"cannot read --table {text!r}", "--table", FIX)
    where = f"--table {name}"
    cols, *opts = rest.split(";")
    fields: dict[str, list[str]] = {"where": [], "sort": [], "group": [], "title": [], "caption": []}
    for opt in opts:
        key, eq, value = opt.partition("=")
        if key.strip() not in fields or not eq:
            raise LscapeError(
                f"unknown table option {opt.strip()!r}", where, "use where=, sort=, group=, title="
            )
        fields[key.strip()].append(value)
    return TableSpec(
        check_name(name.strip(), "--table"),
        tuple(parse_column(c, where) for c in split_top(cols)),
        ";".join(fields["title"]),
        _pairs(fields["where"], "where", where),
        tuple(s.strip() for f in fields["sort"] for s in f.split(",") if s.strip()),
        fields["group"][-1].strip() if fields["group"] else None,
        ";".join(fields["caption"]),
    )


def _list(value: Any, key: str, where: str) -> list[str]:
    if isinstance(value, str):
        return split_top(value) if key == "columns" else [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise LscapeError(f"{key} must be a string or a list of strings", where, f"e.g. {key} = [...]")


def _spec_from(name: str, obj: Any, where: str) -> TableSpec:
    if not isinstance(obj, dict) or "columns" not in obj:
        raise LscapeError(f"table {name!r} has no columns", where, "give columns = ['run', 'test_loss', ...]")
    known = {"columns", "title", "where", "sort", "group_by", "caption"}
    if set(obj) - known:
        raise LscapeError(
            f"unknown key(s) {sorted(set(obj) - known)} in table {name!r}", where, f"use {sorted(known)}"
        )
    w = obj.get("where") or {}
    if not isinstance(w, dict):
        raise LscapeError(
            f"where of table {name!r} must be a table of KEY = VALUE", where, "where = {'model.name' = 'mlp'}"
        )
    return TableSpec(
        check_name(name, where),
        tuple(parse_column(c, f"{where}: {name}") for c in _list(obj["columns"], "columns", where)),
        str(obj.get("title") or ""),
        tuple((str(k), str(v)) for k, vs in w.items() for v in (vs if isinstance(vs, list) else [vs])),
        tuple(_list(obj.get("sort") or [], "sort", where)),
        str(obj["group_by"]) if obj.get("group_by") else None,
        str(obj.get("caption") or ""),
    )


def load_study(path: Path) -> Any:
    """The parsed file: JSON by its suffix, else TOML (``tomllib``: Python 3.11 or later)."""
    import importlib

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise LscapeError(
            f"cannot read the study file ({exc.strerror})", str(path), "check the path"
        ) from None
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except ValueError as exc:
            raise LscapeError(f"not valid JSON: {exc}", str(path), "fix the file") from None
    try:
        tomllib = importlib.import_module("tomllib")
    except ImportError:
        raise LscapeError("TOML study files need Python 3.11", str(path), "write it as JSON") from None
    try:
        return tomllib.loads(text)
    except ValueError as exc:  # tomllib.TOMLDecodeError is a ValueError
        raise LscapeError(f"not valid TOML: {exc}", str(path), "fix the file") from None


def read_study(path: Path) -> list[TableSpec]:
    """The tables of a TOML or JSON study file, in file order.

    TOML: ``[tables.NAME]`` with ``columns``, ``title``, ``where``, ``sort``, ``group_by``, ``caption``;
    JSON: ``{"tables": {"NAME": {...}}}``. A file of claims alone (``[claims.NAME]``) has no tables.
    """
    data = load_study(path)
    tables = data.get("tables") if isinstance(data, dict) else None
    if tables is None and isinstance(data, dict) and data.get("claims"):
        return []
    if not isinstance(tables, dict) or not tables:
        fix = "add [tables.NAME] with columns = [...], or [claims.NAME]"
        raise LscapeError("no tables or claims in the study file", str(path), fix)
    return [_spec_from(name, obj, str(path)) for name, obj in tables.items()]


@dataclass
class Joined:
    """What a paper table reads: the runs (in the report's order) and the slice and connect records."""

    runs: list[Run]
    rels: dict[str, str]
    slices: list[Record] = field(default_factory=list)
    connects: list[Record] = field(default_factory=list)


CellOf = Callable[[Run], Cell]


def _first_cell(records: list[Record], rels: dict[str, str], keep: Callable[[Record], bool], fn: Any) -> Cell:
    """The first record by path that passes ``keep`` and holds the value."""
    for rec in sorted(records, key=lambda r: rels[str(r.path)]):
        if keep(rec):
            cell: Cell = fn(rels[str(rec.path)], rec.data)
            if cell.sources:
                return cell
    return Cell(DASH)


def _probe_keeps(opts: dict[str, str], rels: dict[str, str]) -> Callable[[Record], bool]:
    def keep(rec: Record) -> bool:
        d = rec.data
        first = get(d, "/results/batches/per_batch/0") if get(d, "/results/batches") else get(d, "/results")
        method = get(first, "/lambda_max/method") or get(first, "/top_k/method")
        batches = get(d, "/results/batches/num_batches") if get(d, "/results/batches") else "whole"
        return (
            curvature.same(opts.get("split"), get(d, "/config/evaluation/split"))
            and curvature.same(opts.get("method"), method)
            and curvature.same(opts.get("batches"), batches)
            and opts.get("record", "") in rels[str(rec.path)]
        )

    return keep


def _slice_cell(name: str, opts: dict[str, str]) -> Callable[[str, dict[str, Any]], Cell]:
    def cell(r: str, d: dict[str, Any]) -> Cell:
        if name == "slice.sharpness_1d":
            return value_cell(
                r, d, "/results/sharpness_1d/value", str(get(d, "/results/sharpness_1d/method"))
            )
        if name == "slice.basin_width":
            return studies.basin_width_cell(r, d) if get(d, "/results/lines") else Cell(DASH)
        if name == "slice.basin_area":
            return studies.basin_area_cell(r, d) if get(d, "/results/plane") else Cell(DASH)
        if name == "slice.max_rise":
            return value_cell(r, d, "/results/plane/max_rise/value", "largest L − L(θ) over the plane")
        if name == "slice.quadratic":
            return studies.quadratic_cell(r, d)
        return value_cell(r, d, "/results/centre/loss")

    return cell


def _connect_cell(opts: dict[str, str], distance: bool) -> Callable[[str, dict[str, Any]], Cell]:
    path = opts.get("path", "linear")

    def cell(r: str, d: dict[str, Any]) -> Cell:
        if distance:
            return value_cell(r, d, f"/results/{path}/distance", "‖θ_B − θ_A‖₂")
        split, metric = opts.get("split", "test"), opts.get("metric", "loss")
        return studies.barrier_cell(r, d, path, split, metric, opts.get("definition", "max_minus_mean_ends"))

    return cell


def _check_options(col: Column, allowed: set[str], where: str) -> None:
    bad = sorted(set(col.opts) - allowed)
    if bad:
        raise LscapeError(
            f"{col.field} takes no option {', '.join(bad)}",
            where,
            f"its options: {', '.join(sorted(allowed)) or 'none'}",
        )


def column_cells(col: Column, joined: Joined, where: str) -> CellOf:
    """The function giving a run's cell for ``col`` (refuses an unknown field, listing the known ones)."""
    f, opts, rels = col.field, col.opts, joined.rels
    if f == "run":
        _check_options(col, set(), where)
        return run_cell
    if f in TRAIN or f in ("gap_acc", "gap_loss", "stop"):
        _check_options(col, set(), where)
        if f == "stop":
            return lambda run: stop_cell(run, run_values(run, rels))
        if f in ("gap_acc", "gap_loss"):
            return lambda run: gap_cell(run_values(run, rels), f)
        return lambda run: source_cell(run_values(run, rels).get(TRAIN[f][1]))
    probe = curvature.field_column(f, opts)
    if probe is not None:
        _check_options(col, PROBE_OPTIONS, where)
        if opts.get("stat", "max") not in ("max", "mean"):
            bad = f"{f} takes stat=max or stat=mean, not {opts['stat']!r}"
            raise LscapeError(bad, where, "use stat=mean")
        keep = _probe_keeps(opts, rels)
        return lambda run: _first_cell(run.probes, rels, keep, probe)
    if f in SLICE:
        _check_options(col, SLICE_OPTIONS, where)
        return _joined(joined.slices, rels, _slice_keeps(opts, rels), _slice_cell(f, opts), _sha_of_slice)
    if f in CONNECT:
        _check_options(col, CONNECT_OPTIONS, where)
        keep = lambda rec: opts.get("record", "") in rels[str(rec.path)]  # noqa: E731
        return _joined(
            joined.connects, rels, keep, _connect_cell(opts, f == "connect.distance"), _shas_of_connect
        )
    if any(key_source(run, f) is not None for run in joined.runs):
        _check_options(col, set(), where)
        return lambda run: source_cell(key_source(run, f))
    known = ["run", *TRAIN, "gap_acc", "gap_loss", "stop", *curvature.FIELDS, "lambda_K", *SLICE, *CONNECT]
    raise LscapeError(
        f"unknown column {f!r}", where, f"use a settings key (training.lr, ...) or {', '.join(known)}"
    )


def _slice_keeps(opts: dict[str, str], rels: dict[str, str]) -> Callable[[Record], bool]:
    def keep(rec: Record) -> bool:
        return (
            curvature.same(opts.get("dims"), get(rec.data, "/config/slice/dims"))
            and curvature.same(opts.get("directions"), get(rec.data, "/config/directions/kind"))
            and opts.get("record", "") in rels[str(rec.path)]
        )

    return keep


def _sha_of_slice(rec: Record) -> set[str]:
    return {str(get(rec.data, "/inputs/checkpoint/sha256"))}


def _shas_of_connect(rec: Record) -> set[str]:
    return {str(get(rec.data, f"/inputs/checkpoint_{e}/sha256")) for e in ("a", "b")}


def _joined(
    records: list[Record],
    rels: dict[str, str],
    keep: Callable[[Record], bool],
    fn: Callable[[str, dict[str, Any]], Cell],
    shas: Callable[[Record], set[str]],
) -> CellOf:
    return lambda run: _first_cell([r for r in records if run.key in shas(r)], rels, keep, fn)


def holds(run: Run, key: str, want: str) -> bool:
    """One ``where`` condition: ``run`` matches a glob, a setting equals a value; ``!`` negates."""
    if want.startswith("!"):
        return not holds(run, key, want[1:])
    if key == "run":
        return fnmatch.fnmatch(run.label, want)
    s = key_source(run, key)
    return s is not None and curvature.same(want, s.value)


def selected(where: tuple[tuple[str, str], ...], runs: list[Run]) -> list[Run]:
    """The runs meeting every ``where`` condition."""
    return [r for r in runs if all(holds(r, key, want) for key, want in where)]


def _sort_value(run: Run, key: str, cells: dict[str, Cell]) -> Any:
    if key in cells:
        cell = cells[key]
        return cell.value if cell.value is not None else (None if cell.text == DASH else cell.text)
    s = key_source(run, key) if key != "run" else None
    return s.value if s is not None else (run.label if key == "run" else None)


def build(spec: TableSpec, joined: Joined) -> Table:
    """The table ``spec`` asks for, from the runs and records ``joined`` holds."""
    where = f"--table {spec.name}"
    fns = [(col, column_cells(col, joined, where)) for col in spec.columns]
    runs = selected(spec.where, joined.runs)
    rows = []
    for run in runs:
        cells = [fn(run) for _, fn in fns]
        by_field: dict[str, Cell] = {}
        for col, cell in zip(spec.columns, cells, strict=True):
            by_field.setdefault(col.field, cell)
        rows.append((run, by_field, cells))
    for key in reversed(spec.sort):  # stable sorts: the first key decides, the next break ties
        name = key.lstrip("-")
        rows.sort(key=lambda t: sort_key(_sort_value(t[0], name, t[1])), reverse=key.startswith("-"))
    headers = [col.title() for col in spec.columns]
    table = Table(spec.name, spec.title or spec.name, headers, caption=spec.caption)
    if spec.group_by is None:
        table.rows = [cells for _, _, cells in rows]
        return table
    if not any(key_source(run, spec.group_by) is not None for run in runs):
        raise LscapeError(
            f"no run has the group key {spec.group_by!r}", where, "group by a settings key, e.g. model.depth"
        )
    return _grouped(table, spec.group_by, [(run, cells) for run, _, cells in rows])


def _grouped(table: Table, key: str, rows: list[tuple[Run, list[Cell]]]) -> Table:
    """One row per value of ``key``: mean ± std (ddof 1) of each numeric column over the group's runs."""
    groups: dict[Any, list[list[Cell]]] = {}
    for run, cells in rows:
        s = key_source(run, key)
        groups.setdefault(s.value if s else None, []).append(cells)
    table.columns = [key, "runs", *table.columns]
    table.caption = (table.caption + " " if table.caption else "") + (
        "mean ± std (ddof 1) over the runs of each group; each cell lists the records it averages"
    )
    for value in sorted(groups, key=sort_key):
        members = groups[value]
        row = [text_cell(value), text_cell(len(members), len(members))]
        row += [_aggregate([cells[j] for cells in members]) for j in range(len(table.columns) - 2)]
        table.rows.append(row)
    return table


def _aggregate(cells: list[Cell]) -> Cell:
    numbers = [c for c in cells if c.value is not None]
    if numbers and len(numbers) == len([c for c in cells if c.text != DASH]):
        sources: tuple[Source, ...] = tuple(s for c in numbers for s in c.sources)
        out = mean_std_cell([float(c.value) for c in numbers if c.value is not None], sources)
    else:
        texts = sorted({c.text for c in cells if c.text != DASH})
        out = Cell(texts[0] if len(texts) == 1 else (DASH if not texts else ", ".join(texts)))
    for c in cells:
        for flag in filter(None, c.badge.split("; ")):
            out.flag(flag)
    return out


def tables(specs: list[TableSpec], joined: Joined) -> list[Table]:
    """Every requested table, refusing two with one name."""
    names = [s.name for s in specs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise LscapeError(f"two tables named {dup[0]!r}", "--table", "give each table its own name")
    return [build(spec, joined) for spec in specs]
