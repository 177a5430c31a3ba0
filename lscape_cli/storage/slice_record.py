"""The files of one slice: where they go, the inputs it reads, the partial grid, and the record.

Outputs (STEM = the record's path without ``.json``, by default ``CKPT.slice``):

- ``STEM.json``: the ``lscape.slice/1`` record, written by :func:`write_slice` (its ``results`` from
  :mod:`lscape_cli.core.landscape.slice_results`; keys in docs/formats.md).
- ``STEM.safetensors``: the grid (``lscape.slice-grid/1``, :mod:`lscape_cli.storage.slices`).
- ``STEM.directions.safetensors``: the directions (``lscape.directions/1``), reusable with ``--directions``.
- ``STEM.lines.{png,pdf}`` (1-D) or ``STEM.{contour,surface,heatmap}.{png,pdf}`` (2-D).
- ``STEM.partial*.safetensors`` while the grid is being computed (``--resume`` continues from them).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict, cast

import torch

from lscape_cli.core.landscape.slice_directions import DirectionsMade, SliceDirections, SliceInput, SourceMeta
from lscape_cli.core.landscape.slice_request import DirectionSettings, SliceRequest
from lscape_cli.core.landscape.slice_results import SliceResult, SliceResults
from lscape_cli.core.landscape.slice_run import ResumeKey
from lscape_cli.core.landscape.slices import GridDescription
from lscape_cli.core.objective import EvalProtocol
from lscape_cli.errors import LscapeError
from lscape_cli.storage import slices as grids
from lscape_cli.storage.files import remove_on_commit, sha256_file
from lscape_cli.storage.records import Envelope, environment, make_record, write_record
from lscape_cli.storage.slices import GridInfo

SLICE_SCHEMA = "lscape.slice/1"
INPUT_ROLES = {"toward": "other", "pca": "trajectory", "file": "directions"}  # record inputs per kind


class SliceConfig(TypedDict):
    """``config`` of a ``lscape.slice/1`` record."""

    slice: GridConfig
    directions: DirectionSettings
    evaluation: EvalProtocol
    engine: EngineConfig
    derived: dict[str, float]  # basin_threshold, fit_radius
    resume: dict[str, object]  # requested, points_reused
    device: str
    dtype: str
    seed: int
    world_size: int
    model: dict[str, object]  # ModelSpec.to_dict()


class GridConfig(GridDescription):
    """``config.slice``: the grid and its coefficients."""

    coefficients: list[float]


class EngineConfig(TypedDict):
    """``config.engine``: how the grid was evaluated."""

    strategy: str
    memory_budget_mib: int
    max_batch: int
    block: int
    placement: str


class SliceRecord(Envelope):
    """A ``lscape.slice/1`` record."""

    config: SliceConfig
    results: SliceResults


@dataclass(frozen=True)
class SlicePaths:
    """The record's path and the stem that its sibling files share."""

    record: Path
    stem: Path  # record path without .json

    @classmethod
    def of(cls, record: Path) -> SlicePaths:
        """The paths beside ``record`` (its directory is created when the files are written)."""
        name = record.name[: -len(".json")] if record.name.endswith(".json") else record.name
        return cls(record, record.with_name(name))

    def sibling(self, suffix: str) -> Path:
        """``STEM.<suffix>``."""
        return self.stem.with_name(f"{self.stem.name}.{suffix}")

    @property
    def grid(self) -> Path:
        """The grid file."""
        return self.sibling("safetensors")

    @property
    def directions(self) -> Path:
        """The directions file."""
        return self.sibling("directions.safetensors")

    def partials(self) -> list[Path]:
        """The partial grids an interrupted run left (one per rank)."""
        return grids.partial_files(self.stem)


def source_path(req: SliceRequest) -> Path | None:
    """The file the request's kind of directions reads, if any."""
    return {"toward": req.toward, "pca": req.pca, "file": req.directions}.get(req.kind)


def load_source(req: SliceRequest, model_config: Path | None) -> SliceInput | None:
    """Read the other checkpoint, the trajectory or the direction file that ``req`` names."""
    from lscape_cli.storage.checkpoint import load_checkpoint, load_trajectory
    from lscape_cli.storage.directions import load_directions

    path = source_path(req)
    if path is None:
        return None
    if req.kind == "toward":
        other = load_checkpoint(path, model_config)
        return SliceInput(path.name, str(path), sha256_file(path), other.state, _source_meta(other.meta))
    if req.kind == "pca":
        traj = load_trajectory(path)
        return SliceInput(path.name, str(path), sha256_file(path), traj.state, _source_meta(traj.meta))
    dirs, meta = load_directions(path)
    return SliceInput(path.name, str(path), sha256_file(path), {}, _source_meta(meta), directions=dirs)


def _source_meta(meta: Mapping[str, object]) -> SourceMeta:
    """A file's checked metadata as the slice engine reads it (a copy)."""
    return cast(SourceMeta, dict(meta))


class SliceFiles:
    """The store of a running slice: directions, partials.

    It is the :class:`lscape_cli.core.landscape.slice_run.SliceStore` that storage provides.
    """

    def __init__(self, paths: SlicePaths, checkpoint: Path, checkpoint_sha256: str, model: dict[str, object]):
        self.paths, self.checkpoint, self.sha256, self.model = paths, checkpoint, checkpoint_sha256, model

    @property
    def where(self) -> str:
        """The outputs' stem, for errors."""
        return str(self.paths.stem)

    def save_directions(self, directions: SliceDirections, digest: str) -> None:
        """Write ``STEM.directions.safetensors``."""
        from lscape_cli.storage.directions import save_directions

        info: DirectionsMade = {
            "kind": directions.settings["kind"],
            "settings": directions.settings,
            "digest": digest,
            "origin": {"checkpoint": self.checkpoint.name, "sha256": self.sha256},
        }
        save_directions(self.paths.directions, directions.dirs, self.model, info)

    def resume(self, key: ResumeKey, requested: bool, is_main: bool) -> list[tuple[Any, Any, Any]]:
        """The partial grids to continue from (all must match ``key``); stale ones removed otherwise."""
        files = self.paths.partials()
        if not (requested and files):
            if files and is_main:
                for f in files:
                    f.unlink(missing_ok=True)
            return []
        out = []
        for f in files:
            tensors, meta = grids.load_partial(f)
            saved: dict[str, object] = dict(meta["config"])
            diff = sorted(k for k, v in key.items() if saved.get(k) != v)
            if diff:
                raise LscapeError(
                    f"partial grid was made with other settings ({', '.join(diff)} differ)",
                    str(f),
                    "re-run with the original options, or without --resume to start over",
                )
            out.append((tensors["loss"], tensors["accuracy"], tensors["done"]))
        return out

    def save_partial(self, loss: Any, acc: Any, done: Any, key: ResumeKey, rank: int, world: int) -> None:
        """Flush the grid computed so far (this rank's partial file)."""
        grids.save_partial(
            grids.partial_path(self.paths.stem, rank, world), loss, acc, done, key, rank, world
        )


@dataclass(frozen=True)
class SliceContext:
    """What the record says about where the slice ran, next to the result."""

    checkpoint: Path
    command: list[str]
    evaluation: EvalProtocol
    device: str
    dtype: str
    model: dict[str, object]
    max_batch: int


def write_slice(
    paths: SlicePaths,
    res: SliceResult,
    ctx: SliceContext,
    plots: Callable[[], list[Path]] | None,
    timing: dict[str, float],
    t0: float,
) -> SliceRecord:
    """Write the grid, the plots (``plots()``, when given) and the record; remove the partial grids.

    ``timing``: seconds per phase so far (``derive`` joins the plots' time); ``t0``: the command's start.
    """
    import time

    from lscape_cli.core.landscape.slice_results import trajectory_coords

    t = time.perf_counter()
    a = torch.tensor(res.grid.alphas, dtype=torch.float64)
    assert res.loss is not None and res.accuracy is not None
    tensors = {"loss": res.loss, "accuracy": res.accuracy, "alpha": a}
    if res.grid.dims == 2:
        tensors["beta"] = a.clone()
    coords = trajectory_coords(res)
    if coords is not None:
        tensors["trajectory"] = coords.double()
    info: GridInfo = {**res.grid.describe(), "directions_digest": res.digest, "record": paths.record.name}
    grids.save_grid(paths.grid, tensors, info)
    written = plots() if plots is not None else []
    results = SliceResults(**res.results)  # a copy
    results["outputs"] = {
        "grid": paths.grid.name,
        "directions": paths.directions.name,
        "plots": [p.name for p in written],
    }
    timing["derive_and_plot"] = timing.pop("derive", 0.0) + time.perf_counter() - t
    timing["total"] = time.perf_counter() - t0
    record = _record(paths, res, ctx, results)
    record["timing_s"] = timing
    write_record(paths.record, record)
    for f in paths.partials():
        remove_on_commit(f)
    return record


def _record(paths: SlicePaths, res: SliceResult, ctx: SliceContext, results: SliceResults) -> SliceRecord:
    req = res.request
    config: SliceConfig = {
        "slice": {**res.grid.describe(), "coefficients": res.grid.alphas},
        "directions": res.directions.settings,
        "evaluation": ctx.evaluation,
        "engine": {
            "strategy": req.strategy,
            "memory_budget_mib": req.memory_budget_mib,
            "max_batch": ctx.max_batch,
            "block": req.steps,
            "placement": "absolute: theta + sum_k c_k d_k for every point",
        },
        "derived": {"basin_threshold": req.basin_threshold, "fit_radius": res.fit_radius},
        "resume": {"requested": req.resume, "points_reused": res.points_reused},
        "device": ctx.device,
        "dtype": ctx.dtype,
        "seed": req.seed,
        "world_size": res.world_size,
        "model": ctx.model,
    }
    inputs = {"checkpoint": ctx.checkpoint}
    path = source_path(req)
    if path is not None:
        inputs[INPUT_ROLES[req.kind]] = path
    record = make_record(
        SLICE_SCHEMA,
        out_path=paths.record,
        command=ctx.command,
        inputs=inputs,
        config=config,
        results=dict(results),
        timing_s={},
        warnings=res.warnings,
        env=environment(ctx.device),
    )
    return cast(SliceRecord, record)  # make_record keeps config and results as given
