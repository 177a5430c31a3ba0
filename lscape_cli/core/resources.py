"""Memory estimates made before large allocations, so an impossible request is refused up front.

Each estimate counts the dominant tensors of a request (no allocation: models are built on the
``meta`` device) and :func:`require` compares it with the memory the device has free, refusing with
the amount needed and the option that lowers it. The estimates are lower bounds of what the run holds
at once (allocator overhead and small tensors are not counted), so a refusal is never a false alarm.

- training (:func:`train_bytes`): per restart, parameters + gradients + optimiser state, and the
  activations of one batch kept for the backward pass; plus a synthetic data set's samples;
- slice grids (:func:`grid_bytes`): loss and accuracy per point in float64, the partial grid and done
  flags, and the record's JSON text (about 25 characters per number);
- spectral density (:func:`density_bytes`): the Lanczos basis kept for full reorthogonalisation,
  ``steps`` float64 vectors of the parameter count, plus the tridiagonal problem.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from lscape_cli.errors import LscapeError

GIB = 2**30
JSON_BYTES_PER_NUMBER = 25


def available_bytes(device: torch.device) -> int:
    """Free memory: CUDA's free device memory, else the kernel's MemAvailable (physical memory)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def require(needed: float, what: str, lower: str, device: torch.device) -> None:
    """Refuse a request needing more than the free memory, naming the option that lowers it."""
    free = available_bytes(device)
    if needed > free:
        raise LscapeError(
            f"{what} needs at least {_size(needed)} of memory but {_size(free)} is free on {device.type}",
            lower,
            "lower it, or run where more memory is free",
        )


def _size(n: float) -> str:
    for unit, power in (("PiB", 50), ("TiB", 40), ("GiB", 30)):
        if n >= 2**power:
            return f"{n / 2**power:.3g} {unit}"
    return f"{n / 2**20:.3g} MiB"


def model_sizes(build: object, input_shape: tuple[int, ...]) -> tuple[int, int]:
    """``(parameters, activation scalars per sample)`` of a module built by ``build()`` on ``meta``.

    Activations: the outputs of every leaf module on one sample, what autograd keeps for backward.
    """
    with torch.device("meta"):
        module = build()  # type: ignore[operator]
        total = [0]

        def count(_m: torch.nn.Module, _i: object, out: object) -> None:
            if isinstance(out, torch.Tensor):
                total[0] += out.numel()

        hooks = [m.register_forward_hook(count) for m in module.modules() if not list(m.children())]
        try:
            module(torch.empty(1, *input_shape))
        except (RuntimeError, NotImplementedError, TypeError):  # an op without a meta kernel
            total[0] = 0  # activations unknown: the estimate keeps the parameters only
        finally:
            for h in hooks:
                h.remove()
        params = sum(p.numel() for p in module.parameters())
    return int(params), int(total[0])


def train_bytes(
    params: int,
    activations_per_sample: int,
    *,
    restarts: int,
    batch: int,
    optimizer_states: int,
    element_bytes: int,
) -> float:
    """Bytes of training: per restart, (2 + states) parameter copies and one batch's activations (x2)."""
    per_restart = params * (2 + optimizer_states) + 2 * activations_per_sample * batch
    return float(restarts) * per_restart * element_bytes


def grid_bytes(points: int) -> float:
    """Bytes of a slice grid of ``points`` points held at once (tensors, partial state and JSON text)."""
    return float(points) * (2 * 8 + 2 * 8 + 1 + 2 * JSON_BYTES_PER_NUMBER)


def density_bytes(params: int, steps: int) -> float:
    """Bytes of one SLQ run: the Lanczos basis (``steps`` float64 vectors) and its eigenproblem."""
    return 8.0 * (float(steps) * params + float(steps) ** 2)


def optimizer_states(optimizer: str, momentum: float) -> int:
    """Parameter-sized tensors an optimiser keeps: Adam's two moments, SGD's momentum buffer."""
    if optimizer in ("adam", "adamw"):
        return 2
    return 1 if momentum > 0 else 0
