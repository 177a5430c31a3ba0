"""Refuse a count the machine cannot serve before any work starts: an optimistic time and a memory bound.

Every count a user types (``--matvecs``, ``--max-iter``, ``--density-runs``, grid ``--steps``,
``--points``, ``--epochs``, ``--restarts`` ...) multiplies the work of a command. A :class:`Demand` states,
for one option, a lower bound on the floating-point work it asks for and the memory it holds at once;
:func:`enforce` compares them with the :class:`Machine` and raises :class:`BudgetError` naming the option
that lowers the demand, so a typo (``--matvecs 45000000000``) fails at once instead of running for
months or ending in an out-of-memory kill.

The work bound is deliberately optimistic, so only demands that cannot finish are refused: a forward pass
costs at least ``2 P N`` floating-point operations (every one of the ``P`` parameters multiplies and adds
at least once per sample; convolutions reuse weights and cost more), a gradient at least
:data:`GRADIENT_FORWARDS` forwards and a Hessian-vector product at least :data:`HVP_FORWARDS`. The machine
is credited with more than any device of its kind sustains (:data:`CPU_PEAK_FLOPS_PER_CORE` per core,
:data:`CUDA_PEAK_FLOPS`), and a demand is refused when even at that rate it would need more than
:data:`MAX_SECONDS`. Memory is compared with what the device has free now (``MemAvailable`` on Linux, the
physical memory elsewhere; ``torch.cuda.mem_get_info`` on CUDA).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from lscape_cli.errors import LscapeError

GRADIENT_FORWARDS = 3.0  # a loss + gradient costs at least this many forward passes
HVP_FORWARDS = 4.0  # a Hessian-vector product (double backward) at least this many
CPU_PEAK_FLOPS_PER_CORE = 2e11  # above any CPU core's float32 FMA peak (~32 flop/cycle at 3-5 GHz)
CUDA_PEAK_FLOPS = 5e15  # above any single GPU's dense float32/TF32 peak
MAX_SECONDS = 86_400.0 * 7  # refuse what needs more than a week even at the peak rate
GRID_BYTES_PER_POINT = 32  # a grid point's stored values (loss, accuracy per split, in float64)
PATHS = 3  # connect: the linear path, the aligned path and a curve
TRAINING_COPIES = 4  # parameters, gradients and up to two optimizer moments per parameter
HUGE = 1e300  # counts are capped here before float arithmetic (a 400-digit --steps must not overflow)


class BudgetError(LscapeError):
    """An option asks for more time or memory than the machine has (raised before any work starts)."""


@dataclass(frozen=True)
class Demand:
    """What one user-supplied count asks of the machine.

    Attributes:
        option: the flag that sets it (and lowers the demand), e.g. ``"--matvecs"``.
        value: the value given.
        what: what the count multiplies, e.g. ``"Hessian-vector products for the trace"``.
        flops: a lower bound on the floating-point operations it needs.
        bytes: the memory it holds at once.
        label: how the message names the demand (default ``"OPTION VALUE"``).
    """

    option: str
    value: float
    what: str
    flops: float = 0.0
    bytes: float = 0.0
    label: str | None = None

    def describe(self) -> str:
        """``--matvecs 1e+11``, or the label."""
        shown = f"{self.value:.4g}" if abs(self.value) >= 1e12 else f"{self.value:g}"
        return self.label or f"{self.option} {shown}"


@dataclass(frozen=True)
class Machine:
    """The most a command may ask of this machine: a peak operation rate and the free memory."""

    peak_flops: float
    memory_bytes: float
    kind: str

    @classmethod
    def of(cls, device: torch.device | str) -> Machine:
        """The machine behind ``device`` (CPU cores and free RAM, or one CUDA device's free memory)."""
        device = torch.device(device)
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            return cls(CUDA_PEAK_FLOPS, float(free), f"{device} ({free / 2**30:.1f} GiB free)")
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        ram = _available_ram()
        return cls(cores * CPU_PEAK_FLOPS_PER_CORE, ram, f"{cores} CPU cores, {ram / 2**30:.1f} GiB free")


def _available_ram() -> float:
    """``MemAvailable`` from /proc/meminfo, else the physical memory."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def count(value: float) -> float:
    """A user's count as a float fit for cost arithmetic (capped at :data:`HUGE`)."""
    return float(min(value, HUGE))


def _duration(seconds: float) -> str:
    for unit, size in (("years", 365.25 * 86_400), ("days", 86_400), ("hours", 3600), ("minutes", 60)):
        if seconds >= size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds:.3g} s"


def enforce(demands: Iterable[Demand], machine: Machine) -> None:
    """Raise :class:`BudgetError` for the first demand beyond ``machine``'s memory or time bound.

    Args:
        demands: one per count the command was given.
        machine: what the command runs on (:meth:`Machine.of`).

    Raises:
        BudgetError: naming the option, what it needs, what the machine has and how to lower it.
    """
    for d in demands:
        if d.bytes > machine.memory_bytes:
            raise BudgetError(
                f"{d.describe()} needs {d.bytes / 2**30:.3g} GiB for {d.what} but the machine has "
                f"{machine.memory_bytes / 2**30:.3g} GiB free",
                fix=f"lower {d.option}",
            )
        seconds = d.flops / machine.peak_flops
        if seconds > MAX_SECONDS:
            raise BudgetError(
                f"{d.describe()} needs at least {d.flops:.3g} floating-point operations for {d.what}, "
                f"{_duration(seconds)} even at {machine.peak_flops:.2g} FLOP/s ({machine.kind})",
                fix=f"lower {d.option}",
            )


@dataclass(frozen=True)
class Problem:
    """The sizes every cost is built from: parameters, samples and the bytes of one number."""

    num_params: int
    num_samples: int
    itemsize: int = 4

    @classmethod
    def of(cls, module: torch.nn.Module, num_samples: int) -> Problem:
        """The sizes of ``module`` (its parameters and their dtype) over ``num_samples`` samples."""
        params = list(module.parameters())
        itemsize = params[0].element_size() if params else 4
        return cls(sum(p.numel() for p in params), num_samples, itemsize)

    @property
    def forward(self) -> float:
        """Lower bound on one forward pass over the samples (``2 P N``)."""
        return 2.0 * self.num_params * self.num_samples

    @property
    def hvp(self) -> float:
        """Lower bound on one Hessian-vector product over the samples."""
        return HVP_FORWARDS * self.forward

    def vectors(self, n: float, itemsize: int | None = None) -> float:
        """Bytes of ``n`` parameter-sized vectors."""
        return count(n) * self.num_params * (itemsize or self.itemsize)


def num_parameters_of(build: Callable[[], torch.nn.Module]) -> int:
    """Parameters of the module ``build()`` makes, counted on the meta device (nothing is allocated)."""
    with torch.device("meta"):
        module = build()
    return sum(p.numel() for p in module.parameters())


def grid_demands(dims: int, steps: int, lines: int, size: Problem) -> list[Demand]:
    """A slice: ``steps`` points per axis of a plane, or ``lines`` lines of ``steps`` points."""
    points = count(steps) ** 2 if dims == 2 else count(steps) * count(lines)
    work, grid = points * size.forward, points * GRID_BYTES_PER_POINT
    if dims == 1 and lines > steps:
        return [Demand("--count", lines, "line directions", work, grid + size.vectors(lines))]
    out = [Demand("--steps", steps, f"{points:.4g} grid points", work, grid)]
    if dims == 1:
        out.append(Demand("--count", lines, "line directions", bytes=size.vectors(lines)))
    return out


def path_demands(points: int, curve_epochs: int, curve: bool, size: Problem) -> list[Demand]:
    """``lscape connect``: up to three paths of ``points`` points, and a trained curve's epochs."""
    evals = PATHS * count(points)
    out = [Demand("--points", points, "path points", evals * size.forward, evals * GRID_BYTES_PER_POINT)]
    if curve:
        work = count(curve_epochs) * GRADIENT_FORWARDS * size.forward
        out.append(Demand("--curve-epochs", curve_epochs, "curve training", work))
    return out


def training_demands(
    restarts: int, epochs: int, max_steps: int | None, batch: int, snapshots_every: int | None, size: Problem
) -> list[Demand]:
    """``lscape train``: the model, its restarts, the epoch or step budget and the kept trajectory."""
    r = count(restarts)
    state = size.vectors(TRAINING_COPIES)  # parameters, gradients and two optimizer moments
    samples = count(epochs) * size.num_samples
    option, value = "--epochs", epochs
    if max_steps is not None and count(max_steps) * batch < samples:
        samples, option, value = count(max_steps) * batch, "--max-steps", max_steps
    per_sample = GRADIENT_FORWARDS * size.forward / max(size.num_samples, 1)
    return [
        model_demand(size.num_params, size.itemsize),
        Demand("--restarts", restarts, "restarts trained together", bytes=r * state),
        Demand(option, value, "training", r * samples * per_sample),
        *_trajectory(restarts, epochs, snapshots_every, size),
    ]


def model_demand(num_params: int, itemsize: int) -> Demand:
    """A model's parameters and training state (gradients, two optimizer moments), one restart."""
    state = count(num_params) * itemsize * TRAINING_COPIES
    label = f"a model of {num_params:.3g} parameters"
    return Demand(
        "--width/--depth", num_params, "its parameters and training state", bytes=state, label=label
    )


def _trajectory(restarts: int, epochs: int, every: int | None, size: Problem) -> list[Demand]:
    """The parameter snapshots ``--save-trajectory`` keeps (one per ``every`` epochs, and the start)."""
    if every is None:
        return []
    kept = count(restarts) * size.vectors(count(epochs) / every + 1)
    return [Demand("--save-trajectory", every, "trajectory snapshots", bytes=kept)]


def check(demands: Iterable[Demand], device: torch.device | str) -> None:
    """:func:`enforce` on the machine behind ``device``."""
    enforce(demands, Machine.of(device))


def synthetic_demands(num_samples: int | None, input_dim: int | None) -> list[Demand]:
    """The generated ``synthetic`` dataset: ``num_samples × input_dim`` float64 draws (then float32)."""
    n, dim = count(num_samples or 0), count(input_dim or 0)
    out = []
    if num_samples is not None:
        out.append(Demand("--num-samples", num_samples, "synthetic samples", bytes=n * max(dim, 1) * 12))
    if input_dim is not None:
        out.append(Demand("--input-dim", input_dim, "synthetic input features", bytes=max(n, 1) * dim * 12))
    return out
