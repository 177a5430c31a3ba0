"""Direction files (``*.slice.directions.safetensors``, schema ``lscape.directions/1``).

A direction file holds K directions in parameter space, so two checkpoints of one architecture can be
sliced along the very same vectors
(``lscape slice B.safetensors --directions A.slice.directions.safetensors``).

Tensors: ``d{k}.{parameter name}`` for k = 0..K-1, shaped like the parameter (e.g. ``d1.hidden.0.weight``).

Header metadata (JSON strings):

- ``lscape_schema``: ``"lscape.directions/1"``.
- ``model``: the model description of the checkpoint they were made for (``{"name", "config"}``).
- ``directions``: ``count`` (K), ``kind`` (``random``, ``toward``, ``pca``, ``eigen``), ``settings`` (how
  they were made: norm, bias policy, seed, orthogonalisation, other checkpoint, trajectory, eigenvalues
  ...), ``digest`` (sha256 of the tensors, :func:`lscape_cli.core.landscape.directions.digest`), ``origin``
  (``{"checkpoint": file name, "sha256"}`` of the centre they were made at).
"""

from __future__ import annotations

from pathlib import Path
from typing import TypedDict, cast

import torch
from safetensors import safe_open

from lscape_cli.core.landscape.slice_directions import DirectionsInfo, DirectionsMade
from lscape_cli.errors import LscapeError
from lscape_cli.storage.checkpoint import _check_complete, read_metadata, save_checkpoint

DIRECTIONS_SCHEMA = "lscape.directions/1"


def save_directions(
    path: Path, dirs: list[dict[str, torch.Tensor]], model: dict[str, object], info: DirectionsMade
) -> None:
    """Write ``dirs`` atomically with the model description and ``info`` (kind, settings, digest, origin)."""
    tensors = {f"d{k}.{n}": t for k, d in enumerate(dirs) for n, t in d.items()}
    save_checkpoint(
        path, tensors, {"model": model, "directions": {**info, "count": len(dirs)}}, schema=DIRECTIONS_SCHEMA
    )


class DirectionFileMeta(TypedDict):
    """A direction file's parsed metadata: the model it was made for and how the directions were made."""

    schema: str
    model: dict[str, object]
    directions: DirectionsInfo


def load_directions(path: Path) -> tuple[list[dict[str, torch.Tensor]], DirectionFileMeta]:
    """The directions (in order) and the parsed metadata (``model``, ``directions``)."""
    meta = read_metadata(path, expect=DIRECTIONS_SCHEMA)
    _check_complete(path)
    info = meta.get("directions")
    if not isinstance(info, dict) or not isinstance(info.get("count"), int):
        raise LscapeError(
            "direction file has no 'directions' metadata", str(path), "re-create it with lscape slice"
        )
    dirs: list[dict[str, torch.Tensor]] = [{} for _ in range(info["count"])]
    with safe_open(str(path), framework="pt") as fh:
        for key in fh.keys():  # noqa: SIM118 (safe_open is not a dict)
            head, _, name = key.partition(".")
            k = int(head[1:]) if head[:1] == "d" and head[1:].isdigit() else -1
            if not 0 <= k < len(dirs) or not name:
                raise LscapeError(
                    f"unexpected tensor {key!r} in a direction file",
                    str(path),
                    "re-create it with lscape slice",
                )
            dirs[k][name] = fh.get_tensor(key)
    return dirs, cast(DirectionFileMeta, meta)  # its schema and the directions' count checked
