"""The ``lscape.pareto/1`` record: which runs were read, and the study's results.

``config``: ``inputs`` (the paths given), ``runs`` (one entry per checkpoint: ``checkpoint``, ``sha256``,
``sources`` -- the record each metric came from). ``results``: see
:func:`lscape_cli.core.pareto.study.run_pareto` and docs/formats.md, plus ``figures`` (file names).
"""

from __future__ import annotations

from pathlib import Path
from typing import TypedDict, cast

from lscape_cli.core.pareto.study import ParetoResults
from lscape_cli.storage.records import Envelope, environment, make_record, write_record
from lscape_cli.storage.runs import Run

PARETO_SCHEMA = "lscape.pareto/1"


class RunEntry(TypedDict):
    """One checkpoint a study read, and the record each of its metrics came from."""

    checkpoint: str
    sha256: str
    sources: dict[str, str]


class ParetoConfig(TypedDict):
    """``config`` of a ``lscape.pareto/1`` record."""

    inputs: list[str]
    runs: list[RunEntry]


class ParetoRecord(Envelope):
    """A ``lscape.pareto/1`` record."""

    config: ParetoConfig
    results: ParetoResults


def write_pareto(
    out: Path,
    command: list[str],
    inputs: list[Path],
    runs: list[Run],
    results: ParetoResults,
    warnings: list[str],
    timing: dict[str, float],
) -> ParetoRecord:
    """Write the record atomically and return it."""
    config: ParetoConfig = {
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
    return cast(ParetoRecord, record)  # make_record keeps config and results as given
