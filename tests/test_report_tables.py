"""`lscape report --table` / `--tables`: a paper's table from every record about each run.

Two restarts of a tiny MLP, each probed twice (λmax by Lanczos with ε-sharpness, λmax by power
iteration), the first sliced (1-D), the two connected. The table's numbers must be the records' own.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import Result

from lscape_cli.report.cells import get
from tests.test_report import parse

COLUMNS = (
    "run,test_loss,test_accuracy,lambda_max[method=power],lambda_max[method=lanczos]:λmax Lanczos,"
    "sharpness[kind=l2 eps=0.05],sharpness[eps=0.05 stat=mean]:S_mean,slice.sharpness_1d,connect.barrier"
)
HEADERS = [
    "run",
    "test loss",
    "test acc",
    "λmax (method power)",
    "λmax Lanczos",
    "ε-sharpness (kind l2, eps 0.05)",
    "S_mean",
    "1D sharpness",
    "barrier",
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, cli: Callable[..., Result], tiny_args: Any) -> Path:
    root = tmp_path_factory.mktemp("tables")
    assert cli(*tiny_args(root / "mlp", "--restarts", 2)).exit_code == 0
    a, b = root / "mlp/model-r000.safetensors", root / "mlp/model-r001.safetensors"
    for ckpt in (a, b):
        power = ckpt.with_name(ckpt.stem + ".power.probe.json")
        for args in (
            ("--lambda-max", "--sharpness", "0.05", "--directions", "3"),
            ("--lambda-max", "--eig-method", "power", "--max-iter", "30", "--out", power),
        ):
            r = cli("probe", ckpt, *args, "--quiet")
            assert r.exit_code == 0, r.output
    r = cli("slice", a, "--dims", "1", "--count", "2", "--steps", "5", "--range", "0.5", "--quiet")
    assert r.exit_code == 0, r.output
    r = cli("connect", a, b, "--points", "5", "--quiet")
    assert r.exit_code == 0, r.output
    return root


def _copy(runs: Path, tmp_path: Path) -> Path:
    shutil.copytree(runs, tmp_path / "s")
    return tmp_path / "s"


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _record(root: Path, name: str) -> dict[str, Any]:
    return json.loads((root / "mlp" / name).read_text())


def test_table_holds_the_records_values(runs: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    root = _copy(runs, tmp_path)
    out = root / "report.html"
    r = cli("report", root, "--out", out, "--table", f"paper1={COLUMNS};title=Table 1: two restarts")
    assert r.exit_code == 0, r.output
    page = parse(out)
    assert [t for _, t in page.tables["paper1"][0]] == HEADERS
    rows = _csv(root / "report-tables/paper1.csv")
    assert [row["run"] for row in rows] == ["mlp/model-r000", "mlp/model-r001"]
    connect = json.loads(next((root / "mlp").glob("*.connect.json")).read_text())
    for row in rows:
        stem = row["run"].split("/")[1]
        train = json.loads(next((root / "mlp").glob(f"{stem}.train.json")).read_text())
        lanczos, power = _record(root, f"{stem}.probe.json"), _record(root, f"{stem}.power.probe.json")
        assert float(row["test loss"]) == get(train, "/results/final/test_loss")
        assert float(row["test acc"]) == get(train, "/results/final/test_accuracy")
        assert float(row["λmax (method power)"]) == power["results"]["lambda_max"]["estimate"]
        # power iteration certifies no extreme eigenvalue: no error bound, so no ± in the table
        assert power["results"]["lambda_max"]["error_bound"] is None
        assert row.get("λmax (method power) ±", "") == ""
        assert float(row["λmax Lanczos"]) == lanczos["results"]["lambda_max"]["estimate"]
        sharp = lanczos["results"]["sharpness"][0]
        assert float(row["ε-sharpness (kind l2, eps 0.05)"]) == sharp["random"]["s_max"]
        assert float(row["S_mean"]) == sharp["random"]["s_mean"]  # stat=mean: the mean rise, ± its stderr
        assert float(row["S_mean ±"]) == sharp["random"]["s_mean_stderr"]
        barrier = connect["results"]["linear"]["barriers"]["test"]["loss"]["max_minus_mean_ends"]["value"]
        assert float(row["barrier"]) == barrier  # both ends of the connect record are these runs
    slice_rec = json.loads(next((root / "mlp").glob("model-r000.slice*.json")).read_text())
    assert float(rows[0]["1D sharpness"]) == slice_rec["results"]["sharpness_1d"]["value"]
    assert rows[1]["1D sharpness"] == ""  # r001 has no slice
    md = out.with_suffix(".md").read_text()
    assert "### Table 1: two restarts" in md and "| " + " | ".join(HEADERS) + " |" in md
    tex = (root / "report-tables/paper1.tex").read_text()
    assert r"\toprule" in tex and r"\caption{Table 1: two restarts}" in tex


def test_group_sort_and_where(runs: Path, tmp_path: Path, cli: Callable[..., Result]) -> None:
    root = _copy(runs, tmp_path)
    out = root / "report.html"
    tables = ("g=test_loss,lambda_max[method=power];group=model.depth",
              "s=run,seed,test_loss;sort=-seed",
              "w=run,test_loss;where=run=*r001", "n=run;where=run=mlp/*;where=run=!*r001")  # fmt: skip
    r = cli("report", root, "--out", out, *(a for t in tables for a in ("--table", t)))
    assert r.exit_code == 0, r.output
    losses = [get(_record(root, f"model-r00{i}.train.json"), "/results/final/test_loss") for i in (0, 1)]
    (group,) = _csv(root / "report-tables/g.csv")
    mean = (losses[0] + losses[1]) / 2
    assert group["model.depth"] == "1" and group["runs"] == "2"
    assert math.isclose(float(group["test loss"]), mean, rel_tol=1e-12)
    std = math.sqrt(sum((v - mean) ** 2 for v in losses))  # ddof 1 over two values
    assert math.isclose(float(group["test loss ±"]), std, rel_tol=1e-9)
    seeds = [int(row["seed"]) for row in _csv(root / "report-tables/s.csv")]
    assert seeds == sorted(seeds, reverse=True) and len(seeds) == 2
    assert [row["run"] for row in _csv(root / "report-tables/w.csv")] == ["mlp/model-r001"]
    assert [row["run"] for row in _csv(root / "report-tables/n.csv")] == ["mlp/model-r000"]  # ! negates


@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_study_file_equals_the_option(
    suffix: str, runs: Path, tmp_path: Path, cli: Callable[..., Result]
) -> None:
    root = _copy(runs, tmp_path)
    study = tmp_path / f"study{suffix}"
    spec = {"columns": COLUMNS, "title": "Table 1"}
    if suffix == ".json":
        study.write_text(json.dumps({"tables": {"paper1": spec}}))
    else:
        study.write_text(f"[tables.paper1]\ncolumns = {json.dumps(COLUMNS)}\ntitle = 'Table 1'\n")
    r = cli("report", root, "--out", root / "a.html", "--tables", study)
    assert r.exit_code == 0, r.output
    r = cli("report", root, "--out", root / "b.html", "--table", f"paper1={COLUMNS};title=Table 1")
    assert r.exit_code == 0, r.output
    assert (root / "a-tables/paper1.csv").read_text() == (root / "b-tables/paper1.csv").read_text()


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ("t=run,lambda_mux", "Error: unknown column 'lambda_mux': --table t (use a settings key"),
        ("inventory=run,test_loss", "Error: the table name 'inventory' is taken by the report's own table"),
        (
            "t=run,test_loss[split=test]",
            "Error: test_loss takes no option split: --table t (its options: none)",
        ),
        ("t", "Error: cannot read --table 't': --table (e.g. --table"),
        (
            "t=run,sharpness[stat=median]",
            "Error: sharpness takes stat=max or stat=mean, not 'median': --table t (use stat=mean)",
        ),
        ("t=run;group=model.colour", "Error: no run has the group key 'model.colour': --table t"),
    ],
)
def test_bad_tables_are_refused(
    table: str,
    expected: str,
    runs: Path,
    tmp_path: Path,
    cli: Callable[..., Result],
    error_line: Callable[..., str],
) -> None:
    root = _copy(runs, tmp_path)
    r = cli("report", root, "--out", root / "report.html", "--table", table)
    assert error_line(r).startswith(expected)
    assert not (root / "report.html").exists()
