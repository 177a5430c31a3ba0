"""Reading a trajectory file's snapshots (``lscape probe TRAJ --snapshot all|LIST``).

A trajectory (``NAME.trajectory.safetensors``, see :func:`~lscape_cli.storage.checkpoint.save_trajectory`)
holds parameter snapshots ``(T, *shape)`` and, in its metadata, the checkpoint's keys plus the ``epochs``
and ``steps`` of the T snapshots. It holds no buffers, so models with buffers (BatchNorm) are refused
(:func:`lscape_cli.models.loading.load_snapshot_model` rebuilds the model).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from lscape_cli.errors import LscapeError
from lscape_cli.storage.checkpoint import Checkpoint


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


def read_snapshots(traj: Checkpoint) -> Snapshots:
    """The snapshots of a trajectory read by :func:`~lscape_cli.storage.checkpoint.load_trajectory`.

    Its ``epochs`` and ``steps`` are checked: one integer per snapshot, as many as every tensor holds.
    """
    epochs, steps = _counts(traj, "epochs", traj.path), _counts(traj, "steps", traj.path)
    return Snapshots(traj.path, traj.state, epochs, steps)


def _counts(traj: Checkpoint, key: str, path: Path) -> list[int]:
    """``epochs`` or ``steps``: one integer per snapshot, as many as every tensor holds."""
    value = traj.meta.get(key, None if key == "epochs" else [])
    sizes = {int(t.shape[0]) if t.dim() else 0 for t in traj.state.values()}
    ints = isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    if not ints or not isinstance(value, list) or (key == "epochs" and (not value or sizes != {len(value)})):
        raise LscapeError(
            f"malformed trajectory metadata: {key!r} must list one integer per snapshot "
            f"(got {str(value)[:40]}, tensors hold {sorted(sizes)} snapshots)",
            str(path),
            "re-create it with lscape train --save-trajectory",
        )
    return [int(v) for v in value]
