"""`lscape report`: every number traces to its record, the page is self-contained, stale inputs flagged."""

from __future__ import annotations

import copy
import csv
import json
import math
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from typer.testing import Result

from lscape_cli.report import curvature, figures
from lscape_cli.report.cells import fmt, fmt_err, get
from lscape_cli.report.render import latex_escape
from lscape_cli.report.runs import join
from lscape_cli.storage.study import checkpoint_metadata, scan

NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?")


class Page(HTMLParser):
    """Tables (cells with their attributes and text), every src/href, and the sections of a report."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[tuple[dict[str, str], str]]]] = {}
        self.links: list[tuple[str, str, str]] = []  # tag, attribute, value
        self.sections: list[str] = []
        self._table: str | None = None
        self._cell: dict[str, str] | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.links += [(tag, k, v) for k, v in a.items() if k in ("src", "href")]
        if tag == "section":
            self.sections.append(a["id"])
        if tag == "table":
            self._table = a["data-table"]
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table:
            self._cell, self._text = a, []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._table:
            self.tables[self._table][-1].append((self._cell, "".join(self._text)))
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._text.append(data)


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory, cli: Callable[..., Result], tiny_args: Any) -> Path:
    """Two depths (2 + 1 restarts), probed (one per batch), a 1-D slice, a connect and a pareto record."""
    root = tmp_path_factory.mktemp("study")
    for depth, restarts in ((1, 2), (2, 1)):
        r = cli(*tiny_args(root / f"d{depth}", "--depth", depth, "--restarts", restarts, "--eval-every", 1))
        assert r.exit_code == 0, r.output
    probe = (
        "--top-k",
        "2",
        "--trace",
        "--frobenius",
        "--matvecs",
        "12",
        "--sharpness",
        "0.05",
        "--stability",
    )
    extra = ("--lambda-min", "--density", "--density-runs", "2", "--density-steps", "8", "--noise", "0.01",
             "--noise-samples", "3", "--pac-bayes")  # fmt: skip
    for ckpt in sorted(root.glob("d*/*.safetensors")):
        r = cli("probe", ckpt, *probe, *(extra if ckpt.parent.name == "d2" else ()), "--quiet")
        assert r.exit_code == 0, r.output
    a, b = root / "d1/model-r000.safetensors", root / "d1/model-r001.safetensors"
    r = cli(
        "probe",
        a,
        "--lambda-max",
        "--num-batches",
        "2",
        "--batch-size",
        "16",
        "--split",
        "test",
        "--out",
        root / "d1/model-r000.batches.probe.json",
        "--quiet",
    )
    assert r.exit_code == 0, r.output
    r = cli("slice", a, "--dims", "1", "--count", "2", "--steps", "5", "--range", "0.5", "--quiet")
    assert r.exit_code == 0, r.output
    r = cli("connect", a, b, "--points", "5", "--quiet")
    assert r.exit_code == 0, r.output
    r = cli(
        "pareto",
        root,
        "--group-by",
        "model.depth",
        "--x",
        "train_loss",
        "--y",
        "frobenius",
        "--no-params",
        "--out",
        root / "pareto.json",
        "--quiet",
    )
    assert r.exit_code == 0, r.output
    return root


@pytest.fixture(scope="module")
def report(study: Path, tmp_path_factory: pytest.TempPathFactory, cli: Callable[..., Result]) -> Path:
    out = tmp_path_factory.mktemp("report") / "report.html"
    r = cli("report", study, "--group-by", "model.depth", "--compare", "model.depth", "--out", out)
    assert r.exit_code == 0, r.output
    return out


def _load(base: Path, name: str) -> Any:
    path = base / name
    if name.endswith(".safetensors"):
        return checkpoint_metadata(path)
    return json.loads(path.read_text())


def _shown(text: str) -> list[float]:
    return [float(m) for m in NUMBER.findall(text.replace("−", "-"))]


def _close(shown: float, value: float) -> bool:
    return math.isclose(shown, value, rel_tol=6e-4, abs_tol=1e-12)


def test_every_number_comes_from_its_record(report: Path) -> None:
    page = parse(report)
    checked = 0
    for name, rows in page.tables.items():
        for row in rows[1:]:
            for attrs, text in row:
                if "data-src" not in attrs:
                    continue
                sources = json.loads(attrs["data-src"])
                values = [v for _, _, v in sources]
                for rec, pointer, value in sources:
                    assert get(_load(report.parent, rec), pointer) == value, (name, rec, pointer)
                numeric = [
                    float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)
                ]
                kind = attrs.get("data-aggregate")
                if kind == "mean_std" and numeric:
                    assert _close(_shown(text)[0], sum(numeric) / len(numeric)), (name, text)
                elif kind == "mean_std_gap":
                    gaps = [a - b for a, b in zip(numeric[::2], numeric[1::2], strict=True)]
                    assert _close(_shown(text)[0], sum(gaps) / len(gaps)), (name, text)
                elif kind == "difference":
                    assert _close(_shown(text)[0], numeric[0] - numeric[1]), (name, text)
                elif kind is None and numeric:
                    assert _close(_shown(text)[0], numeric[0]), (name, text, numeric)
                checked += 1
    assert checked > 50
    assert {"inventory", "curvature", "groups", "slices", "connect", "pareto"} <= set(page.tables)


def curvature_rows(page: Page) -> list[list[tuple[dict[str, str], str]]]:
    """The curvature table's rows, with the flatness table's columns when it was split in two."""
    cur, flat = page.tables["curvature"], page.tables.get("flatness")
    if flat is None:
        return cur
    return [c[:-1] + f[2:] for c, f in zip(cur, flat, strict=True)]  # the same rows, in one order


def test_curvature_rows_and_protocol(report: Path, study: Path) -> None:
    page = parse(report)
    assert [t for _, t in page.tables["flatness"][0]][:3] == ["run", "split", "ε-sharpness (l2, ε=0.05)"]
    rows = curvature_rows(page)
    header = [t for _, t in rows[0]]
    assert header[:4] == ["run", "split", "λ1", "λ2"] and "trace" in header and "η·λmax (stability)" in header
    for column in ("λmin", "condition number", "effective rank", "noise loss rise (σ=0.01)", "PAC-Bayes σ"):
        assert column in header
    by_run = {(r[0][1], r[1][1]): r for r in rows[1:]}
    batched = by_run[("d1/model-r000", "test")]
    rec = json.loads((study / "d1/model-r000.batches.probe.json").read_text())
    s = rec["results"]["batches"]["summary"]["lambda_max"]
    text = batched[2][1]
    assert "[" in text and _close(_shown(text)[0], s["mean"]) and _close(_shown(text)[-1], s["max"])
    assert "lanczos" in by_run[("d1/model-r000", "train")][2][0]["title"]  # method in the tooltip
    size = rec["config"]["batch_size"]
    note = batched[-1][0]["title"]  # the protocol footnote: batches, eigen method
    assert f"{rec['config']['num_batches']} disjoint batches of {size}" in note and "λmax by lanczos" in note
    assert len(rows) - 1 == 4  # three probes on train, one per batch on test


def test_page_is_self_contained(report: Path) -> None:
    page = parse(report)
    html = report.read_text()
    for tag, attr, value in page.links:
        assert not value.startswith(("http://", "https://", "//")), (tag, attr, value)
        if tag == "img":
            assert value.startswith("data:image/png;base64,")
        if tag == "a":
            assert value.startswith("#")
    assert "<script" not in html and "<link" not in html and "@import" not in html
    imgs = [v for t, _, v in page.links if t == "img"]
    assert len(imgs) >= 5  # loss, accuracy, versus, slice lines, connect, pareto figures
    assert {"inventory", "curvature", "groups", "training", "versus", "slice", "connect", "pareto"} <= set(
        page.sections
    )


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _check_csv_row(
    header: list[str], html_row: list[tuple[dict[str, str], str]], rec: dict[str, str]
) -> None:
    """Each CSV number is the one the page shows (4 digits there), flags are shown in the page's text."""
    for col, (attrs, text) in zip(header, html_row, strict=True):
        text = text.strip()
        for flag in filter(None, rec.get(f"{col} flags", "").split("; ")):
            assert flag in text and text.endswith("]"), (col, flag, text)
        value = _float(rec.get(col, ""))
        if value is None:
            assert rec.get(col, text) in (text, "") or text.startswith(rec[col]), (col, rec.get(col), text)
            continue
        assert text.startswith(fmt(value)), (col, value, text)
        if attrs.get("data-src") and not attrs.get("data-aggregate"):
            assert value in [v for _, _, v in json.loads(attrs["data-src"])], (col, value, attrs)
        err, lo, hi = (_float(rec.get(f"{col}{s}", "")) for s in (" ±", " min", " max"))
        if err is not None and "(−" in text:  # an extreme eigenvalue: (−below/+above), ± is the outer side
            assert lo is not None and hi is not None and lo <= value <= hi, (col, rec)
            assert f"/+{fmt_err(err)})" in text or f"(−{fmt_err(err)}/" in text, (col, text)
        elif err is not None:
            assert f"± {fmt_err(err)}" in text, (col, text)


def test_csv_holds_numbers_latex_the_text(report: Path) -> None:
    """CSV: every number as a number (value, ±, min, max), flags in columns of their own; LaTeX: the text."""
    page = parse(report)
    folder = report.with_name("report-tables")
    assert sorted(p.stem for p in folder.glob("*.csv")) == sorted(page.tables)
    for name, rows in page.tables.items():
        html_rows = [[t.strip() for _, t in row] for row in rows]
        header = html_rows[0]
        with open(folder / f"{name}.csv", newline="") as fh:
            records = list(csv.DictReader(fh))
        assert len(records) == len(rows) - 1, name
        for html_row, rec in zip(rows[1:], records, strict=True):
            _check_csv_row(header, html_row, rec)
        tex = (folder / f"{name}.tex").read_text()
        assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex
        for row in html_rows:
            assert " & ".join(latex_escape(t) for t in row) + r" \\" in tex.splitlines(), (name, row)


def test_markdown_twin(report: Path) -> None:
    md = report.with_suffix(".md").read_text()
    page = parse(report)
    for rows in page.tables.values():
        for row in rows[1:]:
            assert "| " + " | ".join(t.strip().replace("|", "\\|") for _, t in row) + " |" in md
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert (report.parent / link).is_file(), link


def test_stale_and_missing_checkpoints_are_flagged(
    study: Path, tmp_path: Path, cli: Callable[..., Result]
) -> None:
    copy_dir = tmp_path / "study"
    shutil.copytree(study, copy_dir)
    with open(copy_dir / "d1/model-r001.safetensors", "ab") as fh:
        fh.write(b"\0")
    (copy_dir / "d2/model.safetensors").unlink()
    out = tmp_path / "r.html"
    r = cli("report", copy_dir, "--out", out)
    assert r.exit_code == 0, r.output
    page = parse(out)
    badges = {row[0][1] for row in page.tables["inventory"][1:] if "[stale]" in row[0][1]}
    assert badges == {"d1/model-r001 [stale]", "d2 [stale]"}
    html = out.read_text()
    assert 'class="warn"' in html and "changed since the record was written" in html and "is missing" in html
    assert "Stale:" in r.stderr


def test_tracked_quantities_are_plotted(tiny_run: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    """Train records whose history holds probe-style objects under "tracked" get one panel each."""
    from lscape_cli.report import figures
    from lscape_cli.report.runs import join
    from lscape_cli.storage.study import scan

    base = json.loads((tiny_run / "model.train.json").read_text())
    for i, opt in enumerate(("sgd", "adam")):
        rec = copy.deepcopy(base)
        rec["config"]["training"]["optimizer"] = opt
        rec["results"]["checkpoint"] = None  # a synthetic record: no checkpoint of its own
        for h in rec["results"]["history"]:
            e = h["epoch"]
            h["tracked"] = {
                "lambda_max": {
                    "estimate": 10.0 * e + i,
                    "residual": 1e-6,
                    "converged": True,
                    "num_matvecs": 20,
                },
                "trace": {"estimate": 100.0 + e, "stderr": 2.0, "method": "hutch++", "num_matvecs": 30},
                "top_k": {"eigenvalues": [10.0 * e, 5.0 * e], "residuals": [1e-6, 1e-6]},
            }
        (tmp_path / f"{opt}.train.json").write_text(json.dumps(rec))
    runs = join(scan([tmp_path]).records, tmp_path, tmp_path)
    panels = {p.title.split()[0]: p for p in figures._tracked_panels(runs, "training.optimizer")}
    assert set(panels) == {"lambda_max", "trace", "top_k"}
    trace = panels["trace"].series[0]
    assert trace.low == [v - 2.0 for v in trace.values] and trace.high == [v + 2.0 for v in trace.values]
    assert sorted(s.colour_key for s in panels["lambda_max"].series) == ["adam", "sgd"]
    assert len(panels["top_k"].series) == 4  # two eigenvalues per run
    out = tmp_path / "r.html"
    r = cli("report", tmp_path, "--compare", "training.optimizer", "--out", out)
    assert r.exit_code == 0, r.output
    assert "Quantities tracked during training" in out.read_text()


def test_bad_input(tmp_path: Path, study: Path, cli: Callable[..., Result], error_line: Any) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    line = error_line(cli("report", empty, "--out", tmp_path / "r.html"))
    assert line == f"Error: no lscape records under {empty} (run lscape train/probe first)"
    line = error_line(cli("report", study, "--compare", "model.colour", "--out", tmp_path / "r.html"))
    assert (
        line.startswith("Error: unknown key 'model.colour': --compare (known keys: run, ")
        and "model.depth" in line
    )
    line = error_line(cli("report", study, "--group-by", "run", "--out", tmp_path / "r.html"))
    assert line.startswith("Error: unknown key 'run': --group-by (known keys: dataset.")  # nothing to group
    newer = tmp_path / "newer"
    newer.mkdir()
    rec = json.loads((study / "d2/model.probe.json").read_text())
    (newer / "x.probe.json").write_text(json.dumps({**rec, "schema": "lscape.probe/2"}))
    line = error_line(cli("report", newer, "--out", tmp_path / "r.html"))
    assert "lscape.probe/2" in line and "lscape.probe/1" in line and "newer" in line
    assert not (tmp_path / "r.html").exists()


def test_foreign_json_skipped_and_nothing_else_written(
    study: Path, tmp_path: Path, cli: Callable[..., Result]
) -> None:
    src = tmp_path / "s"
    shutil.copytree(study / "d2", src)
    (src / "other.json").write_text('{"hello": 1}')
    (src / "broken.json").write_text("{not json")
    before = sorted(p.relative_to(src) for p in src.rglob("*"))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    for _ in range(2):  # the second run replaces the first
        r = cli("report", src, "--out", out_dir / "r.html")
        assert r.exit_code == 0, r.output
    assert sorted(p.relative_to(src) for p in src.rglob("*")) == before
    assert sorted(p.name for p in out_dir.iterdir()) == ["r-figures", "r-tables", "r.html", "r.md"]
    warnings = [ln for ln in r.stderr.splitlines() if ln.startswith("Warning: skipped")]
    assert (
        len(warnings) == 2
        and any("other.json" in w for w in warnings)
        and any("broken.json" in w for w in warnings)
    )


def test_readme_example_on_the_samples(tmp_path: Path, cli: Callable[..., Result]) -> None:
    """README: lscape report sample_checkpoints/ --compare model.name --out ... (samples copied)."""
    samples = Path(__file__).parents[1] / "sample_checkpoints"
    shutil.copytree(
        samples, tmp_path / "s", ignore=shutil.ignore_patterns("report*", "*.probe.json", "*.slice*", "*--*")
    )
    out = tmp_path / "s/report.html"
    r = cli("report", tmp_path / "s", "--compare", "model.name", "--out", out)
    assert r.exit_code == 0, r.output
    rows = parse(out).tables["inventory"]
    assert len(rows) - 1 == len(list(samples.glob("*.train.json")))
    assert [row[1][1] for row in rows[1:]] == sorted(row[1][1] for row in rows[1:])  # ordered by model.name


def test_report_does_not_import_torch(report: Path, study: Path, tmp_path: Path) -> None:
    argv = ["report", str(study), "--out", str(tmp_path / "r.html"), "--quiet"]
    code = (
        f"import sys; from lscape_cli.cli import app; app({argv!r}, standalone_mode=False); "
        "print('torch' in sys.modules)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "False", res.stderr


def test_json_summary(study: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    r = cli("report", study, "--out", tmp_path / "r.html", "--json")
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["runs"] == 3 and res["records"] == {
        "connect": 1,
        "pareto": 1,
        "probe": 4,
        "slice": 1,
        "train": 3,
    }
    assert Path(res["html"]).is_file() and Path(res["markdown"]).is_file()
    assert "inventory.csv" in res["tables"] and "inventory.tex" in res["tables"]
    assert all((Path(res["tables_dir"]) / t).is_file() for t in res["tables"])
    assert all((Path(res["figures_dir"]) / f).is_file() for f in res["figures"]) and res["figures"]


def test_slices_compared_across_models(study: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    """One figure, one row per model, from the random-direction slice records only.

    d1/model-r001 has only a --toward slice: a data-dependent direction, so it gets no row.
    """
    root = tmp_path / "s"
    shutil.copytree(study, root, ignore=shutil.ignore_patterns("report*", "pareto*", "*.connect.*"))
    d1, d2 = root / "d1/model-r000.safetensors", next((root / "d2").glob("*.safetensors"))
    for args in (
        (d2, "--dims", "2", "--steps", "3", "--range", "0.5"),
        (root / "d1/model-r001.safetensors", "--toward", d1, "--dims", "1", "--steps", "3", "--out",
         root / "d1/model-r001.toward.json"),
    ):  # fmt: skip
        r = cli("slice", *args, "--quiet")
        assert r.exit_code == 0, r.output
    out = root / "report.html"
    r = cli("report", root, "--compare", "model.depth", "--out", out)
    assert r.exit_code == 0, r.output
    html = out.read_text()
    figures = re.findall(r'<img src="data:image/png;base64,[^"]+" alt="([^"]*)"><figcaption>([^<]*)<', html)
    compared = [cap for alt, cap in figures if alt == "Slices compared across models"]
    assert len(compared) == 1
    listing = compared[0].removesuffix(")").split("records: ")[1].split("; ")  # figcaption: title (caption)
    assert listing == [  # ordered by --compare (depth 1 before 2), each row names its records
        "d1/model-r000 (model.depth = 1): d1/model-r000.slice.json",
        f"{'d2' if d2.stem == 'model' else 'd2/' + d2.stem} (model.depth = 2): d2/{d2.stem}.slice.json",
    ]  # a run is named by its folder (and its file, unless that is the default "model")
    assert "toward" not in compared[0]
    png = out.with_name("report-figures") / "slices-compared.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    section = html[html.index('<section id="slice"') :]
    section = section[: section.index("</section>")]
    assert "Slices compared across models" in section  # in the Slices section, after its table
    assert section.index("<table") < section.index("Slices compared across models")


# ---------------------------------------------- several probe records per checkpoint, stability verdicts
# Values are grouped by the settings they were measured under, never "the first probe record"; every
# record with a stability check gets a verdict (batched ones included) with its uncertainty.

SHARPNESS = {  # checkpoint -> (record suffix, probe options): r001 has no l2 record at ε = 0.05
    "model-r000": [("probe", ("--sharpness", "0.05,0.1")), ("adaptive.probe", ("--sharpness", "0.05"))],
    "model-r001": [("probe", ("--sharpness", "0.1")), ("adaptive.probe", ("--sharpness", "0.05"))],
}


@pytest.fixture(scope="module")
def probed(tmp_path_factory: pytest.TempPathFactory, cli: Callable[..., Result], tiny_args: Any) -> Path:
    """Two restarts, each probed three ways: l2 and adaptive ε-sharpness, and λmax over 3 batches."""
    root = tmp_path_factory.mktemp("settings")
    r = cli(*tiny_args(root, "--restarts", 2, "--optimizer", "sgd", "--lr", 0.1, "--momentum", 0.5))
    assert r.exit_code == 0, r.output
    for name, probes_ in SHARPNESS.items():
        ckpt = root / f"{name}.safetensors"
        for suffix, opts in probes_:
            kind = "adaptive" if suffix.startswith("adaptive") else "l2"
            args = ("--sharpness-kind", kind, "--directions", "3", "--stability")
            r = cli("probe", ckpt, *opts, *args, "--out", root / f"{name}.{suffix}.json", "--quiet")
            assert r.exit_code == 0, r.output
        batches = ("--num-batches", "3", "--batch-size", "16", "--stability")
        r = cli(
            "probe", ckpt, "--lambda-max", *batches, "--out", root / f"{name}.batches.probe.json", "--quiet"
        )
        assert r.exit_code == 0, r.output
    return root


def _rows(page: Any, table: str) -> tuple[list[str], list[list[tuple[dict[str, str], str]]]]:
    rows = page.tables[table]
    return [t for _, t in rows[0]], rows[1:]


def _records(attrs: dict[str, str]) -> set[str]:
    return {rec for rec, _, _ in json.loads(attrs.get("data-src", "[]"))}


def test_sharpness_columns_never_mix_kinds_or_radii(probed: Path, cli: Callable[..., Result]) -> None:
    """Each ε-sharpness column holds one kind at one radius; a record without it shows –."""
    out = probed / "report.html"
    r = cli("report", probed, "--out", out, "--quiet")
    assert r.exit_code == 0, r.output
    header, rows = _rows(parse(out), "curvature")
    sharp = [h for h in header if h.startswith("ε-sharpness")]
    assert sharp == ["ε-sharpness (adaptive, ε=0.05)", "ε-sharpness (l2, ε=0.05)", "ε-sharpness (l2, ε=0.1)"]
    for row in rows:
        record = next(iter(_records(row[header.index("λ1")][0])))
        data = json.loads((probed / record).read_text())
        for h in sharp:
            attrs, text = row[header.index(h)]
            kind, eps = h.split("(")[1].rstrip(")").split(", ε=")
            held = [
                (i, s)
                for i, s in enumerate(get(data, "/results/sharpness") or [])
                if (s["kind"], s["eps"]) == (kind, float(eps))
            ]
            if not held:
                assert text == "–", (record, h, text)
                continue
            ((i, s),) = held
            src = json.loads(attrs["data-src"])
            assert src == [[record, f"/results/sharpness/{i}/random/s_max", s["random"]["s_max"]]], (
                record,
                h,
            )


def test_groups_and_versus_keep_one_setting_each(probed: Path, cli: Callable[..., Result]) -> None:
    """Group means and the versus panels use values of one setting each, named in headers and labels."""
    out = probed / "grouped.html"
    r = cli("report", probed, "--group-by", "model.depth", "--out", out, "--quiet")
    assert r.exit_code == 0, r.output
    header, rows = _rows(parse(out), "groups")
    (row,) = rows
    expected = {
        "ε-sharpness (adaptive, ε=0.05)": (".adaptive.probe.json", 2),
        "ε-sharpness (l2, ε=0.05)": (".probe.json", 1),  # r000 only
        "ε-sharpness (l2, ε=0.1)": (".probe.json", 2),
        "λmax (3 batches of 16)": (".batches.probe.json", 2),
    }
    for h, (suffix, n) in expected.items():
        records = _records(row[header.index(h)][0])
        assert len(records) == n and all(rec.split(".", 1)[1] == suffix[1:] for rec in records), (h, records)
    whole = [h for h in header if h.startswith("λmax (all ")]
    assert len(whole) == 1 and all(".batches." not in rec for rec in _records(row[header.index(whole[0])][0]))
    caption = out.read_text()
    assert "adaptive, ε=0.05, 3 directions, train split" in caption  # every setting spelled out

    records = scan([probed]).records
    runs = join(records, probed, probed)
    rels = {str(rec.path): rec.path.relative_to(probed).as_posix() for rec in records}
    panels = figures.versus_panels(runs, rels, None)
    sharp = [(s, p) for s, p in panels if s.quantity == "sharpness_max"]
    assert [len(p.points) for _, p in sharp] == [2, 1, 2]  # adaptive 0.05; l2 0.05 (r000 only); l2 0.1
    for setting, panel in sharp:
        assert setting.describe() in panel.xlabel.replace("\n", " ")
    xs = {s.describe(): sorted(x for x, _, _ in p.points) for s, p in sharp}
    truth: dict[str, list[float]] = {}
    for name, probes_ in SHARPNESS.items():
        for suffix, _ in probes_:
            data = json.loads((probed / f"{name}.{suffix}.json").read_text())
            for row_ in data["results"]["sharpness"]:
                key = f"{row_['kind']}, ε={row_['eps']:g}"
                truth.setdefault(key, []).append(row_["random"]["s_max"])
    assert {k.split(", 3 directions")[0]: v for k, v in xs.items()} == {
        k: sorted(v) for k, v in truth.items()
    }


def test_stability_shown_for_batched_probes(probed: Path, cli: Callable[..., Result]) -> None:
    """Every record with a stability check gets a verdict; batched ones say λmax is per batch."""
    out = probed / "report.html"
    r = cli("report", probed, "--out", out, "--quiet")
    assert r.exit_code == 0, r.output
    header, rows = _rows(parse(out), "curvature")
    col = header.index("η·λmax (stability)")
    shown = 0
    for row in rows:
        (record,) = _records(row[header.index("λ1")][0])
        data = json.loads((probed / record).read_text())
        attrs, text = row[col]
        if ".batches." in record:
            summary = data["results"]["batches"]["summary"]["eta_lambda_max"]
            assert text.startswith(f"{summary['mean']:.4g} ± "), text
            assert "vs 3: " in text and "(λmax per batch, 3 batches of 16)" in text, text  # 2(1 + 0.5)
            assert "3 batches below the threshold" in attrs["title"]
        else:
            assert text.startswith(f"{data['results']['stability']['eta_lambda_max']:.4g}")
            assert "(λmax of the whole split)" in text
        assert any(v in text for v in (": stable", ": unstable", ": uncertain")), text
        shown += 1
    assert shown == 6


@pytest.mark.parametrize(
    ("summary", "verdict"),
    [
        ({"mean": 2.5, "std": 0.1, "min": 2.4, "max": 2.6}, "stable"),
        ({"mean": 2.5, "std": 0.1, "min": 2.4, "max": 3.1}, "uncertain"),  # threshold within [min, max]
        ({"mean": 2.5, "std": 0.3, "min": 2.45, "max": 2.55}, "uncertain"),  # within mean ± 2 std
        ({"mean": 3.5, "std": 0.1, "min": 3.4, "max": 3.6}, "unstable"),
        ({"mean": 2.5, "std": None, "min": 2.5, "max": 2.5}, "stable"),  # one batch
    ],
)
def test_batched_stability_verdict(probed: Path, summary: dict[str, Any], verdict: str) -> None:
    """The verdict comes from the mean; uncertain when the threshold (3 here) lies within the spread."""
    data = json.loads((probed / "model-r000.batches.probe.json").read_text())
    data["results"]["batches"]["summary"]["eta_lambda_max"] = {**summary, "n": 3}
    for b, eta in zip(data["results"]["batches"]["per_batch"], ("min", "mean", "max"), strict=True):
        b["stability"]["eta_lambda_max"] = summary[eta]
        b["lambda_max"]["error_bound"] = 0.0
    cell = curvature._stability("x.json", data)
    assert f"vs 3: {verdict} (" in cell.text, cell.text
    assert cell.badge == ("unstable" if verdict == "unstable" else "")


def test_whole_split_stability_uncertain_within_the_error_bound(probed: Path) -> None:
    """Whole split: uncertain when the threshold lies within lr × the λmax error bound of η·λmax."""
    data = copy.deepcopy(json.loads((probed / "model-r000.probe.json").read_text()))
    s = data["results"]["stability"]
    verdict = "stable" if s["stable"] else "unstable"
    assert f": {verdict} (λmax of the whole split)" in curvature._stability("x.json", data).text
    data["results"]["lambda_max"]["error_bound"] = abs(s["threshold"] - s["eta_lambda_max"]) / s["lr"] * 1.5
    assert ": uncertain (λmax of the whole split)" in curvature._stability("x.json", data).text
    data["results"]["stability"] = {"stable": None, "note": "needs the learning rate and optimiser"}
    cell = curvature._stability("x.json", data)
    assert cell.text == "–" and "learning rate" in cell.note


def test_one_batch_stability_uses_its_error_bound(probed: Path) -> None:
    """One batch: η·λmax ± lr × its λmax error bound, uncertain when that reaches the threshold."""
    data = json.loads((probed / "model-r000.batches.probe.json").read_text())
    batches = data["results"]["batches"]
    batches["per_batch"] = batches["per_batch"][:1]
    st = batches["per_batch"][0]["stability"]
    eta = st["eta_lambda_max"]
    batches["summary"]["eta_lambda_max"] = {"mean": eta, "std": None, "min": eta, "max": eta, "n": 1}
    batches["per_batch"][0]["lambda_max"]["error_bound"] = 0.5 * (3 - eta) / st["lr"]
    cell = curvature._stability("x.json", data)
    assert cell.text.startswith(f"{eta:.4g} ± ") and ": stable (λmax per batch" in cell.text, cell.text
    batches["per_batch"][0]["lambda_max"]["error_bound"] = 1.5 * (3 - eta) / st["lr"]
    assert ": uncertain (λmax per batch" in curvature._stability("x.json", data).text


@pytest.mark.parametrize(
    ("status", "badge"),
    [
        ("converged", ""),
        ("above bracket (sigma > upper end)", "above bracket"),
        ("below bracket (sigma < lower end)", "below bracket"),
    ],
)
def test_pac_bayes_sigma_at_a_bracket_end_is_flagged(status: str, badge: str) -> None:
    """A sigma that is the bisection bracket's end (no root inside) must not read as a measured sigma."""
    record = {
        "results": {"pac_bayes": {"isotropic": {"sigma": 10.0, "status": status, "bracket": [10.0, 10.0]}}}
    }
    cell = curvature._pac("r.probe.json", record)
    assert cell.text == "10" and cell.badge == badge


def test_compare_run_colours_every_run(study: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    """--compare run: runs that differ in several settings (seed 004) each get their own colour."""
    runs = join(scan([study]).records, study, tmp_path)
    keys = [figures.colour_key(r, "run") for r in runs]
    assert keys == [r.label for r in runs] and len(set(keys)) == len(runs) > 1
    out = tmp_path / "r.html"
    r = cli("report", study, "--compare", "run", "--out", out)
    assert r.exit_code == 0, r.output
    inventory = out.read_text().split('id="inventory"', 1)[1]
    headers = re.findall(r"<th[^>]*>([^<]*)</th>", inventory)[:3]
    assert headers[0] == "run" and "run" not in headers[1:]  # no second "run" column for the compare key


def test_batched_top_k_gets_a_column_per_eigenvalue() -> None:
    """Seed 001 Tables 2-4: --top-k 3 over batches shows λ1, λ2 and λ3 as mean ± std [min, max]."""
    from types import SimpleNamespace

    def spread(mean: float) -> dict[str, float]:
        return {"mean": mean, "std": 1.0, "min": mean - 2, "max": mean + 2, "n": 5}

    summary = {
        "lambda_max": spread(9.0),
        "lambda_1": spread(9.0),
        "lambda_2": spread(6.0),
        "lambda_3": spread(5.0),
    }
    data = {"results": {"batches": {"num_batches": 5, "summary": summary, "per_batch": []}}}
    columns = curvature._columns([SimpleNamespace(data=data)])
    headers = [h for h, _ in columns]
    assert headers[:3] == ["λ1", "λ2", "λ3"] and "λ4" not in headers
    assert columns[2][1]("x.json", data).text.startswith("5 ± 1")


def test_a_one_batch_summary_shows_the_value_alone() -> None:
    """--num-batches 1 (seed 003's final probe): no '± 0 [x, x]' spread, just the value from the record."""
    from lscape_cli.report.cells import spread_cell

    one = {"mean": 6.167, "std": None, "min": 6.167, "max": 6.167, "n": 1}
    cell = spread_cell("r.json", {"s": one}, "/s", "mean over batches")
    assert cell.text == "6.167" and [s.pointer for s in cell.sources] == ["/s/mean"]
    two = {**one, "std": 0.5, "min": 6.0, "max": 6.5, "n": 2}
    assert spread_cell("r.json", {"s": two}, "/s").text == "6.167 ± 0.5 [6, 6.5]"
