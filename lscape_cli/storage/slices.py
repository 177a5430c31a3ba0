"""Slice grids (``CKPT.slice.safetensors``) and partial grids kept for ``--resume``.

Grid file, schema ``lscape.slice-grid/1``. Tensors (float64):

- ``loss``, ``accuracy``: ``(count, steps)`` for 1-D slices (row j: direction j), ``(steps, steps)`` for
  a plane, entry ``[i, j]`` at ``(alpha_i, beta_j)``. Non-finite losses are kept as NaN/inf, never imputed.
- ``alpha`` ``(steps,)``, ``beta`` ``(steps,)`` (planes only): the coefficients of the directions.
- ``trajectory`` ``(T, dims)`` (PCA slices only): the snapshots' coordinates in the slice.

Metadata: ``slice`` (JSON: ``dims``, ``count``, ``range``, ``steps``, ``directions_digest``, ``record``
(the JSON record's file name)).

Partial file, schema ``lscape.slice-partial/1``, written atomically after every block of points so an
interrupted run can continue (``--resume``): ``loss``, ``accuracy`` ``(P,)`` float64 over the flattened
grid and ``done`` ``(P,)`` uint8; metadata ``config`` (everything that fixes the grid's values: checkpoint
hash, directions digest, coefficients, split, loss, mode, dtype, chunking), ``rank`` and ``world_size``.
Single processes write ``STEM.slice.partial.safetensors``; rank r of a ``torchrun`` job writes
``STEM.slice.partial.r{r}.safetensors``. The final outputs replace them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypedDict, cast

import torch
from safetensors import safe_open

from lscape_cli.core.landscape.slice_run import ResumeKey
from lscape_cli.core.landscape.slices import GridDescription
from lscape_cli.storage.checkpoint import _check_complete, read_metadata, save_checkpoint
from lscape_cli.storage.files import immediate

GRID_SCHEMA = "lscape.slice-grid/1"
PARTIAL_SCHEMA = "lscape.slice-partial/1"


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    _check_complete(path)
    with safe_open(str(path), framework="pt") as fh:
        return {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118


class GridInfo(GridDescription):
    """A grid file's ``slice`` metadata: the grid, its directions' digest and its record's name."""

    directions_digest: str
    record: str


class GridMeta(TypedDict):
    """A grid file's parsed metadata."""

    schema: str
    slice: GridInfo


class PartialMeta(TypedDict):
    """A partial grid's parsed metadata: the resume key it was computed under, and by which rank."""

    schema: str
    config: ResumeKey
    rank: int
    world_size: int


def save_grid(path: Path, tensors: dict[str, torch.Tensor], info: GridInfo) -> None:
    """Write the grid tensors atomically."""
    save_checkpoint(path, tensors, {"slice": info}, schema=GRID_SCHEMA)


def load_grid(path: Path) -> tuple[dict[str, torch.Tensor], GridMeta]:
    """Tensors and parsed metadata of a grid file."""
    meta = read_metadata(path, expect=GRID_SCHEMA)
    return _tensors(path), cast(GridMeta, meta)  # its schema checked


def partial_path(base: Path, rank: int, world_size: int) -> Path:
    """``BASE.partial.safetensors`` (one process) or ``BASE.partial.r{rank}.safetensors``."""
    tag = "partial" if world_size <= 1 else f"partial.r{rank}"
    return base.with_name(f"{base.name}.{tag}.safetensors")


def partial_files(base: Path) -> list[Path]:
    """Every partial file of this output, whatever the world size that wrote it."""
    return sorted(base.parent.glob(f"{base.name}.partial*.safetensors"))


def save_partial(
    path: Path,
    loss: torch.Tensor,
    accuracy: torch.Tensor,
    done: torch.Tensor,
    config: ResumeKey,
    rank: int,
    world_size: int,
) -> None:
    """Flush the grid computed so far, at once (a reader sees the previous or the new state).

    Written outside the command's output transaction: an interrupted run keeps it for ``--resume``.
    """
    with immediate():
        save_checkpoint(
            path,
            {"loss": loss.double(), "accuracy": accuracy.double(), "done": done.to(torch.uint8)},
            {"config": config, "rank": rank, "world_size": world_size},
            schema=PARTIAL_SCHEMA,
        )


def load_partial(path: Path) -> tuple[dict[str, torch.Tensor], PartialMeta]:
    """Tensors (``loss``, ``accuracy``, ``done``) and metadata (``config``, ``rank``, ``world_size``)."""
    meta = read_metadata(path, expect=PARTIAL_SCHEMA)
    return _tensors(path), cast(PartialMeta, meta)  # its schema checked
