"""The ``lscape.probe/1`` record (schema: ``storage/schemas/probe.schema.json``).

``config``: ``request`` (every field of :class:`~lscape_cli.core.probe.engine.ProbeRequest`), ``evaluation``
(the protocol), ``device``, ``dtype``, ``seed``, ``num_batches``, ``batch_size``, ``world_size``,
``model``. ``results``: see :mod:`lscape_cli.core.probe.engine` (plus ``checks`` for ``--check`` gates).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, TypedDict

from lscape_cli.core.probe.batches import Batches
from lscape_cli.core.probe.engine import ProbeRequest
from lscape_cli.storage.records import environment, make_record, write_record

PROBE_SCHEMA = "lscape.probe/1"


class ProbeResults(TypedDict, total=False):
    """``results`` of a ``lscape.probe/1`` record: one entry per measurement asked for.

    Every estimate carries its method, budget, seed and uncertainty; the keys of each entry are listed
    in :mod:`lscape_cli.core.probe.engine`.
    """

    loss: dict[str, Any]  # value, accuracy, num_samples at the checkpoint
    hvp: dict[str, Any]  # strategy and memory plan of the Hessian-vector products
    lambda_max: dict[str, Any]  # estimate, residual, error_bound, converged, iterations, num_matvecs, ...
    top_k: dict[str, Any]
    lambda_min: dict[str, Any]
    condition_number: dict[str, Any]
    trace: dict[str, Any]  # estimate, stderr, method, num_matvecs, seed
    frobenius: dict[str, Any]
    density: dict[str, Any]
    effective_rank: dict[str, Any]
    stable_rank: dict[str, Any]
    participation_ratio: dict[str, Any]
    grad_norm: dict[str, Any]
    sharpness: list[dict[str, Any]]
    noise: dict[str, Any]
    pac_bayes: dict[str, Any]
    stability: dict[str, Any]
    batches: dict[str, Any]  # --num-batches: num_batches, batch_size, seed, summary, per_batch
    checks: list[dict[str, Any]]  # --check: expr, values, passed


def write_probe(
    out_path: Path,
    *,
    command: list[str],
    checkpoint: Path,
    req: ProbeRequest,
    batches: Batches,
    setup: Any,  # models.evaluation.EvalSetup: protocol, device, dtype, loaded.spec
    results: dict[str, Any],
    timing: dict[str, float],
    world_size: int,
) -> dict[str, Any]:
    """Write the record atomically and return it."""
    config = {
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
        warnings=list(getattr(setup, "warnings", [])),  # e.g. a model or data file changed since training
        env=environment(str(setup.device)),
    )
    write_record(out_path, record)
    return record
