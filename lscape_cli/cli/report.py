"""`lscape report`: one self-contained page and paper-ready tables for a whole study."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from lscape_cli.cli.console import emit_json, err
from lscape_cli.cli.options import JsonOpt, OverwriteOpt, QuietOpt


def report(
    inputs: Annotated[
        list[Path],
        typer.Argument(help="Directories searched recursively for lscape records (or record files)."),
    ],
    out: Annotated[
        Path,
        typer.Option(help="The HTML page; STEM.md, STEM-tables/ and STEM-figures/ are written beside it."),
    ] = Path("report.html"),
    compare: Annotated[
        str | None,
        typer.Option(
            help="Settings key that orders and colours runs, e.g. training.optimizer; run: one colour per run."
        ),
    ] = None,
    group_by: Annotated[
        str | None,
        typer.Option(help="Settings key whose values group restarts (mean ± std), e.g. model.depth."),
    ] = None,
    title: Annotated[str | None, typer.Option(help="Page title [default: lscape report].")] = None,
    table: Annotated[
        list[str] | None,
        typer.Option(
            help="A paper table joining every record per run, NAME=COLUMNS[;where=KEY=VALUE][;sort=KEY]"
            "[;group=KEY][;title=TEXT], e.g. 'table1=run,training.optimizer,test_accuracy,"
            "lambda_max[method=power]' (repeatable; columns: docs/formats.md)."
        ),
    ] = None,
    tables: Annotated[
        Path | None,
        typer.Option(
            help="A TOML or JSON study file of paper tables ([tables.NAME] columns = [...]) and claims "
            "([claims.NAME] kind = 'diff', columns = ..., expect = '>')."
        ),
    ] = None,
    claim: Annotated[
        list[str] | None,
        typer.Option(
            help="A paper claim tested over restarts, NAME=KIND:COLUMNS;OPTION=VALUE...: "
            "diff:COLUMN;group=KEY;a=V1;b=V2 (Welch interval), corr:COLUMN1,COLUMN2 (Spearman), "
            "mean:COLUMN;value=NUMBER[/KEY] (t interval), each with expect=> or expect=<, and "
            "where=KEY=VALUE, paper=TEXT, claim=TEXT (repeatable; docs/formats.md)."
        ),
    ] = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    overwrite: OverwriteOpt = False,
) -> None:
    """Gather every train/probe/slice/connect/pareto record under DIRS into report.html, report.md and tables.

    Reads, never recomputes: every number links to the record it came from; stale records (checkpoint
    missing or changed) are flagged. Tables also go to report-tables/ as CSV and LaTeX (booktabs).

    Example:
        lscape report runs/ --group-by model.depth --compare model.depth --out runs/report.html \
            --table 'depths=model.depth,test_loss,lambda_max;group=model.depth' \
            --claim 'deep=diff:test_loss;group=model.depth;a=4;b=1;expect=<;claim=deeper nets fit better'

    """
    from lscape_cli.report import ReportRequest, make_report
    from lscape_cli.report.claims import check_names, parse_claim, read_claims
    from lscape_cli.report.paper import parse_table, read_study
    from lscape_cli.storage.files import allow_overwrite, refuse_overlap
    from lscape_cli.storage.study import report_paths

    allow_overwrite(overwrite)
    refuse_overlap(
        [report_paths(out)["html"], report_paths(out)["markdown"]], [p for p in inputs if p.is_file()]
    )
    specs = [*(read_study(tables) if tables else []), *(parse_table(t) for t in table or [])]
    claims = [*(read_claims(tables) if tables else []), *(parse_claim(c) for c in claim or [])]
    check_names(claims)
    request = ReportRequest(tuple(inputs), out, compare, group_by, title, tuple(specs), tuple(claims))
    res = make_report(request)
    for line in res.skipped:
        err.print(f"Warning: skipped {line}", markup=False, soft_wrap=True)
    if json_out:
        emit_json(json.dumps(res.to_dict(), indent=2))
    elif not quiet:
        for line in res.stale:
            err.print(f"Stale: {line}", markup=False, soft_wrap=True)
        for line in res.flags:
            err.print(f"Flag: {line}", markup=False, soft_wrap=True)
        for verdict in res.claims:
            err.print(f"Claim: {verdict.line()}", markup=False, soft_wrap=True)
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(res.counts.items()))
        err.print(f"lscape report: {res.num_runs} runs from {kinds} records", markup=False, soft_wrap=True)
        p = res.paths
        extra = f"{p['markdown'].name}, {p['tables'].name}/, {p['figures'].name}/"
        err.print(f"wrote {p['html']} (+ {extra})", markup=False, soft_wrap=True)
