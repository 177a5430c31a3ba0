"""Reading a trajectory file as a series of models (``lscape probe TRAJ --snapshot all|LIST``).

A trajectory (``NAME.trajectory.safetensors``, see :func:`~lscape_cli.storage.checkpoint.save_trajectory`)
holds parameter snapshots ``(T, *shape)`` and, in its metadata, the checkpoint's keys plus the ``epochs``
and ``steps`` of the T snapshots. It holds no buffers, so models with buffers (BatchNorm) are refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from lscape_cli.errors import LscapeError
from lscape_cli.storage.checkpoint import Checkpoint, LoadedModel, load_state_strict, load_trajectory


@dataclass
class Snapshots:
    """The snapshots of one trajectory file."""

    path: Path
    tensors: dict[str, torch.Tensor]  # name -> (T, *shape)
    epochs: list[int]
    steps: list[int]

    def state(self, t: int) -> dict[str, torch.Tensor]:
        """Snapshot ``t``'s parameters."""
        return {n: v[t] for n, v in self.tensors.items()}

    def select(self, text: str) -> list[int]:
        """Snapshot indices for ``all`` or a comma-separated list of stored epochs."""
        if text == "all":
            return list(range(len(self.epochs)))
        try:
            wanted = [int(v) for v in text.split(",") if v.strip()]
        except ValueError:
            wanted = []
        missing = [e for e in wanted if e not in self.epochs]
        if not wanted or missing:
            raise LscapeError(
                f"no snapshot at epoch {missing[0]}" if missing else f"invalid snapshot list {text!r}",
                "--snapshot",
                f"give 'all' or epochs from {self.epochs}",
            )
        return [self.epochs.index(e) for e in wanted]


def load_snapshot_model(
    path: Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> tuple[LoadedModel, Snapshots]:
    """The module a trajectory describes, holding its last snapshot, and all the snapshots."""
    from lscape_cli.models import ModelSpec, build

    traj = load_trajectory(path)
    spec = ModelSpec.from_dict(traj.meta["model"], where=f"{path} (model description)")  # type: ignore[arg-type]
    module = build(spec)
    if any(True for _ in module.buffers()):
        raise LscapeError(
            "the trajectory holds no buffers (e.g. BatchNorm statistics) but this model has some",
            str(path),
            "probe the checkpoints themselves",
        )
    epochs = [int(e) for e in traj.meta.get("epochs", [])]
    steps = [int(s) for s in traj.meta.get("steps", [])]
    snaps = Snapshots(path, traj.state, epochs, steps)
    last = snaps.state(len(epochs) - 1)
    load_state_strict(module, last, str(path))
    module.to(device=device, dtype=dtype).eval()
    return LoadedModel(module, Checkpoint(path, last, traj.meta), spec), snaps
