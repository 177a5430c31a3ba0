"""Data parallelism across processes started by ``torchrun`` (torch.distributed).

``torchrun --nproc-per-node N -m lscape_cli probe CKPT ...`` starts N processes; each holds a contiguous,
disjoint slice of the evaluated split, computes partial sums, and an all-reduce adds them (gloo on CPU,
NCCL on CUDA). Rank 0 alone writes files and prints. Results equal a single process's up to the order
of floating-point additions.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from lscape_cli.core.linalg.hvp import Shard


@dataclass(frozen=True)
class Group:
    """The place of this process in the job (a single process is rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes outputs and prints."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        """More than one process."""
        return self.world_size > 1

    def bounds(self, n: int) -> tuple[int, int]:
        """``[start, stop)`` of this rank's contiguous slice of ``n`` samples."""
        return self.rank * n // self.world_size, (self.rank + 1) * n // self.world_size

    def shard(self, n: int) -> Shard | None:
        """The :class:`Shard` for an objective over ``n`` samples in total (None when single-process)."""
        if not self.active:
            return None

        def all_reduce(t: torch.Tensor) -> torch.Tensor:
            out = t.clone()
            torch.distributed.all_reduce(out, op=torch.distributed.ReduceOp.SUM)
            return out

        return Shard(total=n, reduce=all_reduce)

    def gather(self, obj: object) -> list[object]:
        """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` when single-process."""
        if not self.active:
            return [obj]
        out: list[object] = [None] * self.world_size
        torch.distributed.all_gather_object(out, obj)
        return out


@contextlib.contextmanager
def group_from_env(device: torch.device) -> Iterator[Group]:
    """Join the torchrun job described by the environment, or act as a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        yield Group()
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    torch.distributed.init_process_group(backend=backend)
    try:
        yield Group(rank=torch.distributed.get_rank(), world_size=torch.distributed.get_world_size())
    finally:
        torch.distributed.destroy_process_group()
