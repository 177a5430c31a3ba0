"""The ``lscape.pareto/1`` record: which runs were read, and the study's results.

``config``: ``inputs`` (the paths given), ``runs`` (one entry per checkpoint: ``checkpoint``, ``sha256``,
``sources`` -- the record each metric came from). ``results``: see
:func:`lscape_cli.core.pareto.study.run_pareto` and docs/formats.md, plus ``figures`` (file names).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypedDict

from lscape_cli.storage.records import Record, environment, make_record, write_record
from lscape_cli.storage.runs import Run

PARETO_SCHEMA = "lscape.pareto/1"


class ParetoResults(TypedDict, total=False):
    """``results`` of a ``lscape.pareto/1`` record (details in docs/formats.md)."""

    group_by: str  # the config key runs are grouped by, e.g. model.depth
    x: str  # fit metric
    y: str  # flatness metric
    target: str  # held-out metric the proxy x + lambda*y should track
    groups: dict[str, dict[str, Any]]  # per group: n, mean, covariance, ellipse_50, fronts, tls, parameters
    across_groups: dict[str, Any]  # groups, lambda_g, lambda_G_at_bound, objective, MAEs, scan
    num_runs: int
    multi: dict[str, Any]  # --metric: front, hypervolume, reference, senses, metrics, runs
    figures: list[str]  # file names beside the record
    figure_axes: dict[str, str]  # x, y: linear or log, the ellipse figure's axes (--axes)


def write_pareto(
    out: Path,
    command: list[str],
    inputs: list[Path],
    runs: list[Run],
    results: ParetoResults,
    warnings: list[str],
    timing: dict[str, float],
) -> Record:
    """Write the record atomically and return it."""
    config = {
        "inputs": [str(p) for p in inputs],
        "runs": [{"checkpoint": str(r.checkpoint), "sha256": r.sha256, "sources": r.sources} for r in runs],
    }
    record = make_record(
        PARETO_SCHEMA,
        out_path=out,
        command=command,
        inputs={},
        config=config,
        results=dict(results),
        timing_s=timing,
        warnings=warnings,
        env=environment("cpu"),
    )
    write_record(out, record)
    return record
