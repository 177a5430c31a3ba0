"""`lscape report --claim` / `[claims.NAME]`: each paper claim's number, its 95% interval and its verdict.

The study is synthetic: one real train record and one real probe record (a tiny MLP) are copied into
runs whose settings (batch size), test accuracies and λmax (with its error bound) the test chooses, each
beside a checkpoint file of its own bytes (the records name its sha256, so no run is stale). The
intervals are checked against scipy.stats, the verdict rules one branch at a time.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import scipy.stats
from typer.testing import Result

from lscape_cli.report.cells import get
from tests.test_report import parse

BIG, SMALL = 4096, 128
ACC = {BIG: [0.81, 0.78, 0.84, 0.80], SMALL: [0.86, 0.88, 0.85]}
LAM = {BIG: [30.0, 34.0, 29.0, 36.0], SMALL: [10.0, 12.0, 11.0]}
DIFF = f"group=training.batch_size;a={BIG};b={SMALL}"


@pytest.fixture(scope="module")
def templates(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory, cli: Callable[..., Result]) -> Any:
    """A real train record and a real probe record (λmax by Lanczos) to copy."""
    out = tmp_path_factory.mktemp("claims") / "model.probe.json"
    r = cli(
        "probe", tiny_run / "model.safetensors", "--lambda-max", "--max-iter", "10", "--out", out, "--quiet"
    )
    assert r.exit_code == 0, r.output
    train = json.loads((tiny_run / "model.train.json").read_text())
    assert get(train, "/config/dataset/num_classes") == 10 and get(train, "/config/dataset/sizes/test") == 32
    return train, json.loads(out.read_text())


def make_study(root: Path, templates: Any, runs: dict[int, list[dict[str, Any]]]) -> Path:
    """``runs[batch size]``: one dict per restart (test_accuracy, lambda_max, error_bound, probe, train)."""
    train, probe = templates
    for bs, members in runs.items():
        folder = root / f"bs{bs}"
        folder.mkdir(parents=True)
        for j, run in enumerate(members):
            ckpt = folder / f"r{j}.safetensors"
            ckpt.write_bytes(f"checkpoint {bs} {j}".encode())
            entry = {"path": ckpt.name, "sha256": hashlib.sha256(ckpt.read_bytes()).hexdigest()}
            t = copy.deepcopy(train)
            t["config"]["training"]["batch_size"] = bs
            t["results"]["final"]["test_accuracy"] = run["test_accuracy"]
            t["results"]["checkpoint"] = entry
            t["results"]["history"] = []  # no training curves to draw: the report stays fast
            for edit in run.get("train", ()):
                edit(t)
            (folder / f"r{j}.train.json").write_text(json.dumps(t))
            if run.get("lambda_max") is None:
                continue
            p = copy.deepcopy(probe)
            p["inputs"]["checkpoint"] = entry
            p["results"]["lambda_max"].update(
                estimate=run["lambda_max"], error_bound=run.get("error_bound", 0.5)
            )
            for edit in run.get("probe", ()):
                edit(p)
            (folder / f"r{j}.probe.json").write_text(json.dumps(p))
    return root


def runs_of(acc: dict[int, list[float]], lam: dict[int, list[float]], **extra: Any) -> dict[int, list[Any]]:
    return {
        bs: [{"test_accuracy": a, "lambda_max": m, **extra} for a, m in zip(acc[bs], lam[bs], strict=True)]
        for bs in acc
    }


def claims_csv(root: Path) -> dict[str, dict[str, str]]:
    with open(root / "report-tables/claims.csv", newline="") as fh:
        return {row["claim"]: row for row in csv.DictReader(fh)}


def report(cli: Callable[..., Result], root: Path, *claims: str, extra: tuple[Any, ...] = ()) -> Result:
    args = [a for c in claims for a in ("--claim", c)]
    r = cli("report", root, "--out", root / "report.html", *args, *extra)
    assert r.exit_code == 0, r.output
    return r


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory, templates: Any) -> Path:
    return make_study(tmp_path_factory.mktemp("study"), templates, runs_of(ACC, LAM))


def test_diff_is_welchs_interval(study: Path, cli: Callable[..., Result], tmp_path: Path) -> None:
    words = "paper=5 points lower (Table 2);claim=large batches generalise worse"
    claim = f"acc=diff:test_accuracy;{DIFF};expect=<;{words}"
    r = report(cli, study, claim, extra=("--table", "t1=run,test_accuracy", "--json"))
    row = claims_csv(study)["acc"]
    welch = scipy.stats.ttest_ind(ACC[BIG], ACC[SMALL], equal_var=False)
    ci = welch.confidence_interval(0.95)
    assert math.isclose(float(row["estimate"]), sum(ACC[BIG]) / 4 - sum(ACC[SMALL]) / 3, rel_tol=1e-12)
    assert math.isclose(float(row["lo"]), ci.low, rel_tol=1e-9)
    assert math.isclose(float(row["hi"]), ci.high, rel_tol=1e-9)
    assert math.isclose(float(row["dof"]), welch.df, rel_tol=1e-9)
    assert (row["n"], row["n_a"], row["n_b"]) == ("7", "4", "3")
    assert ci.high < 0 and row["verdict"] == "agrees" and row["reason"] == "the interval lies below 0"
    assert row["paper"] == "5 points lower (Table 2)" and row["statement"] == "large batches generalise worse"
    assert row["estimator_rel"] == ""  # a test accuracy carries no estimator uncertainty
    assert json.loads(r.stdout)["claims"][0] == {k: _typed(v) for k, v in row.items()}
    page = parse(study / "report.html")
    head, first = page.tables["claims"][0], page.tables["claims"][1]
    assert [t for _, t in head][:4] == ["claim", "statement", "paper", "lscape [95% interval]"]
    assert first[3][1].startswith(f"{float(row['estimate']):.4g} [")
    assert len(json.loads(first[3][0]["data-src"])) == 7  # every test accuracy used
    md = (study / "report.md").read_text()
    assert md.index("## Tables") < md.index("## Claims") < md.index("## Run inventory")
    assert "| acc | large batches generalise worse | 5 points lower (Table 2) |" in md
    tex = (study / "report-tables/claims.tex").read_text()
    assert r"\caption{Claims}" in tex


def _typed(text: str) -> Any:
    """A CSV cell as the JSON row holds it."""
    if text == "":
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def test_terminal_prints_one_line_per_claim(study: Path, cli: Callable[..., Result]) -> None:
    r = report(cli, study, f"sharp=diff:lambda_max;{DIFF};expect=>", f"flat=diff:lambda_max;{DIFF};expect=<")
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("Claim:")]
    assert lines == [
        "Claim: sharp: agrees (the interval lies above 0)",
        "Claim: flat: disagrees (the interval lies above 0; the paper expects below)",
    ]


def test_corr_is_spearman_with_fisher_z(study: Path, cli: Callable[..., Result]) -> None:
    report(cli, study, "rc=corr:lambda_max,test_accuracy;expect=<")
    row = claims_csv(study)["rc"]
    lam, acc = LAM[SMALL] + LAM[BIG], ACC[SMALL] + ACC[BIG]  # the report's order: 128 before 4096
    rho = scipy.stats.spearmanr(lam, acc).statistic
    z, half = math.atanh(rho), scipy.stats.norm.ppf(0.975) * math.sqrt(1.06 / (7 - 3))
    assert math.isclose(float(row["estimate"]), rho, rel_tol=1e-12)
    assert math.isclose(float(row["lo"]), math.tanh(z - half), rel_tol=1e-9)
    assert math.isclose(float(row["hi"]), math.tanh(z + half), rel_tol=1e-9)
    assert row["verdict"] == "agrees" and float(row["hi"]) < 0
    assert math.isclose(float(row["estimator_rel"]), 0.5 / 10.0)  # λmax 10 ± 0.5 is the largest ±/|value|


def test_mean_against_a_threshold_from_a_setting(study: Path, cli: Callable[..., Result]) -> None:
    lr = get(json.loads((study / "bs128/r0.train.json").read_text()), "/config/training/lr")
    report(cli, study, f"eos=mean:lambda_max;where=training.batch_size={SMALL};value=2/training.lr;expect=>",
           f"under=mean:lambda_max;where=training.batch_size={SMALL};value=11.5;expect=<")  # fmt: skip
    rows = claims_csv(study)
    lo, hi = scipy.stats.t.interval(0.95, 2, loc=11.0, scale=scipy.stats.sem(LAM[SMALL]))
    for name in ("eos", "under"):
        assert math.isclose(float(rows[name]["estimate"]), 11.0, rel_tol=1e-12)
        assert math.isclose(float(rows[name]["lo"]), lo, rel_tol=1e-9)
        assert math.isclose(float(rows[name]["hi"]), hi, rel_tol=1e-9)
    assert float(rows["eos"]["threshold"]) == 2 / lr and hi < 2 / lr
    assert rows["eos"]["verdict"] == "disagrees"
    assert rows["eos"]["reason"] == f"the interval lies below {2 / lr:.4g}; the paper expects above"
    assert lo < 11.5 < hi and rows["under"]["verdict"] == "inconclusive"
    assert rows["under"]["reason"] == "the interval contains 11.5"


def test_inconclusive_when_the_interval_contains_zero(tmp_path: Path, templates: Any, cli: Any) -> None:
    acc = {BIG: [0.80, 0.90, 0.85, 0.87], SMALL: [0.84, 0.86, 0.88]}
    root = make_study(tmp_path / "s", templates, runs_of(acc, LAM))
    report(cli, root, f"acc=diff:test_accuracy;{DIFF};expect=<")
    row = claims_csv(root)["acc"]
    assert float(row["lo"]) < 0 < float(row["hi"])
    assert (row["verdict"], row["reason"]) == ("inconclusive", "the interval contains 0")


def test_one_run_per_group_leaves_the_spread_unknown(tmp_path: Path, templates: Any, cli: Any) -> None:
    root = make_study(
        tmp_path / "s", templates, runs_of({BIG: [0.8], SMALL: [0.85, 0.9]}, {BIG: [3.0], SMALL: [1.0, 2.0]})
    )
    report(cli, root, f"acc=diff:test_accuracy;{DIFF};expect=<", "rc=corr:lambda_max,test_accuracy;expect=<")
    rows = claims_csv(root)
    assert rows["acc"]["verdict"] == "inconclusive" and rows["acc"]["lo"] == ""
    assert math.isclose(float(rows["acc"]["estimate"]), 0.8 - 0.875, rel_tol=1e-12)
    assert rows["acc"]["reason"] == (
        f"1 run(s) with training.batch_size={BIG}: "
        "the spread over restarts is unknown (needs 2 or more in each)"
    )
    assert rows["rc"]["reason"] == "3 runs: a rank correlation's interval needs 5 or more"


@pytest.mark.parametrize(("accuracy", "at_chance"), [(0.25, True), (0.26, False)])
def test_a_run_at_chance_supports_no_verdict(
    accuracy: float, at_chance: bool, tmp_path: Path, templates: Any, cli: Any
) -> None:
    """10 classes, 32 test samples: chance 0.1 + 3·√(0.1·0.9/32) = 0.2591."""
    acc = {BIG: [0.81, accuracy, 0.84, 0.80], SMALL: ACC[SMALL]}
    root = make_study(tmp_path / "s", templates, runs_of(acc, LAM))
    report(cli, root, f"sharp=diff:lambda_max;{DIFF};expect=>")
    row = claims_csv(root)["sharp"]
    margin = 3 * math.sqrt(0.1 * 0.9 / 32)
    assert 0.25 < 0.1 + margin < 0.26
    if at_chance:
        assert row["verdict"] == "inconclusive"
        assert row["reason"] == (
            f"run bs{BIG}/r1 is at chance (test accuracy 0.250, chance 0.100 + 3 s.e. {margin:.3f} "
            "on 32 test samples)"
        )
    else:
        assert (row["verdict"], row["reason"]) == ("agrees", "the interval lies above 0")
    assert float(row["lo"]) > 0  # the interval is shown either way


def _regression(t: dict[str, Any]) -> None:
    del t["results"]["final"]["test_accuracy"]


def test_without_test_accuracy_the_chance_rule_is_not_applied(
    tmp_path: Path, templates: Any, cli: Any
) -> None:
    runs = runs_of(ACC, LAM)
    runs[SMALL][0]["train"] = [_regression]
    root = make_study(tmp_path / "s", templates, runs)
    report(cli, root, f"sharp=diff:lambda_max;{DIFF};expect=>")
    row = claims_csv(root)["sharp"]
    assert row["verdict"] == "agrees"
    assert row["reason"] == (
        f"the interval lies above 0; run bs{SMALL}/r0 has no test accuracy (regression losses): "
        "the chance rule is not applied"
    )


def test_a_run_without_the_value_is_named(tmp_path: Path, templates: Any, cli: Any) -> None:
    runs = runs_of(ACC, LAM)
    runs[BIG][2]["lambda_max"] = None  # not probed
    root = make_study(tmp_path / "s", templates, runs)
    report(cli, root, f"sharp=diff:lambda_max;{DIFF};expect=>")
    row = claims_csv(root)["sharp"]
    assert (row["verdict"], row["reason"]) == ("inconclusive", f"run bs{BIG}/r2 has no λmax")
    assert (row["n_a"], row["n_b"]) == ("3", "3")
    assert math.isclose(float(row["estimate"]), (30 + 34 + 36) / 3 - 11, rel_tol=1e-12)


def test_a_text_column_is_no_number(study: Path, cli: Callable[..., Result]) -> None:
    report(cli, study, "opt=mean:training.optimizer;value=0;expect=>")
    row = claims_csv(study)["opt"]
    assert row["verdict"] == "inconclusive" and row["n"] == "0"
    assert row["reason"].startswith(
        f"run bs{SMALL}/r0 has no training.optimizer as a number ('sgd'); run bs{SMALL}/r1 has no"
    )
    assert row["reason"].endswith(
        "; and 4 more; 0 run(s): the spread over restarts is unknown (needs 2 or more)"
    )


def _not_converged(p: dict[str, Any]) -> None:
    p["results"]["lambda_max"]["converged"] = False


def test_a_flagged_value_is_said(tmp_path: Path, templates: Any, cli: Any) -> None:
    runs = runs_of(ACC, LAM)
    runs[SMALL][1]["probe"] = [_not_converged]
    root = make_study(tmp_path / "s", templates, runs)
    r = report(cli, root, f"sharp=diff:lambda_max;{DIFF};expect=>")
    assert "Flag: " in r.stderr  # the same flag the curvature table shows
    row = claims_csv(root)["sharp"]
    assert row["verdict"] == "agrees"
    assert row["reason"] == f"the interval lies above 0; λmax of run bs{SMALL}/r1 is not converged"


def test_the_estimator_dominating_is_said(tmp_path: Path, templates: Any, cli: Any) -> None:
    root = make_study(tmp_path / "s", templates, runs_of(ACC, LAM, error_bound=9.0))
    report(cli, root, f"sharp=diff:lambda_max;{DIFF};expect=>")
    row = claims_csv(root)["sharp"]
    spread = max(scipy.stats.tstd(LAM[BIG]), scipy.stats.tstd(LAM[SMALL]))
    assert spread < 9.0 and math.isclose(float(row["estimator_rel"]), 9.0 / 10.0)
    assert row["reason"] == (
        f"the interval lies above 0; the estimator dominates: its largest ± (9) is as large as the std "
        f"over restarts ({spread:.2g})"
    )


TOML = f"""
[tables.t1]
columns = ["run", "test_accuracy"]

[claims.acc]
kind = "diff"
columns = "test_accuracy"
group = "training.batch_size"
a = {BIG}
b = {SMALL}
expect = "<"
paper = "5 points lower"

[claims.rc]
kind = "corr"
columns = ["lambda_max", "test_accuracy"]
expect = "<"
where = {{ run = "bs*" }}
"""


def test_study_file_equals_the_option(study: Path, cli: Callable[..., Result], tmp_path: Path) -> None:
    path = tmp_path / "study.toml"
    path.write_text(TOML)
    r = cli("report", study, "--out", study / "a.html", "--tables", path)
    assert r.exit_code == 0, r.output
    options = (f"acc=diff:test_accuracy;{DIFF};expect=<;paper=5 points lower",
               "rc=corr:lambda_max,test_accuracy;expect=<;where=run=bs*")  # fmt: skip
    r = cli("report", study, "--out", study / "b.html", *(a for c in options for a in ("--claim", c)))
    assert r.exit_code == 0, r.output
    assert (study / "a-tables/claims.csv").read_text() == (study / "b-tables/claims.csv").read_text()
    claims_only = tmp_path / "claims.json"
    acc = {"kind": "diff", "columns": "test_accuracy", "group": "training.batch_size", "a": BIG, "b": SMALL}
    claims_only.write_text(json.dumps({"claims": {"acc": {**acc, "expect": "<", "paper": "5 points lower"}}}))
    r = cli("report", study, "--out", study / "c.html", "--tables", claims_only)
    assert r.exit_code == 0, r.output
    a_rows = (study / "a-tables/claims.csv").read_text().splitlines()
    assert (study / "c-tables/claims.csv").read_text().splitlines() == a_rows[:2]


@pytest.mark.parametrize(
    ("claim", "expected"),
    [
        ("c=ratio:test_loss;expect=>", "Error: unknown claim kind 'ratio': --claim c (write KIND:COLUMNS"),
        (f"c=diff:test_accuracy;group=training.batch_size;a={BIG};b=64;expect=<",
         f"Error: no run has training.batch_size=64: --claim c (the runs have training.batch_size {SMALL}, "
         f"{BIG})"),
        ("c=diff:test_accuracy;group=training.batch_size;a=1;expect=<",
         "Error: a diff claim needs b: --claim c"),
        ("c=corr:lambda_mux,test_accuracy;expect=<", "Error: unknown column 'lambda_mux': --claim c"),
        ("c=corr:test_accuracy;expect=<", "Error: a corr claim takes 2 column(s), got 1: --claim c"),
        ("c=mean:lambda_max;expect=>", "Error: a mean claim needs value=NUMBER: --claim c"),
        ("c=mean:lambda_max;value=2/training.batch_size;expect=>",
         "Error: value=2/training.batch_size needs one non-zero training.batch_size over the claim's runs"),
        ("c=diff:test_accuracy;group=model.colour;a=1;b=2;expect=<",
         "Error: no run has the group key 'model.colour'"),
        (f"c=diff:test_accuracy;{DIFF}", "Error: a claim needs expect=> or expect=<: --claim c"),
        (f"c=diff:test_accuracy;{DIFF};expect=>;sort=run",
         "Error: unknown claim option 'sort=run': --claim c"),
        (f"c=diff:test_accuracy;{DIFF};expect=>;expect=<", "Error: expect= is given twice: --claim c"),
        ("c=diff:test_accuracy;group=run;a=bs*;b=bs128/*;expect=<", "Error: run bs128/r0 is in both groups"),
        ("c=diff:test_accuracy;group=run;a=x*;b=bs128/*;expect=<",
         "Error: no run has run=x*: --claim c (no run name matches: use a glob)"),
        ("c=corr:lambda_max,test_accuracy;expect=<;where=run=nothing*",
         "Error: no run meets the claim's where conditions: --claim c"),
    ],
)  # fmt: skip
def test_bad_claims_are_refused(
    claim: str,
    expected: str,
    study: Path,
    cli: Callable[..., Result],
    error_line: Callable[..., str],
    tmp_path: Path,
) -> None:
    out = tmp_path / "report.html"
    r = cli("report", study, "--out", out, "--claim", claim)
    assert error_line(r).startswith(expected), error_line(r)
    assert not out.exists() and not (tmp_path / "report-tables").exists()


def test_two_claims_with_one_name_are_refused(study: Path, cli: Any, error_line: Any, tmp_path: Path) -> None:
    c = f"c=diff:test_accuracy;{DIFF};expect=<"
    r = cli("report", study, "--out", tmp_path / "r.html", "--claim", c, "--claim", c)
    assert error_line(r) == "Error: two claims named 'c': --claim (give each claim its own name)"


def test_bad_claim_in_a_study_file(study: Path, cli: Any, error_line: Any, tmp_path: Path) -> None:
    path = tmp_path / "study.toml"
    path.write_text('[claims.c]\nkind = "diff"\ncolumns = "test_accuracy"\nexpect = ">"\n')
    r = cli("report", study, "--out", tmp_path / "r.html", "--tables", path)
    assert (
        error_line(r)
        == f"Error: a diff claim needs group, a, b: {path}: claims.c (give group=KEY;a=VALUE1;b=VALUE2)"
    )


def test_a_study_file_without_tables_or_claims(
    study: Path, cli: Any, error_line: Any, tmp_path: Path
) -> None:
    path = tmp_path / "study.toml"
    path.write_text("[claim.c]\nkind = 'diff'\n")
    r = cli("report", study, "--out", tmp_path / "r.html", "--tables", path)
    assert error_line(r).startswith(f"Error: no tables or claims in the study file: {path}")
