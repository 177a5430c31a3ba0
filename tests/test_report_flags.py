"""`lscape report`: every flag is visible wherever its number appears (HTML text, Markdown, CSV, terminal).

Three real records carry a flag: λmax by power iteration stopped after 2 products (not converged), a
PAC-Bayes σ search whose target the loss never reaches (σ is the bracket's end), and a 2-D slice so
small that the basin fills the grid (its area is a lower bound).
"""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import Result

from lscape_cli.report.cells import get
from tests.test_report import parse

FLAGS = {  # (table, column, flag) each record must show
    "power": ("curvature", "λ1", "not converged"),
    "pac": ("curvature", "PAC-Bayes σ", "above bracket"),
    "plane": ("slices", "basin width / area", "censored"),
}


@pytest.fixture(scope="module")
def flagged(tmp_path_factory: pytest.TempPathFactory, cli: Callable[..., Result], tiny_args: Any) -> Path:
    """One tiny run with the three flagged records; the preconditions are checked on the records."""
    root = tmp_path_factory.mktemp("flags")
    assert cli(*tiny_args(root / "a")).exit_code == 0
    ckpt = root / "a/model.safetensors"
    power = ("--lambda-max", "--eig-method", "power", "--max-iter", "2", "--out", root / "a/power.probe.json")
    pac = ("--pac-bayes", "--pac-bayes-target", "1", "--out",
           root / "a/pac.probe.json")  # fmt: skip
    for args in (("probe", ckpt, *power), ("probe", ckpt, *pac)):
        r = cli(*args, "--quiet")
        assert r.exit_code == 0, r.output
    r = cli("slice", ckpt, "--dims", "2", "--steps", "3", "--range", "1e-4", "--out", root / "a/plane.json")
    assert r.exit_code == 0, r.output
    records = {name: json.loads((root / f"a/{name}.{kind}.json").read_text())
               for name, kind in (("power", "probe"), ("pac", "probe"))}  # fmt: skip
    records["plane"] = json.loads((root / "a/plane.json").read_text())
    assert get(records["power"], "/results/lambda_max/converged") is False
    assert str(get(records["pac"], "/results/pac_bayes/isotropic/status")).startswith("above bracket")
    assert get(records["plane"], "/results/plane/basin/censored") is True
    return root


def _html_cell(page: Any, table: str, column: str, record: str) -> str:
    rows = page.tables[table]
    j = [t for _, t in rows[0]].index(column)
    hits = [row[j][1] for row in rows[1:] if record in row[j][0].get("data-src", "")]
    assert len(hits) == 1, (table, column, record, hits)
    return hits[0]


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("name", sorted(FLAGS))
def test_flag_in_html_markdown_csv_and_terminal(
    name: str, flagged: Path, tmp_path: Path, cli: Callable[..., Result]
) -> None:
    root = tmp_path / "s"
    shutil.copytree(flagged, root)
    out = root / "report.html"
    r = cli("report", root, "--out", out)
    assert r.exit_code == 0, r.output
    table, column, flag = FLAGS[name]
    record = {"power": "power.probe.json", "pac": "pac.probe.json", "plane": "plane.json"}[name]
    text = _html_cell(parse(out), table, column, record)
    assert f"[{flag}" in text, text  # in the cell's text, not a tooltip
    md_rows = [ln for ln in out.with_suffix(".md").read_text().splitlines() if record in ln or flag in ln]
    assert any(f"{text.strip()}" in ln for ln in md_rows), (text, md_rows)
    rows = _csv_rows(root / "report-tables" / f"{table}.csv")
    flagged_rows = [row for row in rows if row.get(f"{column} flags", "").startswith(flag)]
    assert len(flagged_rows) == 1, rows
    value = flagged_rows[0][column]
    assert value == "" or float(value) == float(value)  # a number (or, for a range, empty), never text
    assert any(line.startswith("Flag: ") and flag in line for line in r.stderr.splitlines()), r.stderr


def test_json_lists_the_flags(flagged: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    root = tmp_path / "s"
    shutil.copytree(flagged, root)
    r = cli("report", root, "--out", root / "report.html", "--json")
    assert r.exit_code == 0, r.output
    listed = json.loads(r.stdout)["flags"]
    for table, column, flag in FLAGS.values():
        assert any(f.startswith(f"{table}: ") and f": {column}: {flag}" in f for f in listed), listed
