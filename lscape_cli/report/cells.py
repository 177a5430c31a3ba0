"""Table cells that remember where each number came from.

Every number in a report table is a :class:`Cell` whose ``sources`` name the record (path relative to
the report) and the JSON pointer of each value shown, so HTML carries them as ``data-src`` and a reader
(or a test) can trace any number back to its record. Aggregates (group means) list all their sources.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

DASH = "–"  # shown where a run has no value for a column


@dataclass(frozen=True)
class Source:
    """One value shown in a cell: the record it came from and where inside it."""

    record: str  # path of the JSON record, relative to the report's directory
    pointer: str  # RFC 6901 JSON pointer, e.g. "/results/lambda_max/estimate"
    value: Any


@dataclass
class Cell:
    """What a table shows in one place, its sources, and the protocol behind it (tooltip)."""

    text: str
    sources: tuple[Source, ...] = ()
    note: str = ""  # protocol / method, shown as a tooltip in HTML
    aggregate: str = ""  # "mean_std" when the cell summarises its sources
    badge: str = ""  # flags ("stale", "not converged", ...), shown next to the text everywhere
    sort: float | None = None  # numeric value for ordering
    value: float | None = None  # the number shown (CSV: its own column)
    err: float | None = None  # its uncertainty (error bound, standard error or std over batches)
    lo: float | None = None  # its range [lo, hi] (min and max over batches), when shown
    hi: float | None = None
    extra: tuple[tuple[str, Any], ...] = ()  # further CSV columns: (suffix, value), e.g. the verdict

    def flag(self, text: str) -> Cell:
        """Add a visible flag (several join with ``; ``); returns the cell."""
        if text and text not in self.badge.split("; "):
            self.badge = f"{self.badge}; {text}" if self.badge else text
        return self


@dataclass
class Table:
    """A titled table; ``key`` names its CSV/LaTeX files."""

    key: str
    title: str
    columns: list[str]
    rows: list[list[Cell]] = field(default_factory=list)
    caption: str = ""  # shown under the table (definitions, protocol)
    footnotes: list[str] = field(default_factory=list)  # numbered [1], [2], ... from row cells
    csv_rows: list[dict[str, Any]] | None = None  # the CSV's rows when they are not the cells' numbers


def fmt(value: Any) -> str:
    """4 significant digits for floats, integers as they are, ``–`` for missing values."""
    if value is None:
        return DASH
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return DASH
        return f"{value:.4g}"
    return str(value)


def fmt_err(value: Any) -> str:
    """An uncertainty: 2 significant digits."""
    return f"{value:.2g}" if isinstance(value, float) and math.isfinite(value) else fmt(value)


def get(data: Any, pointer: str) -> Any:
    """The value at a JSON pointer (``None`` when any step is missing)."""
    node = data
    for part in pointer.strip("/").split("/") if pointer.strip("/") else []:
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def value_cell(record: str, data: Any, pointer: str, note: str = "") -> Cell:
    """A cell showing one value of a record."""
    value = get(data, pointer)
    if value is None:
        return Cell(DASH, note=note)
    return Cell(fmt(value), (Source(record, pointer, value),), note, sort=_num(value), value=_num(value))


def pm_cell(record: str, data: Any, mean_ptr: str, err_ptr: str, note: str = "") -> Cell:
    """``value ± uncertainty`` from two pointers (just the value when the uncertainty is absent)."""
    value, err = get(data, mean_ptr), get(data, err_ptr)
    if value is None:
        return Cell(DASH, note=note)
    sources = [Source(record, mean_ptr, value)]
    text = fmt(value)
    if err is not None:
        sources.append(Source(record, err_ptr, err))
        text += f" ± {fmt_err(err)}"
    return Cell(text, tuple(sources), note, sort=_num(value), value=_num(value), err=_num(err))


def extreme_cell(record: str, data: Any, base: str, index: str, largest: bool, note: str = "") -> Cell:
    """An extreme eigenvalue with its two different bounds: ``θ (−a/+b)`` (λmax) or ``θ (−b/+a)`` (λmin).

    ``base`` points at the object holding ``estimate``/``error_bound``/``nearest_eigenvalue_bound``
    (``index`` "" for ``lambda_max``/``lambda_min``) or at ``top_k`` with its plural lists
    (``index`` "/0"). The side towards the spectrum's interior is certain from the residual (some
    eigenvalue lies within the nearest-eigenvalue bound, so λmax ≥ θ − a); the outer side is the
    extreme-eigenvalue certificate ``error_bound``. A record without the nearest bound shows ``θ ± b``.
    """
    plural = "s" if index else ""
    ptrs = (f"{base}/{'eigenvalues' if index else 'estimate'}{index}", f"{base}/error_bound{plural}{index}")
    near_ptr = f"{base}/nearest_eigenvalue_bound{plural}{index}"
    value, err, near = get(data, ptrs[0]), get(data, ptrs[1]), get(data, near_ptr)
    if value is None or _num(err) is None or _num(near) is None:
        return pm_cell(record, data, *ptrs, note)
    inner, outer = (value - near, value + err) if largest else (value + near, value - err)
    lo, hi = min(inner, outer), max(inner, outer)
    below, above = (near, err) if largest else (err, near)
    sources = (Source(record, ptrs[0], value), Source(record, ptrs[1], err), Source(record, near_ptr, near))
    text = f"{fmt(value)} (−{fmt_err(below)}/+{fmt_err(above)})"
    why = "the inner side certain from the residual, the outer the extreme-eigenvalue certificate"
    return Cell(
        text,
        sources,
        f"{note}; {why}" if note else why,
        sort=_num(value),
        value=_num(value),
        err=_num(err),
        lo=_num(lo),
        hi=_num(hi),
    )


def spread_cell(record: str, data: Any, base: str, note: str = "") -> Cell:
    """``mean ± std [min, max]`` of a per-batch summary (``base`` points at its object)."""
    summary = get(data, base)
    if not isinstance(summary, dict) or summary.get("mean") is None:
        return Cell(DASH, note=note)
    if summary.get("n") == 1:  # one batch: no spread to show
        mean = summary["mean"]
        one = "one batch" if not note else f"{note} (one batch)"
        first = (Source(record, f"{base}/mean", mean),)
        return Cell(fmt(mean), first, one, sort=_num(mean), value=_num(mean))
    parts = [(k, summary.get(k)) for k in ("mean", "std", "min", "max")]
    sources = tuple(Source(record, f"{base}/{k}", v) for k, v in parts if v is not None)
    mean, std, lo, hi = (v for _, v in parts)
    text = fmt(mean) + (f" ± {fmt_err(std)}" if std is not None else "")
    if lo is not None and hi is not None:
        text += f" [{fmt(lo)}, {fmt(hi)}]"
    value = _num(mean)
    return Cell(text, sources, note, sort=value, value=value, err=_num(std), lo=_num(lo), hi=_num(hi))


def mean_std_cell(
    values: list[float], sources: tuple[Source, ...], note: str = "", aggregate: str = "mean_std"
) -> Cell:
    """``mean ± std`` (ddof 1) of values taken from several records, listing every source."""
    if not values:
        return Cell(DASH, note=note)
    mean = math.fsum(values) / len(values)
    text, std = fmt(mean), None
    if len(values) > 1:
        std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1))
        text += f" ± {fmt_err(std)}"
    note = note or f"mean ± std over {len(values)} runs"
    return Cell(text, sources, note, aggregate, sort=mean, value=mean, err=std)


def sources_mean_std(sources: list[Source], note: str = "") -> Cell:
    """:func:`mean_std_cell` of the numeric values of ``sources``."""
    numeric = [s for s in sources if _num(s.value) is not None]
    return mean_std_cell([float(s.value) for s in numeric], tuple(numeric), note)


def text_cell(text: Any, sort: float | None = None, note: str = "") -> Cell:
    """A cell of plain text (names, settings); a number keeps its value for the CSV."""
    return Cell(fmt(text), note=note, sort=sort, value=_num(text))


def number_cell(value: float, sources: tuple[Source, ...], note: str = "", aggregate: str = "") -> Cell:
    """A cell showing a number computed from its sources (a gap, a difference)."""
    return Cell(fmt(value), sources, note, aggregate, sort=value, value=value)


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if not math.isfinite(value):
        return None
    return value if isinstance(value, int) else float(value)  # integers stay integers in the CSV
