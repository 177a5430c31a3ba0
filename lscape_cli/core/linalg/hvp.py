"""Hessian-vector products of the whole-split loss, behind one interface with interchangeable strategies.

The objective is the evaluation protocol's loss, the mean over all ``N`` samples of the split,

    L(θ) = (1/N) Σ_chunks loss_sum(f(θ, x_c), y_c),

evaluated in chunks of at most ``max_batch`` samples, each chunk weighted by its sample count, so chunking
changes nothing beyond float rounding. ``H = ∇²L(θ)`` is never formed: estimators only see ``v ↦ Hv``
(Pearlmutter 1994, "Fast exact multiplication by the Hessian", Neural Computation 6(1)).

Vectors are name -> tensor dicts shaped like the parameters (:data:`Params`); :mod:`lscape_cli.core.params`
does the linear algebra on them (dot, norm, axpy, flatten/unflatten), re-exported here. The strategies
live in :mod:`._hvp_strategies`, their timing in :mod:`._hvp_calibration`.

Strategies (same numbers up to rounding, different cost; DESIGN.md "Performance principles"):

- ``double_backward``: the gradient graph ``g_c = ∇ loss_c`` is built once per chunk with
  ``create_graph=True`` and kept; each product is one more backward pass through it,
  ``Hv = Σ_c ∂(g_c·v)/∂θ`` (``retain_graph=True``). The graph lives until :meth:`HVP.close` (or the
  outermost ``with`` block) ends, and nothing is ever written to ``.grad`` (PyHessian's leak).
- ``fwd_rev``: forward-over-reverse ``jvp(jacrev(L_c))`` per chunk on the functional model, nothing kept
  between products (``jvp(grad(·))`` fails with mean-reduced MSE in torch 2.x; ``jvp(jacrev(·))`` works).
- ``vmap``: ``k`` vectors at once, ``vmap`` over the ``fwd_rev`` product; wins when an accelerator has
  idle width, costs ``k`` times the activation memory.
- ``auto`` (the default): ``double_backward`` on CPU, where it was measured fastest for every model
  tried (docs/benchmarks.md: 10 ms against 19-43 ms per product on the MLP, 0.64 s against 1.5 s on
  a CNN) and where measuring in every process would cost more than it can save (the first
  ``torch.func`` transform imports ``torch._dynamo``: 1.2 s and ~120 MB); ``measure`` elsewhere.
- ``measure``: chosen by measurement on the objective's own model, data and device
  (:func:`calibrate`): each strategy runs a few products on one chunk of at most
  :data:`CALIBRATION_SAMPLES` samples on CPU (a whole chunk on accelerators) after a warm-up, and the
  fastest per product is used. Single products (Lanczos, SLQ) choose between ``double_backward`` and
  ``fwd_rev``; batches of ``batch_size`` vectors (Hutchinson, Hutch++) may also go to ``vmap``.
  ``double_backward``'s one-off graph build is timed apart and charged as if spread over
  :data:`AMORTISED_PRODUCTS` products. Decisions are cached per process, keyed by device, dtype,
  model, parameter shapes, loss and calibration size. On the 2-core CPU of DESIGN.md
  ``double_backward`` wins for the sample MLP and SimpleCNN, and calibrating takes about 50 ms (MLP)
  and 0.5 s (CNN); the first ``torch.func`` transform in a process also imports ``torch._dynamo``
  (1.2 s there), which the first calibration pays.

Memory: :mod:`lscape_cli.core.linalg.memory` chooses the chunk size and how many chunk graphs
``double_backward`` keeps (``retain_chunks``), from the measured size of the graph.
"""

from __future__ import annotations

import math
from types import TracebackType
from typing import Any, Protocol, TypedDict, TypeVar

import torch
from torch import nn

from lscape_cli.core.attention import BACKEND as ATTENTION_BACKEND
from lscape_cli.core.choices import HvpStrategy
from lscape_cli.core.linalg._hvp_calibration import (
    AMORTISED_PRODUCTS,
    CALIBRATION_SAMPLES,
    Calibration,
    Timings,
    calibrate,
    choose,
)
from lscape_cli.core.linalg._hvp_strategies import STRATEGIES, _DoubleBackward, _FwdRev, _Strategy, _VMap
from lscape_cli.core.linalg.memory import (
    CPU_CHUNK_GRAPH_BYTES,
    DEFAULT_MEMORY_BUDGET_MIB,
    Footprint,
    Plan,
    default_memory_budget_mib,
    footprint,
    plan,
)
from lscape_cli.core.objective import Objective, Shard
from lscape_cli.core.params import (
    Params,
    axpy,
    dot,
    flatten,
    gaussian,
    norm,
    numel,
    rademacher,
    scale,
    unflatten,
)
from lscape_cli.core.progress import ProgressFn

__all__ = [  # the HVP interface, and what its users import from here
    "AMORTISED_PRODUCTS",
    "CALIBRATION_SAMPLES",
    "CHOICES",
    "CPU_STRATEGY",
    "CPU_CHUNK_GRAPH_BYTES",
    "DEFAULT_MEMORY_BUDGET_MIB",
    "HVP",
    "STRATEGIES",
    "Calibration",
    "DenseOperator",
    "Footprint",
    "NestedContext",
    "Objective",
    "Operator",
    "Params",
    "Plan",
    "ProgressFn",
    "Shard",
    "Timings",
    "axpy",
    "calibrate",
    "choose",
    "default_memory_budget_mib",
    "dot",
    "flatten",
    "footprint",
    "gaussian",
    "gradient",
    "loss_and_gradient",
    "norm",
    "numel",
    "plan",
    "rademacher",
    "scale",
    "unflatten",
]

CHOICES = HvpStrategy.values()  # what a caller may ask for: auto, measure, or one of STRATEGIES
CPU_STRATEGY = "double_backward"  # ``auto`` on CPU (module docstring)


# ---------------------------------------------------------------------------------------------------------
# The objective (:class:`~lscape_cli.core.objective.Objective`) and its gradient.


def forward_mode_safe(model: nn.Module) -> bool:
    """False for models with an affine ``nn.LayerNorm``: forward-over-reverse products are wrong there.

    Measured with this project's torch: ``torch.func.hessian`` (``jacfwd(jacrev)``) of
    ``LayerNorm(Linear(x))`` differs from the double-backward Hessian and from finite differences by up
    to 65 (the double backward agrees with finite differences to 1e-12); without the affine weight, or
    with the norm on the inputs, they agree to 1e-14. Such models get ``double_backward`` only.
    """
    return not any(isinstance(m, nn.LayerNorm) and m.elementwise_affine for m in model.modules())


def loss_and_gradient(obj: Objective) -> tuple[float, Params]:
    """The mean loss ``L(θ)`` and the full-split gradient ``∇L(θ)`` (chunked, sample-weighted)."""
    leaves = {n: p.detach().requires_grad_(True) for n, p in obj.params.items()}
    total = 0.0
    grad = {n: torch.zeros_like(p) for n, p in obj.params.items()}
    for xb, yb in obj.chunks():
        value = obj.chunk_loss(leaves, xb, yb)
        parts = torch.autograd.grad(value, list(leaves.values()), allow_unused=True)
        for acc, part in zip(grad.values(), parts, strict=True):
            if part is not None:
                acc += part
        total += float(value.detach())
    if obj.shard is not None:  # one all-reduce for gradient and loss together
        flat = flatten(grad)
        flat = obj.reduce(torch.cat([flat, flat.new_tensor([total])]))
        return float(flat[-1]), unflatten(flat[:-1], grad)
    return total, grad


def gradient(obj: Objective) -> Params:
    """The full-split gradient ``∇L(θ)``; ``norm(gradient(obj))`` is the gradient norm."""
    return loss_and_gradient(obj)[1]


# ---------------------------------------------------------------------------------------------------------
# The operator.


class Operator(Protocol):
    """What the estimators need: products, a vector template, and a product count."""

    params: Params
    num_matvecs: int

    @property
    def batch_size(self) -> int:
        """Vectors the operator computes together in one :meth:`hvp_many` call."""
        ...

    def __call__(self, v: Params) -> Params:
        """``Hv``."""
        ...

    def hvp_many(self, vs: list[Params]) -> list[Params]:
        """``[Hv for v in vs]``."""
        ...

    @property
    def dim(self) -> int:
        """``n``."""
        ...

    def __enter__(self) -> Any: ...

    def __exit__(self, *exc: Any) -> Any: ...


class _Closable(Protocol):
    _depth: int

    def close(self) -> None: ...


_Op = TypeVar("_Op", bound=_Closable)


class NestedContext:
    """The operators' ``with`` protocol: blocks nest, and the outermost exit calls ``close()``.

    Estimators enter the operator they are given, so a caller's own ``with`` keeps the kept graphs alive
    across several estimator runs and releases them once, at its end.
    """

    def __enter__(self: _Op) -> _Op:
        self._depth += 1
        return self

    def __exit__(
        self: _Closable,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._depth -= 1
        if self._depth == 0:
            self.close()


class CalibrationRun(TypedDict):
    """The calibration behind an ``auto`` strategy choice: chunk size, seconds spent, from the cache."""

    samples: int
    seconds: float
    cached: bool


class ProductsDescription(TypedDict):
    """:meth:`HVP.describe` (and ``GGN.describe``): how products are computed, and the chunking."""

    strategy: str
    batched_strategy: str
    batch_size: int
    chosen_by: str
    seconds_per_product: dict[str, float | None] | None
    graph_build_seconds: float | None
    calibration: CalibrationRun | None
    chunk_size: int
    num_chunks: int
    retain_chunks: int
    attention_backend: str


class HVP(NestedContext):
    """The linear operator ``v ↦ Hv`` of an :class:`Objective`, counting its products.

    Use it as a context manager: the ``double_backward`` graph is built on the first product and
    released when the outermost ``with`` block exits (blocks nest, so a caller can keep one graph
    alive across several estimators by wrapping them in its own ``with op:``). Estimators in this package
    enter the operator themselves, so the graph never outlives an estimator run unless the caller asks.
    A product called outside any ``with`` block builds the graph and keeps it until :meth:`close`.

    Args:
        obj: the objective (:func:`plan` chooses its chunk size and ``retain_chunks``).
        strategy: ``"double_backward"``, ``"fwd_rev"``, ``"vmap"``, ``"measure"`` (timed on ``obj``
            by :func:`calibrate` when first needed, possibly one strategy for single vectors and another
            for batches) or ``"auto"`` (:data:`CPU_STRATEGY` on CPU, ``"measure"`` elsewhere; see the
            module docstring).
        retain_chunks: ``double_backward`` only: chunk graphs kept between products (None: all).
        batch_size: ``vmap`` only: vectors per vmapped product.
        unchecked: build a named forward-mode strategy even where :func:`forward_mode_safe` says it is
            wrong (only :mod:`lscape_cli.core.linalg.hvp_check` does, to measure by how much).

    Attributes:
        num_matvecs: products computed so far (a batch of ``k`` vectors counts ``k``).
        params: the point ``θ``; also the template (shapes, dtype, device) of every vector.
        strategy, batched_strategy: the strategies for single vectors and for batches (``"measure"``
            until measured).
        calibration: what ``measure`` measured (``None`` otherwise).
        chosen_by: ``"user"``, ``"measurement"`` or ``"cpu-default"``.
    """

    def __init__(
        self,
        obj: Objective,
        strategy: str = "auto",
        retain_chunks: int | None = None,
        batch_size: int = 8,
        unchecked: bool = False,
    ) -> None:
        if strategy not in CHOICES:
            raise ValueError(f"unknown HVP strategy {strategy!r}: expected one of {CHOICES}")
        if batch_size < 1 or (retain_chunks is not None and retain_chunks < 0):
            raise ValueError(
                f"batch_size must be >= 1 and retain_chunks >= 0, got {batch_size}, {retain_chunks}"
            )
        self._obj = obj
        self.params = obj.params
        self.num_matvecs = 0
        self.calibration: Calibration | None = None
        self._retain_chunks = retain_chunks
        self._vmap_batch = batch_size
        self._depth = 0
        self._impls: dict[str, _Strategy] = {}
        self.chosen_by = "user"
        if strategy != CPU_STRATEGY and not (unchecked or forward_mode_safe(obj.model)):
            if strategy in ("fwd_rev", "vmap"):
                raise ValueError(
                    f"HVP strategy {strategy!r} uses forward-mode derivatives, which torch computes wrongly "
                    "through an affine nn.LayerNorm after parameters; use double_backward (or auto)"
                )
            strategy, self.chosen_by = CPU_STRATEGY, "layer-norm-double-backward"
        if strategy == "auto":
            on_cpu = obj.x.device.type == "cpu"
            strategy, self.chosen_by = (CPU_STRATEGY, "cpu-default") if on_cpu else ("measure", "measurement")
        elif strategy == "measure":
            self.chosen_by = "measurement"
        self.strategy = self.batched_strategy = strategy
        if strategy != "measure":
            self._select(strategy, strategy)

    def _select(self, single: str, batched: str) -> None:
        for name in {single, batched} - set(self._impls):
            if name == "double_backward":
                self._impls[name] = _DoubleBackward(self._obj, self._retain_chunks)
            elif name == "fwd_rev":
                self._impls[name] = _FwdRev(self._obj)
            else:
                self._impls[name] = _VMap(self._obj, self._vmap_batch)
        self.strategy, self.batched_strategy = single, batched

    def _resolve(self) -> None:
        """Measure and choose, the first time ``measure`` needs an answer."""
        if self.strategy == "measure":
            self.calibration = calibrate(self._obj, self._retain_chunks, self._vmap_batch)
            self._select(self.calibration.single, self.calibration.batched)

    @property
    def _impl(self) -> _Strategy:
        """The implementation for single vectors."""
        self._resolve()
        return self._impls[self.strategy]

    @property
    def batch_size(self) -> int:
        """Vectors per :meth:`hvp_many` call that the strategy computes together (1 unless ``vmap``)."""
        self._resolve()
        return self._vmap_batch if self.batched_strategy == "vmap" else 1

    def __call__(self, v: Params) -> Params:
        """``Hv`` for one vector (a dict shaped like :attr:`params`)."""
        return self.hvp_many([v])[0]

    def hvp_many(self, vs: list[Params]) -> list[Params]:
        """``[Hv for v in vs]``, batched where the strategy can."""
        self._resolve()
        out = self._impls[self.strategy if len(vs) == 1 else self.batched_strategy].apply(vs)
        if self._obj.shard is not None:  # one all-reduce for the whole batch of products
            flat = self._obj.reduce(torch.stack([flatten(v) for v in out]))
            out = [unflatten(row, self.params) for row in flat]
        self.num_matvecs += len(vs)
        return out

    @property
    def dim(self) -> int:
        """Number of parameters ``n`` (``H`` is ``n x n``)."""
        return numel(self.params)

    @property
    def has_graph(self) -> bool:
        """Whether a gradient graph is currently held (``double_backward`` between build and close)."""
        return any(impl.has_graph for impl in self._impls.values())

    def describe(self) -> ProductsDescription:
        """The strategies in use, how they were chosen, and the chunking (for records)."""
        self._resolve()
        n = int(self._obj.y.shape[0])
        chunks = math.ceil(n / self._obj.max_batch)
        cal = self.calibration
        run: CalibrationRun | None = (
            None if cal is None else {"samples": cal.samples, "seconds": cal.seconds, "cached": cal.cached}
        )
        return {
            "strategy": self.strategy,
            "batched_strategy": self.batched_strategy,
            "batch_size": self.batch_size,
            "chosen_by": self.chosen_by,
            "seconds_per_product": None if cal is None else cal.seconds_per_product,
            "graph_build_seconds": None if cal is None else cal.build_seconds,
            "calibration": run,
            "chunk_size": min(n, self._obj.max_batch),
            "num_chunks": chunks,
            "retain_chunks": chunks if self._retain_chunks is None else min(chunks, self._retain_chunks),
            "attention_backend": ATTENTION_BACKEND,
        }

    def close(self) -> None:
        """Release the gradient graph now; a later product rebuilds it."""
        for impl in self._impls.values():
            impl.release()


class DenseOperator:
    """An explicit symmetric matrix behind the :class:`HVP` interface (tests, exact small problems).

    Args:
        matrix: ``(n, n)`` symmetric tensor.
        like: template dict with ``n`` scalars in total (vectors are shaped like it).
    """

    def __init__(self, matrix: torch.Tensor, like: Params) -> None:
        if matrix.shape != (numel(like), numel(like)):
            raise ValueError(f"matrix shape {tuple(matrix.shape)} does not match {numel(like)} parameters")
        self.matrix = matrix
        self.params = like
        self.batch_size = 1
        self.num_matvecs = 0
        self.has_graph = False

    def __call__(self, v: Params) -> Params:
        """``Av``."""
        return self.hvp_many([v])[0]

    def hvp_many(self, vs: list[Params]) -> list[Params]:
        """``[Av for v in vs]``."""
        self.num_matvecs += len(vs)
        return [unflatten(self.matrix @ flatten(v), self.params) for v in vs]

    @property
    def dim(self) -> int:
        """``n``."""
        return numel(self.params)

    def __enter__(self) -> DenseOperator:
        return self

    def __exit__(self, *exc: object) -> None:
        return None
