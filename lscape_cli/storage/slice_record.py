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

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict, cast

import torch

from lscape_cli.core.landscape.slice_directions import SliceDirections, SliceInput
from lscape_cli.core.landscape.slice_request import SliceRequest
from lscape_cli.core.landscape.slice_results import SliceResult
from lscape_cli.errors import LscapeError
from lscape_cli.storage import slices as grids
from lscape_cli.storage.files import remove_on_commit, sha256_file
from lscape_cli.storage.records import environment, make_record, write_record

SLICE_SCHEMA = "lscape.slice/1"
INPUT_ROLES = {"toward": "other", "pca": "trajectory", "file": "directions"}  # record inputs per kind


class SliceCentre(TypedDict):
    """``results.centre``: L(theta) from the grid engine next to the model's own forward pass."""

    loss: float  # the grid engine at coefficients 0
    accuracy: float
    reference_loss: float  # the model's forward over the split
    reference_accuracy: float
    abs_difference: float
    checkpoint_metric: float | None  # the checkpoint's recorded <split>_loss
    method: str


class SliceGrid(TypedDict, total=False):
    """``results.grid``: the values (``[i][j]`` at ``(alpha_i, beta_j)``, or line i at ``alpha_j``)."""

    shape: list[int]  # (count, steps) or (steps, steps)
    alpha: list[float]
    beta: list[float]  # planes only
    loss: list[list[float | None]]  # non-finite as null, never imputed
    accuracy: list[list[float | None]]
    num_points: int
    num_nonfinite: int


class SliceOutputs(TypedDict):
    """``results.outputs``: the files beside the record (names)."""

    grid: str
    directions: str
    plots: list[str]


class SliceResults(TypedDict, total=False):
    """``results`` of a ``lscape.slice/1`` record (details in docs/formats.md)."""

    centre: SliceCentre
    grid: SliceGrid
    directions: dict[str, Any]  # kind, count, digest, lengths, theta_norm, cosines (+ filter-norm check)
    lines: list[dict[str, Any]]  # 1-D: per direction max_rise, basin, curvature (+ eigenvalue)
    sharpness_1d: dict[str, Any]  # 1-D: seed 001's 1D sharpness (value, direction, per_direction, range)
    plane: dict[str, Any]  # 2-D: max_rise, basin, quadratic, axes (+ eigenvalues)
    trajectory: dict[str, Any]  # --pca: coords, epochs, steps, in_span_fraction, inside_range
    speed: dict[str, Any]  # points_evaluated, seconds, forward_pass_s, engine, world_size
    outputs: SliceOutputs


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
        return SliceInput(path.name, str(path), sha256_file(path), other.state, dict(other.meta))
    if req.kind == "pca":
        traj = load_trajectory(path)
        return SliceInput(path.name, str(path), sha256_file(path), traj.state, dict(traj.meta))
    dirs, meta = load_directions(path)
    return SliceInput(path.name, str(path), sha256_file(path), {}, meta, directions=dirs)


class SliceFiles:
    """The store of a running slice: directions, partials.

    It is the :class:`lscape_cli.core.landscape.slice_run.SliceStore` that storage provides.
    """

    def __init__(self, paths: SlicePaths, checkpoint: Path, checkpoint_sha256: str, model: dict[str, Any]):
        self.paths, self.checkpoint, self.sha256, self.model = paths, checkpoint, checkpoint_sha256, model

    @property
    def where(self) -> str:
        """The outputs' stem, for errors."""
        return str(self.paths.stem)

    def save_directions(self, directions: SliceDirections, digest: str) -> None:
        """Write ``STEM.directions.safetensors``."""
        from lscape_cli.storage.directions import save_directions

        info = {
            "kind": directions.settings["kind"],
            "settings": directions.settings,
            "digest": digest,
            "origin": {"checkpoint": self.checkpoint.name, "sha256": self.sha256},
        }
        save_directions(self.paths.directions, directions.dirs, self.model, info)

    def resume(self, key: dict[str, Any], requested: bool, is_main: bool) -> list[tuple[Any, Any, Any]]:
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
            diff = sorted(k for k in key if meta["config"].get(k) != key[k])
            if diff:
                raise LscapeError(
                    f"partial grid was made with other settings ({', '.join(diff)} differ)",
                    str(f),
                    "re-run with the original options, or without --resume to start over",
                )
            out.append((tensors["loss"], tensors["accuracy"], tensors["done"]))
        return out

    def save_partial(
        self, loss: Any, acc: Any, done: Any, key: dict[str, Any], rank: int, world: int
    ) -> None:
        """Flush the grid computed so far (this rank's partial file)."""
        grids.save_partial(
            grids.partial_path(self.paths.stem, rank, world), loss, acc, done, key, rank, world
        )


@dataclass(frozen=True)
class SliceContext:
    """What the record says about where the slice ran, next to the result."""

    checkpoint: Path
    command: list[str]
    evaluation: dict[str, Any]  # the evaluation protocol
    device: str
    dtype: str
    model: dict[str, Any]
    max_batch: int


def write_slice(
    paths: SlicePaths,
    res: SliceResult,
    ctx: SliceContext,
    plots: Callable[[], list[Path]] | None,
    timing: dict[str, float],
    t0: float,
) -> dict[str, Any]:
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
    info = {**res.grid.describe(), "directions_digest": res.digest, "record": paths.record.name}
    grids.save_grid(paths.grid, tensors, info)
    written = plots() if plots is not None else []
    results = cast(SliceResults, dict(res.results))
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


def _record(paths: SlicePaths, res: SliceResult, ctx: SliceContext, results: SliceResults) -> dict[str, Any]:
    req = res.request
    config = {
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
    return make_record(
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
