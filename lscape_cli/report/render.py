"""Render a :class:`Document` as one self-contained HTML page, as Markdown, and its tables as CSV/LaTeX.

The HTML embeds every figure as a ``data:`` URI and its styles inline: it makes no network request and
needs no JavaScript. Each number's cell carries ``data-src``: a JSON list of ``[record, pointer, value]``
naming where it came from, and a tooltip (``title``) with its method and budget.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

from lscape_cli.report.cells import DASH, Cell, Table
from lscape_cli.report.document import Bullets, Document, Image

CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1d1d1f;
margin:0;background:#fafafa}
main{max-width:1200px;margin:0 auto;padding:16px 24px;background:#fff}
h1{font-size:24px;margin:8px 0}
h2{font-size:19px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:15px;margin:18px 0 6px}
nav ul{display:flex;flex-wrap:wrap;gap:4px 16px;padding:0;list-style:none;margin:8px 0}
.scroll{overflow-x:auto;max-width:100%;border:1px solid #e3e3e3}
table{border-collapse:collapse;font-size:12.5px;font-variant-numeric:tabular-nums}
th,td{padding:3px 6px;border-bottom:1px solid #eee;text-align:right;white-space:nowrap;vertical-align:top}
th{background:#f3f4f6;position:sticky;top:0;text-align:right;white-space:normal;min-width:3.5em;
max-width:11em;overflow-wrap:break-word}
td.wrap{white-space:normal;min-width:7em;max-width:16em;overflow-wrap:anywhere}
td .v{white-space:nowrap}
table[data-table=claims] td,table[data-table=claims] th{text-align:left}
th:first-child,td:first-child{text-align:left;position:sticky;left:0;background:#fff}
th:first-child{background:#f3f4f6}
tr:hover td{background:#f8fbff}
td[title]{cursor:help}
.caption{color:#555;font-size:12.5px;margin:4px 0 10px}
.badge{display:inline-block;background:#b42318;color:#fff;border-radius:3px;padding:0 4px;font-size:11px;
margin-left:2px;white-space:nowrap}
.warn{border:1px solid #f04438;background:#fef3f2;padding:8px 14px;border-radius:4px;margin:10px 0}
.warn ul{margin:4px 0;padding-left:18px}
ol.notes{font-size:12px;color:#444;padding-left:24px;overflow-wrap:anywhere}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(460px,1fr));gap:8px 16px}
.gallery figure{margin:6px 0}
figure{margin:14px 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:12.5px;color:#555}
footer{margin-top:32px;border-top:1px solid #ddd;font-size:12px;color:#555;overflow-wrap:anywhere}
code{font-size:12px}
@media print{@page{size:A4 landscape;margin:12mm}body{background:#fff;font-size:10px}
main{max-width:none;padding:0}.scroll{overflow:visible;border:0}nav,details{display:none}
table{font-size:8px;break-inside:auto}tr{break-inside:avoid}th,td{padding:1px 3px;white-space:normal}
th{position:static}th:first-child,td:first-child{position:static}
.badge{background:none;color:#b42318;border:1px solid #b42318}
figure{break-inside:avoid}.gallery{display:block}h2,h3{break-after:avoid}}
"""


LONG = 28  # characters: a cell with more text may wrap (a number with its ± and range stays whole)
SHORT = 16  # characters: a longer cell of several pieces may put each on its own line
BREAKS = re.compile(r"(?= ± | \(| \[| vs )")  # where a cell may break: before ±, (…), […] and "vs"


def display(cell: Cell) -> str:
    """A cell's visible text (its badge in brackets), the same in HTML, Markdown, CSV and LaTeX."""
    return f"{cell.text} [{cell.badge}]" if cell.badge else cell.text


def _td(cell: Cell) -> str:
    attrs = ""
    if cell.sources:
        src = json.dumps([[s.record, s.pointer, s.value] for s in cell.sources], ensure_ascii=False)
        attrs += f' data-src="{html.escape(src)}"'
    if cell.aggregate:
        attrs += f' data-aggregate="{cell.aggregate}"'
    if cell.note:
        attrs += f' title="{html.escape(cell.note)}"'
    pieces = BREAKS.split(cell.text)
    text = html.escape(cell.text)
    whole = max(map(len, pieces)) <= LONG  # each piece short enough to stay on one line
    if len(pieces) > 1 and len(cell.text) > SHORT and whole:  # "value ± err", "value [min, max]", "… vs …"
        attrs += ' class="wrap"'  # lines break between the pieces, never inside a number
        text = "".join(f'<span class="v">{html.escape(piece)}</span>' for piece in pieces)
    elif len(cell.text) > LONG:  # long text (a path, a list) may wrap anywhere
        attrs += ' class="wrap"'
    elif cell.badge:  # the number stays on one line, its flag may go under it
        attrs += ' class="wrap"'
        text = f'<span class="v">{text}</span>'
    badge = f' <span class="badge">[{html.escape(cell.badge)}]</span>' if cell.badge else ""
    return f"<td{attrs}>{text}{badge}</td>"


def _table_html(t: Table, section_title: str) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in t.columns)
    body = "\n".join("<tr>" + "".join(_td(c) for c in row) + "</tr>" for row in t.rows)
    parts = [
        f'<h3 id="table-{t.key}">{html.escape(t.title)}</h3>' if t.title != section_title else "",
        f'<div class="scroll"><table data-table="{t.key}"><thead><tr>{head}</tr></thead>',
        f"<tbody>\n{body}\n</tbody></table></div>",
    ]
    if t.caption:
        parts.append(f'<p class="caption">{html.escape(t.caption)}</p>')
    if t.footnotes:
        parts.append(
            '<ol class="notes">' + "".join(f"<li>{html.escape(n)}</li>" for n in t.footnotes) + "</ol>"
        )
    return "\n".join(parts)


def _image_html(img: Image) -> str:
    data = base64.b64encode(img.png).decode("ascii")
    cap = html.escape(img.title + (f" ({img.caption})" if img.caption else ""))
    alt = html.escape(img.title)
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{alt}"><figcaption>{cap}</figcaption></figure>'
    )


def _block_html(block: object, section_title: str) -> str:
    if isinstance(block, Table):
        return _table_html(block, section_title)
    if isinstance(block, Image):
        return _image_html(block)
    if isinstance(block, Bullets):
        items = "".join(f"<li>{html.escape(i)}</li>" for i in block.items)
        return f'<div class="warn"><ul>{items}</ul></div>' if block.warn else f"<ul>{items}</ul>"
    return f"<p>{html.escape(str(block))}</p>"


def _blocks_html(blocks: Sequence[object], section_title: str) -> list[str]:
    """Blocks in order; consecutive figures found beside records share a grid (they come in sets)."""
    out: list[str] = []
    gallery: list[str] = []
    for b in [*blocks, None]:
        if isinstance(b, Image) and b.file is not None:
            gallery.append(_image_html(b))
            continue
        if gallery:
            out.append('<div class="gallery">' + "".join(gallery) + "</div>")
            gallery = []
        if b is not None:
            out.append(_block_html(b, section_title))
    return out


def to_html(doc: Document) -> str:
    """The whole page."""
    nav = "".join(f'<li><a href="#{s.key}">{html.escape(s.title)}</a></li>' for s in doc.sections)
    body = []
    for s in doc.sections:
        body.append(f'<section id="{s.key}"><h2>{html.escape(s.title)}</h2>')
        body += _blocks_html(s.blocks, s.title)
        body.append("</section>")
    foot = "".join(f"<p>{html.escape(line)}</p>" for line in doc.footer[:2])
    commands = "".join(f"<li><code>{html.escape(c)}</code></li>" for c in doc.footer[2:])
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(doc.title)}</title><style>{CSS}</style></head>\n<body><main>\n"
        f"<h1>{html.escape(doc.title)}</h1>\n<p>{html.escape(doc.summary)}</p>\n<nav><ul>{nav}</ul></nav>\n"
        + "\n".join(body)
        + f"\n<footer>{foot}<details{' open' if len(doc.footer) <= 32 else ''}>"
        f"<summary>Command lines that produced the records, in the order they ran "
        f"({len(doc.footer) - 2})</summary>"
        f"<ol>{commands}</ol></details></footer>\n</main></body></html>\n"
    )


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table_md(t: Table, section_title: str) -> str:
    lines = [f"### {t.title}", ""] if t.title != section_title else []
    lines += ["| " + " | ".join(_md_cell(c) for c in t.columns) + " |"]
    lines.append("|" + "|".join([":--"] + ["--:"] * (len(t.columns) - 1)) + "|")
    lines += ["| " + " | ".join(_md_cell(display(c)) for c in row) + " |" for row in t.rows]
    if t.caption:
        lines += ["", f"*{t.caption}*"]
    if t.footnotes:
        lines += [""] + [f"{i}. {n}" for i, n in enumerate(t.footnotes, 1)]
    return "\n".join(lines)


def to_markdown(doc: Document, image_links: dict[int, str]) -> str:
    """The same content as Markdown; ``image_links`` maps ``id(image)`` to its relative path."""
    out = [f"# {doc.title}", "", doc.summary, ""]
    for s in doc.sections:
        out += [f"## {s.title}", ""]
        for b in s.blocks:
            if isinstance(b, Table):
                out.append(_table_md(b, s.title))
            elif isinstance(b, Image):
                out.append(
                    f"![{b.title}]({image_links[id(b)]})" + (f"\n\n*{b.caption}*" if b.caption else "")
                )
            elif isinstance(b, Bullets):
                out.append("\n".join(f"- {'**[!]** ' if b.warn else ''}{i}" for i in b.items))
            else:
                out.append(str(b))
            out.append("")
    out += ["---", ""] + [f"{line}  " for line in doc.footer[:2]] + [""]
    out += ["Command lines that produced the records, in the order they ran:", ""]
    out += [f"{i}. `{c}`" for i, c in enumerate(doc.footer[2:], 1)]
    return "\n".join(out) + "\n"


def _numeric(cell: Cell) -> bool:
    """Whether a cell is missing or shows only numbers (its text is then rebuilt from them)."""
    parts = (cell.value, cell.err, cell.lo, cell.hi, *(v for _, v in cell.extra))
    return cell.text == DASH or any(isinstance(v, (int, float)) for v in parts)


def _csv_number(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value).lower()
    if isinstance(value, (int, float)):
        return repr(value) if isinstance(value, float) and math.isfinite(value) else str(value)
    return str(value)


def _attr(name: str) -> Callable[[Cell], Any]:
    return lambda c: getattr(c, name)


def _extra(key: str) -> Callable[[Cell], Any]:
    return lambda c: dict(c.extra).get(key)


def _csv_columns(t: Table, j: int) -> list[tuple[str, Callable[[Cell], Any]]]:
    """The CSV columns of table column ``j``: numbers (value, ±, min, max, extras) or text, then flags."""
    cells = [row[j] for row in t.rows]
    name = t.columns[j]
    out: list[tuple[str, Callable[[Cell], Any]]] = []
    if cells and all(_numeric(c) for c in cells):
        for suffix, attr in (("", "value"), (" ±", "err"), (" min", "lo"), (" max", "hi")):
            if any(getattr(c, attr) is not None for c in cells):
                out.append((name + suffix, _attr(attr)))
        for suffix in dict.fromkeys(k for c in cells for k, _ in c.extra):
            out.append((f"{name} {suffix}", _extra(suffix)))
    else:
        out.append((name, lambda c: "" if c.text == DASH else c.text))
    if any(c.badge for c in cells):
        out.append((f"{name} flags", lambda c: c.badge))
    return out


def to_csv(t: Table) -> str:
    """The table as numbers: each value, its uncertainty and range, and its flags in columns of their own.

    A column of numbers becomes ``NAME`` (the value), ``NAME ±`` (error bound, standard error or std),
    ``NAME min``/``NAME max`` (over batches) and its extras as present; text columns keep their text.
    ``NAME flags`` holds the column's flags (``not converged``, ``censored``, ...) where any has one.
    """
    buf = io.StringIO()
    if t.csv_rows is not None:  # a table whose numbers are not its cells' (the claims)
        names = list(dict.fromkeys(k for row in t.csv_rows for k in row))
        rows = csv.writer(buf, lineterminator="\n")
        rows.writerow(names)
        rows.writerows([_csv_number(row.get(k)) for k in names] for row in t.csv_rows)
        return buf.getvalue()
    cols = [(j, name, fn) for j in range(len(t.columns)) for name, fn in _csv_columns(t, j)]
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([name for _, name, _ in cols])
    writer.writerows([_csv_number(fn(row[j])) for j, _, fn in cols] for row in t.rows)
    return buf.getvalue()


LATEX = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "λ": r"$\lambda$",
    "ε": r"$\varepsilon$",
    "σ": r"$\sigma$",
    "η": r"$\eta$",
    "ρ": r"$\rho$",
    "θ": r"$\theta$",
    "α": r"$\alpha$",
    "‖": r"$\|$",
    "·": r"$\cdot$",
    "×": r"$\times$",
    "−": r"$-$",
    "–": "--",
    "₂": r"$_2$",
    "→": r"$\to$",
    "≤": r"$\le$",
    "κ": r"$\kappa$",
}


def latex_escape(text: str) -> str:
    """Text safe inside a LaTeX tabular cell (Greek letters and symbols in math mode)."""
    return "".join(LATEX.get(ch, ch) for ch in text)


def to_latex(t: Table, origin: str) -> str:
    r"""A ``booktabs`` table (needs ``\usepackage{booktabs}``), cells as shown in the report."""
    spec = "l" + "r" * (len(t.columns) - 1)
    rows = [" & ".join(latex_escape(display(c)) for c in row) + r" \\" for row in t.rows]
    return "\n".join(
        [
            f"% {t.title}: written by lscape report from {origin}; "
            "values and their sources are in the HTML report.",
            r"\begin{table}[ht]",
            r"\centering",
            rf"\caption{{{latex_escape(t.title)}}}",
            rf"\label{{tab:lscape-{t.key}}}",
            rf"\begin{{tabular}}{{{spec}}}",
            r"\toprule",
            " & ".join(latex_escape(c) for c in t.columns) + r" \\",
            r"\midrule",
            *rows,
            r"\bottomrule",
            r"\end{tabular}",
            *(
                [r"\par\footnotesize"] + [rf"[{i}] {latex_escape(n)}\\" for i, n in enumerate(t.footnotes, 1)]
                if t.footnotes
                else []
            ),
            r"\end{table}",
            "",
        ]
    )
