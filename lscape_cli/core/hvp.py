"""Hessian-vector products of the whole-split loss, behind one interface with interchangeable strategies.

The objective is the evaluation protocol's loss, the mean over all ``N`` samples of the split,

    L(θ) = (1/N) Σ_chunks loss_sum(f(θ, x_c), y_c),

evaluated in chunks of at most ``max_batch`` samples, each chunk weighted by its sample count, so chunking
changes nothing beyond float rounding. ``H = ∇²L(θ)`` is never formed: estimators only see ``v ↦ Hv``
(Pearlmutter 1994, "Fast exact multiplication by the Hessian", Neural Computation 6(1)).

Vectors are name -> tensor dicts shaped like the parameters (:data:`Params`); helpers below do the
linear algebra on them (dot, norm, axpy, flatten/unflatten).

Strategies (same numbers, different cost; DESIGN.md "Performance principles" has the measurements):

- ``double_backward`` (default): the gradient graph ``g_c = ∇ loss_c`` is built once per chunk with
  ``create_graph=True`` and kept; each product is one more backward pass through it,
  ``Hv = Σ_c ∂(g_c·v)/∂θ`` (``retain_graph=True``). The graph lives until :meth:`HVP.close` (or the
  outermost ``with`` block) ends, and nothing is ever written to ``.grad`` (PyHessian's leak).
- ``fwd_rev``: forward-over-reverse ``jvp(jacrev(L_c))`` per chunk on the functional model, nothing kept
  between products (``jvp(grad(·))`` fails with mean-reduced MSE in torch 2.x; ``jvp(jacrev(·))`` works).
- ``vmap``: ``k`` vectors at once, ``vmap`` over the ``fwd_rev`` product; wins when an accelerator has
  idle width, costs ``k`` times the activation memory.

Memory policy of ``double_backward``: each retained chunk graph holds that chunk's activations and their
derivatives (roughly 2-3x a training step's memory for ``max_batch`` samples), so retaining every chunk
grows memory with ``N``. ``retain_chunks`` caps how many chunk graphs are kept; the remaining chunks
rebuild their gradient graph for every product (one forward + backward more per product and chunk) and
free it at once. ``None`` keeps all (fastest); ``0`` keeps none (memory of one chunk).
"""

from __future__ import annotations

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
# The operator.


class Operator(Protocol):
    """What the estimators need: products, a vector template, and a product count."""

    params: Params
    batch_size: int
    num_matvecs: int

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
        obj: the objective.
        strategy: ``"double_backward"``, ``"fwd_rev"``, ``"vmap"`` or ``"auto"`` (``double_backward``,
            the fastest measured on CPU; see the module docstring).
        retain_chunks: ``double_backward`` only: chunk graphs kept between products (None: all).
        batch_size: ``vmap`` only: vectors per vmapped product.

    Attributes:
        num_matvecs: products computed so far (a batch of ``k`` vectors counts ``k``).
        params: the point ``θ``; also the template (shapes, dtype, device) of every vector.
    """

    def __init__(
        self, obj: Objective, strategy: str = "auto", retain_chunks: int | None = None, batch_size: int = 8
    ) -> None:
        if strategy == "auto":
            strategy = "double_backward"
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown HVP strategy {strategy!r}: expected one of {STRATEGIES} or 'auto'")
        if batch_size < 1 or (retain_chunks is not None and retain_chunks < 0):
            raise ValueError(
                f"batch_size must be >= 1 and retain_chunks >= 0, got {batch_size}, {retain_chunks}"
            )
        self.strategy = strategy
        self._obj = obj
        self.params = obj.params
        self.batch_size = batch_size if strategy == "vmap" else 1
        self.num_matvecs = 0
        self._depth = 0
        self._impl: _Strategy
        if strategy == "double_backward":
            self._impl = _DoubleBackward(obj, retain_chunks)
        elif strategy == "fwd_rev":
            self._impl = _FwdRev(obj)
        else:
            self._impl = _VMap(obj, batch_size)

    def __call__(self, v: Params) -> Params:
        """``Hv`` for one vector (a dict shaped like :attr:`params`)."""
        return self.hvp_many([v])[0]

    def hvp_many(self, vs: list[Params]) -> list[Params]:
        """``[Hv for v in vs]``, batched where the strategy can."""
        out = self._impl.apply(vs)
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
        return self._impl.has_graph

    def close(self) -> None:
        """Release the gradient graph now; a later product rebuilds it."""
        self._impl.release()

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
