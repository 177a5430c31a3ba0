"""Hessian-vector products of the whole-split loss, behind one interface with interchangeable strategies.

The objective is the evaluation protocol's loss, the mean over all ``N`` samples of the split,

    L(θ) = (1/N) Σ_chunks loss_sum(f(θ, x_c), y_c),

evaluated in chunks of at most ``max_batch`` samples, each chunk weighted by its sample count, so chunking
changes nothing beyond float rounding. ``H = ∇²L(θ)`` is never formed: estimators only see ``v ↦ Hv``
(Pearlmutter 1994, "Fast exact multiplication by the Hessian", Neural Computation 6(1)).

Vectors are name -> tensor dicts shaped like the parameters (:data:`Params`); helpers below do the
linear algebra on them (dot, norm, axpy, flatten/unflatten).

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

Memory (:func:`plan`): one forward and gradient pass with ``create_graph=True`` on 2 and on 4 samples,
under :func:`torch.autograd.graph.saved_tensors_hooks`, measures the bytes per sample of the largest
tensor saved for backward and of all of them (the graph ``double_backward`` keeps per chunk). The chunk
size is then the smallest of ``max_batch``, the split, the memory budget over the graph bytes per sample,
and on CPU :data:`CPU_TENSOR_BYTES` over the largest tensor's bytes per sample: glibc serves allocations
above its mmap threshold (adaptive, at most 32 MiB on 64-bit) with fresh ``mmap`` pages and returns them
on free, so a chunk whose activations exceed it page-faults every activation again on every product (a
width-16 SimpleCNN product on 4,000 MNIST images, one thread: 3.0 s in one chunk, 1.25 s in 7 chunks
of 572). Chunks are then
balanced (``ceil(N / ceil(N / cap))`` samples each). ``retain_chunks`` caps how many chunk graphs
``double_backward`` keeps between products: all when they fit in the budget, otherwise as many as fit
next to one rebuilt chunk; the others rebuild their gradient graph for every product (one forward +
backward more per product and chunk) and free it at once. ``None`` keeps all (fastest); ``0`` keeps
none (memory of one chunk).
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol

import torch
from torch import nn
from torch.func import functional_call, jacrev, jvp, vmap

from lscape_cli.core.objective import LOSSES, loss_sum

Params = dict[str, torch.Tensor]
ProgressFn = Callable[[dict[str, Any]], None]
STRATEGIES = ("double_backward", "fwd_rev", "vmap")
CHOICES = ("auto", "measure", *STRATEGIES)  # what a caller may ask for
CPU_STRATEGY = "double_backward"  # ``auto`` on CPU (module docstring)
CPU_TENSOR_BYTES = 30 << 20  # CPU: largest saved tensor per chunk, under glibc's 32 MiB mmap threshold
DEFAULT_MEMORY_BUDGET_MIB = 2048.0  # retained gradient graphs, CPU and other non-CUDA devices
CUDA_BUDGET_FRACTION = 0.5  # CUDA: default budget, this fraction of the free device memory
CALIBRATION_SAMPLES = 128  # CPU: samples ``auto`` times the strategies on
AMORTISED_PRODUCTS = 20  # ``auto`` charges double_backward's graph build as spread over this many products
_RANDOM_MODULES = (
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.modules.batchnorm._BatchNorm,
)


# ---------------------------------------------------------------------------------------------------------
# Linear algebra on name -> tensor dicts.


def dot(a: Params, b: Params) -> torch.Tensor:
    """Inner product ``Σ_name <a[name], b[name]>`` as a 0-d tensor."""
    return torch.stack([torch.vdot(a[k].flatten(), b[k].flatten()) for k in a]).sum()


def norm(a: Params) -> torch.Tensor:
    """Euclidean norm of the concatenated vector, as a 0-d tensor."""
    return torch.sqrt(dot(a, a))


def axpy(alpha: float | torch.Tensor, x: Params, y: Params) -> Params:
    """``y + alpha * x`` as a new dict."""
    return {k: y[k] + alpha * x[k] for k in y}


def scale(alpha: float | torch.Tensor, x: Params) -> Params:
    """``alpha * x`` as a new dict."""
    return {k: alpha * t for k, t in x.items()}


def flatten(a: Params) -> torch.Tensor:
    """Concatenate a dict's tensors (in its key order) into one 1-d tensor of length ``numel(a)``."""
    return torch.cat([t.reshape(-1) for t in a.values()])


def unflatten(flat: torch.Tensor, like: Params) -> Params:
    """Inverse of :func:`flatten`: views of ``flat`` shaped like ``like``'s tensors."""
    out, start = {}, 0
    for k, t in like.items():
        out[k] = flat[start : start + t.numel()].view_as(t)
        start += t.numel()
    return out


def numel(a: Params) -> int:
    """Total number of scalars in a dict of tensors."""
    return sum(t.numel() for t in a.values())


def rademacher(like: Params, generator: torch.Generator) -> Params:
    """A vector of independent ±1 entries shaped like ``like``.

    Drawn on the CPU from ``generator`` so that a seed gives the same probe on every device and dtype.
    """
    flat = (
        torch.randint(0, 2, (numel(like),), generator=generator, dtype=torch.int8).to(torch.float64) * 2 - 1
    )
    return unflatten(flat.to(device=_device(like), dtype=_dtype(like)), like)


def gaussian(like: Params, generator: torch.Generator) -> Params:
    """A standard normal vector shaped like ``like`` (drawn on the CPU in float64, see :func:`rademacher`)."""
    flat = torch.randn(numel(like), generator=generator, dtype=torch.float64)
    return unflatten(flat.to(device=_device(like), dtype=_dtype(like)), like)


def _dtype(a: Params) -> torch.dtype:
    return next(iter(a.values())).dtype


def _device(a: Params) -> torch.device:
    return next(iter(a.values())).device


# ---------------------------------------------------------------------------------------------------------
# The objective.


@dataclass(frozen=True)
class Shard:
    """The part of a data-parallel objective held by one process (torch.distributed).

    Every rank holds a disjoint slice of the split; chunk losses are divided by the global ``total`` and
    each rank's partial sums (loss, gradient, Hessian-vector products) are summed across ranks by
    ``reduce`` (an all-reduce). Random vectors come from seeded generators, identical on every rank, so
    every rank runs the same estimator on the same operator and reaches the same numbers.
    """

    total: int  # samples over all ranks
    reduce: Callable[[torch.Tensor], torch.Tensor]  # sum over ranks


@dataclass(frozen=True, eq=False)
class Objective:
    """The whole-split loss ``L(θ) = (1/N) Σ_i ℓ(f(θ, x_i), y_i)`` as a function of a parameter dict.

    Attributes:
        model: the architecture; only its forward is used (through ``functional_call``). It must be in
            eval mode if it has dropout or BatchNorm, so that ``H`` is a fixed symmetric matrix.
        params: name -> tensor, the point ``θ`` at which derivatives are taken (never modified).
        buffers: name -> tensor, e.g. BatchNorm running statistics.
        x: inputs, ``(N, *input_shape)``.
        y: integer labels, ``(N,)``.
        loss: ``"ce"`` or ``"mse"`` (see :mod:`lscape_cli.core.objective`).
        max_batch: samples per chunk (bounds memory; does not change the result).
    """

    model: nn.Module
    params: Params
    buffers: Params
    x: torch.Tensor
    y: torch.Tensor
    loss: str = "ce"
    max_batch: int = 4096
    shard: Shard | None = None

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}: expected one of {LOSSES}")
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}")
        if self.x.shape[0] != self.y.shape[0] or self.y.shape[0] == 0:
            raise ValueError(
                f"x and y must hold the same positive number of samples, got "
                f"{self.x.shape[0]} and {self.y.shape[0]}"
            )
        random = sorted({type(m).__name__ for m in self.model.modules() if isinstance(m, _RANDOM_MODULES)})
        if self.model.training and random:
            raise ValueError(
                f"model is in train mode with {', '.join(random)}: Hessian-vector products need a "
                "deterministic loss; call model.eval() first"
            )

    @classmethod
    def from_module(
        cls,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        loss: str = "ce",
        max_batch: int = 4096,
        shard: Shard | None = None,
    ) -> Objective:
        """The objective at ``model``'s current parameters (detached; the module is not modified)."""
        params = {n: p.detach() for n, p in model.named_parameters()}
        buffers = {n: b.detach() for n, b in model.named_buffers()}
        return cls(model, params, buffers, x, y, loss, max_batch, shard)

    @property
    def num_samples(self) -> int:
        """``N``, the number of samples the mean runs over (all ranks' shards together)."""
        return self.shard.total if self.shard is not None else int(self.y.shape[0])

    def reduce(self, t: torch.Tensor) -> torch.Tensor:
        """Sum a per-shard partial sum over ranks (identity in a single process)."""
        return self.shard.reduce(t) if self.shard is not None else t

    def chunks(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``(x_c, y_c)`` slices of at most ``max_batch`` samples of this process's data."""
        for start in range(0, int(self.y.shape[0]), self.max_batch):
            yield self.x[start : start + self.max_batch], self.y[start : start + self.max_batch]

    def chunk_loss(self, params: Params, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        """A chunk's share of the mean, ``loss_sum(f(θ, x_c), y_c) / N``."""
        logits = functional_call(self.model, (params, self.buffers), (xb,))
        return loss_sum(logits, yb, self.loss) / self.num_samples


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
# Memory plan: chunk size and retained graphs from measured bytes per sample.


@dataclass(frozen=True)
class Footprint:
    """Bytes per sample of the tensors a chunk's gradient graph saves for backward (``create_graph=True``).

    Attributes:
        largest_tensor_bytes_per_sample: the largest single saved tensor (an activation or its derivative).
        graph_bytes_per_sample: all saved tensors together, the graph ``double_backward`` keeps per chunk.
    """

    largest_tensor_bytes_per_sample: int
    graph_bytes_per_sample: int


def footprint(obj: Objective) -> Footprint:
    """Measure :class:`Footprint` with one forward and gradient pass on 2 and one on 4 samples.

    The tensors saved for backward are recorded in saving order; the growth of each from 2 to 4 samples
    is its size per sample, so parameter-sized tensors count for nothing. Storages that exist already
    (data, parameters, buffers) are skipped, and a storage saved twice counts once. When the two passes
    save different sequences (or the split holds fewer samples), sizes are divided by the sample count.
    """
    n = int(obj.y.shape[0])
    small, large = min(2, n), min(4, n)
    sizes_large = _saved_storage_bytes(obj, large)
    sizes_small = _saved_storage_bytes(obj, small) if large > small else []
    if large > small and len(sizes_small) == len(sizes_large):
        step = large - small
        per = [math.ceil(max(0, b - a) / step) for a, b in zip(sizes_small, sizes_large, strict=True)]
    else:
        per = [math.ceil(b / large) for b in sizes_large]
    return Footprint(max(per, default=0), sum(per))


def _saved_storage_bytes(obj: Objective, count: int) -> list[int]:
    """Sizes of the new storages saved by one chunk's forward and ``create_graph`` backward, in order."""
    existing = [obj.x, obj.y, *obj.params.values(), *obj.buffers.values()]
    skip = {t.untyped_storage().data_ptr() for t in existing}
    sizes: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in skip and storage.nbytes() > 0:
            skip.add(ptr)
            sizes.append(storage.nbytes())
        return t

    leaves = {n: p.detach().requires_grad_(True) for n, p in obj.params.items()}
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        value = obj.chunk_loss(leaves, obj.x[:count], obj.y[:count])
        torch.autograd.grad(value, list(leaves.values()), create_graph=True, allow_unused=True)
    return sizes


@dataclass(frozen=True)
class Plan:
    """How an objective's data is chunked, and how many chunk graphs ``double_backward`` keeps.

    Attributes:
        chunk_size: samples per chunk (the objective's new ``max_batch``).
        num_chunks: chunks of this process's data.
        retain_chunks: chunk graphs kept between products; the rest are rebuilt per product.
        memory_budget_mib: the budget for kept graphs (MiB).
        graph_bytes_per_sample, largest_tensor_bytes_per_sample: the measured :class:`Footprint`.
        limited_by: what set the chunk size: ``split`` (all in one chunk), ``max_batch``,
            ``tensor_size`` (CPU, :data:`CPU_TENSOR_BYTES`) or ``memory_budget``.
    """

    chunk_size: int
    num_chunks: int
    retain_chunks: int
    memory_budget_mib: float
    graph_bytes_per_sample: int
    largest_tensor_bytes_per_sample: int
    limited_by: str

    def apply(self, obj: Objective) -> Objective:
        """``obj`` evaluated in chunks of :attr:`chunk_size` (same loss, same derivatives)."""
        return dataclasses.replace(obj, max_batch=self.chunk_size)

    def to_dict(self) -> dict[str, Any]:
        """Plain values for records."""
        return dataclasses.asdict(self)


def default_memory_budget_mib(device: torch.device) -> float:
    """:data:`DEFAULT_MEMORY_BUDGET_MIB`, or on CUDA :data:`CUDA_BUDGET_FRACTION` of the free memory."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return CUDA_BUDGET_FRACTION * free / 2**20
    return DEFAULT_MEMORY_BUDGET_MIB


def plan(obj: Objective, memory_budget_mib: float | None = None, retain_chunks: int | None = None) -> Plan:
    """Chunk size and retained graphs for ``obj`` from its measured :func:`footprint`.

    Args:
        obj: the objective; its ``max_batch`` is an upper bound on the chunk size.
        memory_budget_mib: bytes (MiB) the kept gradient graphs may take; ``None``:
            :func:`default_memory_budget_mib`. A chunk's graph must fit in it, which also bounds the chunk.
        retain_chunks: overrides the number of kept graphs (``0``: rebuild every chunk per product).
    """
    budget = default_memory_budget_mib(obj.x.device) if memory_budget_mib is None else memory_budget_mib
    if not budget > 0 or (retain_chunks is not None and retain_chunks < 0):
        raise ValueError(
            f"memory_budget_mib must be > 0 and retain_chunks >= 0, got {budget}, {retain_chunks}"
        )
    fp = footprint(obj)
    n = int(obj.y.shape[0])
    budget_bytes = int(budget * 2**20)
    caps = {"split": n, "max_batch": obj.max_batch}
    if obj.x.device.type == "cpu" and fp.largest_tensor_bytes_per_sample > 0:
        caps["tensor_size"] = CPU_TENSOR_BYTES // fp.largest_tensor_bytes_per_sample
    if fp.graph_bytes_per_sample > 0:
        caps["memory_budget"] = budget_bytes // fp.graph_bytes_per_sample
    limited_by = min(caps, key=lambda k: caps[k])  # the first of equal caps: "split" before the others
    num_chunks = math.ceil(n / max(1, caps[limited_by]))
    chunk = math.ceil(n / num_chunks)  # balanced: no small remainder chunk
    graph = chunk * fp.graph_bytes_per_sample
    if retain_chunks is not None:
        retain = min(retain_chunks, num_chunks)
    elif num_chunks * graph <= budget_bytes:
        retain = num_chunks
    else:  # leave room for the chunk being rebuilt
        retain = max(0, budget_bytes // max(graph, 1) - 1)
    return Plan(
        chunk,
        num_chunks,
        retain,
        budget,
        fp.graph_bytes_per_sample,
        fp.largest_tensor_bytes_per_sample,
        limited_by,
    )


# ---------------------------------------------------------------------------------------------------------
# Strategies.


class _Strategy(Protocol):
    def apply(self, vs: list[Params]) -> list[Params]: ...

    def release(self) -> None: ...

    @property
    def has_graph(self) -> bool: ...


class _DoubleBackward:
    """Second backward pass through per-chunk gradient graphs built once (see the module docstring)."""

    def __init__(self, obj: Objective, retain_chunks: int | None) -> None:
        self.obj = obj
        self.retain_chunks = retain_chunks
        self.leaves: Params | None = None
        self.graphs: list[tuple[torch.Tensor, ...]] | None = (
            None  # per retained chunk: ∇loss_c, with its graph
        )

    @property
    def has_graph(self) -> bool:
        return self.graphs is not None

    def _chunk_grad(self, xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, ...]:
        assert self.leaves is not None
        value = self.obj.chunk_loss(self.leaves, xb, yb)
        leaves = list(self.leaves.values())
        parts = torch.autograd.grad(value, leaves, create_graph=True, allow_unused=True)
        return tuple(p if p is not None else torch.zeros_like(t) for p, t in zip(parts, leaves, strict=True))

    def _build(self) -> None:
        # Fresh leaves sharing storage with obj.params: the caller's tensors never get requires_grad or .grad.
        self.leaves = {n: p.detach().requires_grad_(True) for n, p in self.obj.params.items()}
        retained = list(self.obj.chunks())[: self.retain_chunks]  # None: every chunk
        self.graphs = [self._chunk_grad(xb, yb) for xb, yb in retained]

    def _vjp(self, g: tuple[torch.Tensor, ...], v: list[torch.Tensor], retain: bool) -> list[torch.Tensor]:
        """``∂(g·v)/∂θ`` for one chunk; gradient entries with no graph (constant in θ) contribute 0."""
        assert self.leaves is not None
        leaves = list(self.leaves.values())
        pairs = [(gi, vi) for gi, vi in zip(g, v, strict=True) if gi.requires_grad]
        if not pairs:
            return [torch.zeros_like(t) for t in leaves]
        outputs, directions = zip(*pairs, strict=True)
        out = torch.autograd.grad(
            outputs, leaves, grad_outputs=directions, retain_graph=retain, allow_unused=True
        )
        return [o if o is not None else torch.zeros_like(t) for o, t in zip(out, leaves, strict=True)]

    def _one(self, v: Params) -> Params:
        assert self.graphs is not None and self.leaves is not None
        directions = [v[n] for n in self.leaves]
        acc = [torch.zeros_like(t) for t in self.leaves.values()]
        for i, (xb, yb) in enumerate(self.obj.chunks()):
            kept = i < len(self.graphs)
            g = self.graphs[i] if kept else self._chunk_grad(xb, yb)  # not kept: rebuilt, used once, freed
            for total, part in zip(acc, self._vjp(g, directions, retain=kept), strict=True):
                total += part
        return dict(zip(self.leaves, acc, strict=True))

    def apply(self, vs: list[Params]) -> list[Params]:
        if self.graphs is None:
            self._build()
        return [self._one(v) for v in vs]

    def release(self) -> None:
        self.graphs = None
        self.leaves = None


def _functional_hvp(obj: Objective) -> Callable[[Params, torch.Tensor, torch.Tensor], Params]:
    """``(v, x_c, y_c) -> H_c v`` by forward-over-reverse ``jvp(jacrev(L_c))`` at ``obj.params``."""

    def hvp_chunk(v: Params, xb: torch.Tensor, yb: torch.Tensor) -> Params:
        grad_fn = jacrev(lambda p: obj.chunk_loss(p, xb, yb))
        return jvp(grad_fn, (obj.params,), (v,))[1]

    return hvp_chunk


class _FwdRev:
    """Forward-over-reverse products, chunk by chunk; nothing is kept between products."""

    has_graph = False

    def __init__(self, obj: Objective) -> None:
        self.obj = obj
        self.hvp_chunk = _functional_hvp(obj)

    def apply(self, vs: list[Params]) -> list[Params]:
        out = []
        with torch.no_grad():
            for v in vs:
                acc = {n: torch.zeros_like(p) for n, p in self.obj.params.items()}
                for xb, yb in self.obj.chunks():
                    acc = axpy(1.0, self.hvp_chunk(v, xb, yb), acc)
                out.append(acc)
        return out

    def release(self) -> None:
        return None


class _VMap:
    """``batch_size`` forward-over-reverse products at once through ``torch.func.vmap``."""

    has_graph = False

    def __init__(self, obj: Objective, batch_size: int) -> None:
        self.obj = obj
        self.batch_size = batch_size
        self.batched = vmap(_functional_hvp(obj), in_dims=(0, None, None))

    def apply(self, vs: list[Params]) -> list[Params]:
        out: list[Params] = []
        with torch.no_grad():
            for start in range(0, len(vs), self.batch_size):
                group = vs[start : start + self.batch_size]
                stacked = {n: torch.stack([v[n] for v in group]) for n in self.obj.params}
                acc = {n: torch.zeros_like(t) for n, t in stacked.items()}
                for xb, yb in self.obj.chunks():
                    acc = axpy(1.0, self.batched(stacked, xb, yb), acc)
                out.extend({n: acc[n][i] for n in acc} for i in range(len(group)))
        return out

    def release(self) -> None:
        return None


# ---------------------------------------------------------------------------------------------------------
# Choosing a strategy by measurement ("measure", and "auto" off the CPU).


@dataclass(frozen=True)
class Timings:
    """Seconds measured on one calibration chunk (``None``: the strategy failed there, e.g. out of memory).

    Attributes:
        product: per product: ``double_backward`` through a kept graph, ``fwd_rev``, and ``vmap`` on
            batches of ``batch_size`` vectors (a batch's time over its size).
        build: ``double_backward``'s gradient graph of the chunk (also the extra cost of a chunk whose
            graph is rebuilt for every product).
    """

    product: dict[str, float | None]
    build: float


@dataclass(frozen=True)
class Calibration:
    """What ``auto`` measured and chose.

    Attributes:
        single: strategy for one vector at a time (Lanczos, SLQ).
        batched: strategy for batches of vectors (Hutchinson, Hutch++).
        seconds_per_product: per strategy on the calibration chunk, ``double_backward`` including the
            rebuilt chunks' share (see :func:`choose`).
        build_seconds: ``double_backward``'s graph build on the calibration chunk.
        samples: calibration chunk size; seconds: wall time spent calibrating (0 when cached).
    """

    single: str
    batched: str
    seconds_per_product: dict[str, float | None]
    build_seconds: float
    samples: int
    seconds: float
    cached: bool


_MEASURED: dict[tuple[Any, ...], Timings] = {}  # this process's calibrations (see calibrate)


def choose(timings: Timings, rebuilt_fraction: float = 0.0) -> tuple[str, str, dict[str, float | None]]:
    """The fastest strategy per product for single vectors and for batches, from measured timings.

    ``double_backward`` costs ``product + rebuilt_fraction * build`` per product (chunks whose graph is
    not kept are rebuilt each time) plus, for the decision only, the kept chunks' one-off build spread
    over :data:`AMORTISED_PRODUCTS` products. ``vmap`` only competes for batches.

    Returns:
        ``(single, batched, seconds_per_product)``.
    """
    per = dict(timings.product)
    if per.get("double_backward") is not None:
        per["double_backward"] = per["double_backward"] + rebuilt_fraction * timings.build  # type: ignore[operator]
    cost = {k: v for k, v in per.items() if v is not None}
    if "double_backward" in cost:
        cost["double_backward"] += (1.0 - rebuilt_fraction) * timings.build / AMORTISED_PRODUCTS
    if not cost:
        raise RuntimeError("no HVP strategy ran on this objective")
    singles = {k: v for k, v in cost.items() if k != "vmap"} or cost
    return min(singles, key=lambda k: singles[k]), min(cost, key=lambda k: cost[k]), per


def calibrate(obj: Objective, retain_chunks: int | None = None, batch_size: int = 8) -> Calibration:
    """Time every strategy on ``obj``'s first chunk (at most :data:`CALIBRATION_SAMPLES` on CPU).

    Each candidate runs a warm-up and then a few products (the best time counts: a shared machine only
    ever adds time). Timings are cached per process; in a data-parallel objective every rank measures
    and the timings averaged over ranks decide, so all ranks choose alike.
    """
    n = int(obj.y.shape[0])
    samples = min(n, obj.max_batch, CALIBRATION_SAMPLES if obj.x.device.type == "cpu" else n)
    key = (
        obj.x.device.type,
        _device_name(obj.x.device),
        _dtype(obj.params),
        type(obj.model).__qualname__,
        tuple((k, tuple(t.shape)) for k, t in obj.params.items()),
        tuple(obj.x.shape[1:]),
        obj.loss,
        samples,
        batch_size,
    )
    t0 = time.perf_counter()
    timings = _MEASURED.get(key)
    cached = timings is not None
    if obj.shard is not None:  # all ranks measure when any must, so the collectives below match
        cached = float(obj.reduce(torch.tensor([0.0 if cached else 1.0], device=obj.x.device))) == 0
    if timings is None or not cached:
        sub = dataclasses.replace(obj, x=obj.x[:samples], y=obj.y[:samples], max_batch=samples, shard=None)
        with warnings.catch_warnings():  # torch.func's first use imports torch._dynamo, which warns
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.")
            timings = _agree(obj, _measure(sub, batch_size))
        _MEASURED[key] = timings
    chunks = math.ceil(n / obj.max_batch)
    kept = chunks if retain_chunks is None else min(retain_chunks, chunks)
    single, batched, per = choose(timings, (chunks - kept) / chunks)
    spent = 0.0 if cached else time.perf_counter() - t0
    return Calibration(single, batched, per, timings.build, samples, spent, cached)


def _measure(obj: Objective, batch_size: int) -> Timings:
    """One calibration: warm-up, then the best of a few timed runs per strategy."""
    generator = torch.Generator().manual_seed(0)
    vs = [gaussian(obj.params, generator) for _ in range(batch_size)]
    db = _DoubleBackward(obj, None)

    def rebuild() -> None:
        db.release()
        db._build()

    build = _best(obj, rebuild, 1)
    product: dict[str, float | None] = {"double_backward": _best(obj, lambda: db.apply(vs[:1]), 2)}
    db.release()
    fwd_rev = _FwdRev(obj)
    product["fwd_rev"] = _guarded(obj, lambda: _best(obj, lambda: fwd_rev.apply(vs[:1]), 2))
    batched = _VMap(obj, batch_size)
    product["vmap"] = _guarded(obj, lambda: _best(obj, lambda: batched.apply(vs), 1) / len(vs))
    return Timings(product, build)


def _best(obj: Objective, fn: Callable[[], object], repeats: int) -> float:
    """Least wall time of ``repeats`` calls after one warm-up call (device work included)."""
    fn()
    best = math.inf
    for _ in range(repeats):
        _synchronize(obj.x.device)
        start = time.perf_counter()
        fn()
        _synchronize(obj.x.device)
        best = min(best, time.perf_counter() - start)
    return best


def _guarded(obj: Objective, fn: Callable[[], float]) -> float | None:
    """``fn()``, or ``None`` when the strategy cannot run here (out of memory, unsupported op)."""
    try:
        return fn()
    except (RuntimeError, NotImplementedError):
        if obj.x.device.type == "cuda":
            torch.cuda.empty_cache()
        return None


def _agree(obj: Objective, timings: Timings) -> Timings:
    """Average the timings over ranks (identity in one process): every rank then makes the same choice."""
    if obj.shard is None:
        return timings
    names = list(timings.product)
    values = [math.nan if timings.product[k] is None else timings.product[k] for k in names]
    local = torch.tensor([*values, timings.build, 1.0], dtype=torch.float64, device=obj.x.device)
    summed = obj.reduce(local)
    *means, build = (summed / summed[-1]).tolist()[:-1]  # means over ranks
    return Timings({k: None if math.isnan(v) else v for k, v in zip(names, means, strict=True)}, build)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type


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


class HVP:
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

    Attributes:
        num_matvecs: products computed so far (a batch of ``k`` vectors counts ``k``).
        params: the point ``θ``; also the template (shapes, dtype, device) of every vector.
        strategy, batched_strategy: the strategies for single vectors and for batches (``"measure"``
            until measured).
        calibration: what ``measure`` measured (``None`` otherwise).
        chosen_by: ``"user"``, ``"measurement"`` or ``"cpu-default"``.
    """

    def __init__(
        self, obj: Objective, strategy: str = "auto", retain_chunks: int | None = None, batch_size: int = 8
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

    def describe(self) -> dict[str, Any]:
        """The strategies in use, how they were chosen, and the chunking (for records)."""
        self._resolve()
        n = int(self._obj.y.shape[0])
        chunks = math.ceil(n / self._obj.max_batch)
        cal = self.calibration
        run = None if cal is None else {"samples": cal.samples, "seconds": cal.seconds, "cached": cal.cached}
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
        }

    def close(self) -> None:
        """Release the gradient graph now; a later product rebuilds it."""
        for impl in self._impls.values():
            impl.release()

    def __enter__(self) -> HVP:
        self._depth += 1
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._depth -= 1
        if self._depth == 0:
            self.close()


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
