"""`probe` over a whole split or over disjoint random batches of it, split across ``torchrun`` ranks.

:func:`probe_split` builds the objective (each rank holds a contiguous share of the samples and the
sums are all-reduced) and runs :func:`~lscape_cli.core.probe.engine.run_probe` once, or, with
:class:`Batches`, on ``num_batches`` disjoint batches drawn by one seeded permutation of the split
(seed 001's "top-3 eigenvalues over 5 test mini-batches"), summarising every scalar over them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from lscape_cli.core.linalg.hvp import Objective
from lscape_cli.core.objective import num_units
from lscape_cli.core.probe.engine import ProbeOutput, ProbeRequest, run_on_batches, run_probe
from lscape_cli.core.probe.pac_bayes import Prior
from lscape_cli.core.probe.results import ProbeResults, SnapshotRow
from lscape_cli.core.progress import ProgressFn
from lscape_cli.core.samples import span
from lscape_cli.errors import LscapeError


class Shards(Protocol):
    """How this process shares the samples (:class:`lscape_cli.distributed.Group`)."""

    def bounds(self, n: int) -> tuple[int, int]: ...  # noqa: D102

    def shard(self, n: int) -> Any: ...  # noqa: D102


@dataclass(frozen=True)
class Batches:
    """``num_batches`` disjoint batches of ``batch_size`` samples (default: the split divided evenly)."""

    num_batches: int = 1
    batch_size: int | None = None
    seed: int = 0

    @property
    def whole_split(self) -> bool:
        """One batch of everything: probe the split itself."""
        return self.num_batches == 1 and self.batch_size is None


@dataclass(frozen=True)
class SplitData:
    """The model and the split it is probed on."""

    module: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    loss: str
    split: str
    max_batch: int
    prior: Prior | None = None  # centre of the PAC-Bayes prior (the initial parameters); None: 0


def probe_split(
    data: SplitData, req: ProbeRequest, batches: Batches, group: Shards, on_step: ProgressFn | None = None
) -> ProbeOutput:
    """``results``, the scalars for ``--check`` (batch means) and, when asked, the top-k eigenvectors.

    Eigenvectors come from a whole-split probe only (batches would each have their own).
    """
    if batches.whole_split:
        return run_probe(_objective(data, data.x, data.y, group), req, on_step, data.prior)
    n = int(data.y.shape[0])
    size = batches.batch_size or n // batches.num_batches
    if size < 1 or size * batches.num_batches > n:
        per = max(size, 1)  # more batches than samples: each needs one at least
        raise LscapeError(
            f"{batches.num_batches} disjoint batches of {per} need {batches.num_batches * per} samples but "
            f"the {data.split} split has {n}",
            "--num-batches/--batch-size",
            "lower them or use a larger split",
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(batches.seed)).to(data.y.device)
    objs = [
        _objective(
            data, data.x[perm[i * size : (i + 1) * size]], data.y[perm[i * size : (i + 1) * size]], group
        )
        for i in range(batches.num_batches)
    ]
    per_batch, summary = run_on_batches(objs, req, on_step, data.prior)
    scalars = {k: v["mean"] for k, v in summary.items()}
    results: ProbeResults = {
        "batches": {
            "num_batches": batches.num_batches,
            "batch_size": size,
            "seed": batches.seed,
            "summary": summary,
            "per_batch": per_batch,
        }
    }
    return ProbeOutput(results, scalars)


def probe_series(
    data: SplitData,
    snapshots: Any,
    indices: list[int],
    req: ProbeRequest,
    batches: Batches,
    group: Shards,
    on_step: ProgressFn | None = None,
) -> tuple[ProbeResults, dict[str, float | None]]:
    """:func:`probe_split` at each chosen snapshot of a trajectory (``lscape probe TRAJ --snapshot``).

    ``snapshots``: a :class:`lscape_cli.storage.trajectory.Snapshots` (``state(t)``, ``epochs``,
    ``steps``); its parameters are loaded into ``data.module`` in turn. Returns ``{"snapshots":
    {"count", "series"}}``, one results object per snapshot with its ``index``, ``epoch`` and ``step``,
    and the last snapshot's scalars (for ``--check``).
    """
    series: list[SnapshotRow] = []
    scalars: dict[str, float | None] = {}
    for t in indices:
        data.module.load_state_dict(snapshots.state(t), strict=True)
        out = probe_split(data, req, batches, group, on_step)
        scalars = out.scalars
        series.append({"index": t, "epoch": snapshots.epochs[t], "step": snapshots.steps[t], **out.results})
    return {"snapshots": {"count": len(snapshots.epochs), "series": series}}, scalars


def _objective(data: SplitData, x: torch.Tensor, y: torch.Tensor, group: Shards) -> Objective:
    """The loss over this rank's share of ``(x, y)`` (everything when single-process)."""
    n = int(y.shape[0])
    start, stop = group.bounds(n)
    try:
        return Objective.from_module(
            data.module,
            span(x, start, stop),
            y[start:stop],
            data.loss,
            data.max_batch,
            shard=group.shard(num_units(y, data.loss)),  # the mean's denominator: all ranks' units
        )
    except ValueError as exc:
        raise LscapeError(str(exc), "--mode", "use --mode eval for models with BatchNorm or dropout") from exc
