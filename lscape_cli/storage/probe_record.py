"""The ``lscape.probe/1`` record (schema: ``storage/schemas/probe.schema.json``).

``config``: ``request`` (every field of :class:`~lscape_cli.core.probe.engine.ProbeRequest`), ``evaluation``
(the protocol), ``device``, ``dtype``, ``seed``, ``num_batches``, ``batch_size``, ``world_size``,
``model``. ``results``: see :mod:`lscape_cli.core.probe.engine` (plus ``checks`` for ``--check`` gates).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TypedDict, cast

from lscape_cli.core.objective import EvalProtocol
from lscape_cli.core.probe.batches import Batches
from lscape_cli.core.probe.engine import ProbeRequest
from lscape_cli.core.probe.results import ProbeResults
from lscape_cli.storage.records import Envelope, Evaluated, environment, make_record, write_record

PROBE_SCHEMA = "lscape.probe/1"


class ProbeConfig(TypedDict):
    """``config`` of a ``lscape.probe/1`` record."""

    request: dict[str, object]  # dataclasses.asdict(ProbeRequest): every field of the request
    evaluation: EvalProtocol
    device: str
    dtype: str
    seed: int
    num_batches: int | None
    batch_size: int | None
    world_size: int
    model: dict[str, object]  # ModelSpec.to_dict(): name and config


class ProbeRecord(Envelope):
    """A ``lscape.probe/1`` record."""

    config: ProbeConfig
    results: ProbeResults


def write_probe(
    out_path: Path,
    *,
    command: list[str],
    checkpoint: Path,
    req: ProbeRequest,
    batches: Batches,
    setup: Evaluated,
    results: ProbeResults,
    timing: dict[str, float],
    world_size: int,
) -> ProbeRecord:
    """Write the record atomically and return it."""
    config: ProbeConfig = {
        "request": asdict(req),
        "evaluation": setup.protocol,
        "device": str(setup.device),
        "dtype": str(setup.dtype).replace("torch.", ""),
        "seed": req.seed,
        "num_batches": batches.num_batches,
        "batch_size": batches.batch_size,
        "world_size": world_size,
        "model": setup.loaded.spec.to_dict(),
    }
    record = make_record(
        PROBE_SCHEMA,
        out_path=out_path,
        command=command,
        inputs={"checkpoint": checkpoint},
        config=config,
        results=results,
        timing_s=timing,
        warnings=list(setup.warnings),  # e.g. a model or data file changed since training
        env=environment(str(setup.device)),
    )
    write_record(out_path, record)
    return cast(ProbeRecord, record)  # make_record keeps config and results as given
