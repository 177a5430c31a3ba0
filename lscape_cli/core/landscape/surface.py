"""Loss and accuracy at many points of an affine subspace ``theta + sum_k c_k d_k``.

Used by ``slice`` (lines and planes through a checkpoint) and ``connect`` (the segment between two
minima: ``theta_A + alpha (theta_B - theta_A)``). Every point is placed absolutely from ``theta`` and
its coefficients -- never by accumulating in-place steps -- and evaluated over the whole split in eval
mode, in chunks of ``max_batch`` samples weighted by sample count.

Speed: a point costs one forward pass over the split, except for the first layer. The first layer of
every registry model (``nn.Linear`` of ``mlp``/``linear``, the first ``nn.Conv2d`` of ``cnn``/``resnet``)
is affine in its parameters, so on the subspace its output is

    z(c) = f_1(x; W + sum_k c_k D_k, b + sum_k c_k e_k) = f_1(x; W, b) + sum_k c_k f_1(x; D_k, e_k),

i.e. ``X W^T + sum_k c_k X D_k^T`` for a linear layer (for a conv, the same with convolutions). The
``K + 1`` products are computed once per data chunk -- and kept for the whole grid when they fit in
``memory_budget`` bytes -- so each point only pays for the layers after the first (on seed 000's MLP
the first layer is 80% of the multiply-adds). Models opt in with three methods: ``first_layer_name()``,
``first_layer_input(x)`` and ``forward_after_first(z)`` (see :mod:`lscape_cli.models`); others, and
``factor=False``, take the point-by-point path. A BatchNorm after the first conv is affine in eval mode
and belongs to "the rest", so the factoring is exact before it.

At the centre (all coefficients 0) no product is added and the computation is the model's own forward,
so the centre's loss is the checkpoint's loss bit for bit (same chunking). Elsewhere the result differs
from the point-by-point forward only by float rounding (~1e-7 relative in float32). With ``loop`` a
point's value does not depend on which points share its block, so a grid split over processes, or
resumed after an interruption, equals the uninterrupted single-process grid bit for bit. On CPU the
chunks are capped near 16 MiB of first-layer output (:func:`chunk_size`), which is faster for CNNs.

Strategies for the layers after the first (``strategy``):

- ``loop``: one point at a time (the fastest measured on CPU: docs/bench-slice.md).
- ``vmap``: a block of points at once through ``torch.func.vmap`` (stacked parameters, batched
  matmuls); costs the block size times the activation memory, bounded by ``memory_budget``.
- ``auto``: ``loop`` on CPU; elsewhere the first two blocks are timed with each strategy and the faster
  is kept (recorded in :attr:`SurfaceEvaluator.stats`; evaluators sharing one ``stats`` dict, like the
  lines of a 1-D slice, calibrate once).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Any, TypedDict

import torch
from torch import nn
from torch.func import functional_call, vmap

from lscape_cli.core.choices import SliceStrategy
from lscape_cli.core.losses import as_loss
from lscape_cli.core.objective import evaluate, loss_sum, mse_target, num_correct, num_units
from lscape_cli.core.params import Params
from lscape_cli.core.progress import ProgressFn

STRATEGIES = SliceStrategy.values()
DEFAULT_BUDGET = 1 << 30  # bytes of cached first-layer outputs / vmapped activations
CPU_CHUNK_BYTES = 16 << 20  # CPU: first-layer output per chunk (see chunk_size)


@dataclass(frozen=True)
class Subspace:
    """An affine subspace of parameter space: a centre and K directions (name -> tensor dicts)."""

    model: nn.Module  # eval mode
    theta: Params
    buffers: Params
    directions: list[Params]

    def point(self, coeffs: torch.Tensor) -> Params:
        """``theta + sum_k coeffs[k] * d_k`` (coeffs: (K,))."""
        out = {n: t.clone() for n, t in self.theta.items()}
        for c, d in zip(coeffs.tolist(), self.directions, strict=True):
            for n in out:
                out[n].add_(d[n], alpha=c)
        return out


def chunk_size(model: nn.Module, x: torch.Tensor, max_batch: int, target_bytes: int = CPU_CHUNK_BYTES) -> int:
    """Samples per chunk: ``max_batch``, capped on CPU near ``target_bytes`` of first-layer output.

    A SimpleCNN point on 4,000 images took 700 ms in one chunk and 300 ms in chunks of 256 (big
    activations thrash the caches and the allocator). Chunking changes only float rounding.
    """
    if x.device.type != "cpu" or x.shape[0] == 0:
        return max_batch
    name = first_layer(model)
    if name is None:
        return max_batch
    with torch.no_grad():
        out = model.get_submodule(name)(model.first_layer_input(x[:1]))  # type: ignore[operator]
    per_sample = out.numel() * out.element_size()
    return max(1, min(max_batch, int(target_bytes // max(per_sample, 1))))


def first_layer(model: nn.Module) -> str | None:
    """Name of the model's first layer when it can be factored out (Linear/Conv2d), else None."""
    names = ("first_layer_name", "first_layer_input", "forward_after_first")
    if not all(callable(getattr(model, n, None)) for n in names):
        return None
    name = model.first_layer_name()  # type: ignore[operator]
    module = model.get_submodule(name)
    return name if type(module) in (nn.Linear, nn.Conv2d) else None


class AfterFirst(nn.Module):
    """``forward_after_first`` as a module's forward, so ``functional_call`` can run it."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.inner = model

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """The layers after the first."""
        out: torch.Tensor = self.inner.forward_after_first(z)  # type: ignore[operator]
        return out


class _Slots:
    """A private copy of a module whose parameters/buffers are assigned as plain tensors per point.

    Same forward as ``functional_call`` without its per-call bookkeeping (~80 us per call on CPU, 7% of
    a point of seed 000's MLP); the caller's module is never touched.
    """

    def __init__(self, net: nn.Module, buffers: Params) -> None:
        self.net = copy.deepcopy(net)
        self._where: dict[str, tuple[nn.Module, str]] = {}
        for name, _ in [*self.net.named_parameters(), *self.net.named_buffers()]:
            owner, _, leaf = name.rpartition(".")
            self._where[name] = (self.net.get_submodule(owner), leaf)
        self.assign(buffers)

    def assign(self, tensors: Params) -> None:
        for name, t in tensors.items():
            module, leaf = self._where[name]
            table = module._parameters if leaf in module._parameters else module._buffers
            table[leaf] = t  # type: ignore[assignment]  # a plain tensor (no Parameter wrapper): read by the forward, never trained

    def __call__(self, state: Params, inp: torch.Tensor) -> torch.Tensor:
        self.assign(state)
        out: torch.Tensor = self.net(inp)
        return out


def _loss_sum(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, loss: str) -> torch.Tensor:
    """:func:`~lscape_cli.core.objective.loss_sum` with the MSE targets made in advance (same ops)."""
    if target is not None:
        return (logits - target).pow(2).sum()
    return loss_sum(logits, y, loss)


@dataclass
class _Chunk:
    """One chunk of samples and, for the factored path, its first-layer products.

    The inputs are read from the split when asked for (a view of an in-memory tensor, a read of a
    streamed split), so a streamed split is never held in memory whole.
    """

    source: Any  # the split's inputs (a tensor or core.samples.StreamedSamples)
    start: int
    stop: int
    y: torch.Tensor
    products: list[torch.Tensor] | None = None  # [f_1(x; theta), f_1(x; d_1), ..., f_1(x; d_K)]

    @property
    def x(self) -> torch.Tensor:
        """The chunk's inputs."""
        out: torch.Tensor = self.source[self.start : self.stop]
        return out


class EngineStats(TypedDict, total=False):
    """What a :class:`SurfaceEvaluator` chose (shared by one slice's evaluators: its ``speed.engine``)."""

    seconds_per_point_by_strategy: dict[str, float]  # the timings behind an ``auto`` choice off CPU
    factored_first_layer: str | None
    cached_first_layer: bool
    strategy: str
    num_chunks: int
    chunk_size: int


@dataclass
class SurfaceEvaluator:
    """Evaluates blocks of points of one :class:`Subspace`, reusing first-layer products across blocks.

    Args:
        space: the subspace (model in eval mode, or train mode on request: buffers are then copied per
            point so BatchNorm's running statistics never drift from one point to the next).
        x, y: the split, ``(N, ...)`` and ``(N,)``.
        loss: ``"ce"`` or ``"mse"``.
        max_batch: most samples per chunk (bounds memory; the result is a sample-weighted mean); on CPU
            :func:`chunk_size` may choose smaller chunks, which is faster.
        memory_budget: bytes for cached first-layer products and vmapped activations.
        strategy: ``"auto"``, ``"loop"`` or ``"vmap"`` (module docstring).
        factor: factor the first layer out when the model allows it.
    """

    space: Subspace
    x: torch.Tensor
    y: torch.Tensor
    loss: str
    max_batch: int = 4096
    memory_budget: int = DEFAULT_BUDGET
    strategy: str = "auto"
    factor: bool = True
    stats: EngineStats = field(default_factory=lambda: EngineStats())

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}: expected one of {STRATEGIES}")
        if self.max_batch < 1 or self.y.shape[0] == 0:
            raise ValueError("max_batch must be >= 1 and the split must hold samples")
        model = self.space.model
        self._dtype = next(iter(self.space.theta.values())).dtype  # the grid's; inputs may be token ids
        self._first = first_layer(model) if self.factor else None
        self._train = model.training
        if self._train and self.strategy == "vmap":
            raise ValueError("strategy 'vmap' needs the model in eval mode (BatchNorm updates its buffers)")
        names = list(self.space.theta)
        prefix = f"{self._first}."
        self._rest = [n for n in names if not n.startswith(prefix)] if self._first else names
        self._net: nn.Module = AfterFirst(model) if self._first else model
        self._key = (lambda n: f"inner.{n}") if self._first else (lambda n: n)
        self._buffers = {self._key(n): b for n, b in self.space.buffers.items()}
        self._slots = None if self._train else _Slots(self._net, self._buffers)
        theta = self.space.theta
        self._stacked = {  # (K, *shape) per tensor after the first layer
            n: torch.stack([d[n] for d in self.space.directions])
            if self.space.directions
            else theta[n].new_empty((0, *theta[n].shape))
            for n in self._rest
        }
        n = int(self.y.shape[0])
        size = chunk_size(model, self.x, self.max_batch) if self.factor else self.max_batch
        self._chunks = [_Chunk(self.x, s, s + size, self.y[s : s + size]) for s in range(0, n, size)]
        self._per_sample = self._first_out_numel() if self._first else 0
        k = len(self.space.directions)
        itemsize = self.x.element_size()
        self._cache = bool(self._first) and (k + 1) * n * self._per_sample * itemsize <= self.memory_budget
        self._chosen = self._initial_strategy()
        self._timings: dict[str, float] = {}
        if self._chosen is None:  # timings live in ``stats``, so evaluators sharing it calibrate once
            self._timings = self.stats.setdefault("seconds_per_point_by_strategy", {})
            if len(self._timings) == 2:
                self._chosen = min(self._timings, key=self._timings.__getitem__)
        self.stats.update(
            {
                "factored_first_layer": self._first,
                "cached_first_layer": self._cache,
                "strategy": self._chosen or "auto (timing)",
                "num_chunks": len(self._chunks),
                "chunk_size": size,
            }
        )

    # ----------------------------------------------------------------------------- setup

    def _first_out_numel(self) -> int:
        module = self.space.model.get_submodule(self._first)  # type: ignore[arg-type]
        with torch.no_grad():
            xin = self.space.model.first_layer_input(self.x[:1])  # type: ignore[operator]
            return int(module(xin).numel())

    def _initial_strategy(self) -> str | None:
        if self.strategy != "auto":
            return self.strategy
        if self.x.device.type == "cpu" or self._train:
            return "loop"
        return None  # time both on the first two blocks

    def _products(self, chunk: _Chunk) -> list[torch.Tensor]:
        """``f_1(x; theta)`` then ``f_1(x; d_k)`` per direction (the bias enters like the weight)."""
        if chunk.products is not None:
            return chunk.products
        model = self.space.model
        module = model.get_submodule(self._first)  # type: ignore[arg-type]
        xin = model.first_layer_input(chunk.x)  # type: ignore[operator]
        local = [n for n, _ in module.named_parameters()]
        full = [f"{self._first}.{n}" for n in local]
        out = []
        for src in [self.space.theta, *self.space.directions]:
            out.append(
                functional_call(module, {ln: src[fn] for ln, fn in zip(local, full, strict=True)}, (xin,))
            )
        if self._cache:
            chunk.products = out
        return out

    # ----------------------------------------------------------------------------- evaluation

    @torch.no_grad()
    def evaluate(self, coeffs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean loss and accuracy at each row of ``coeffs`` (P, K); two (P,) float64 CPU tensors."""
        if coeffs.ndim != 2 or coeffs.shape[1] != len(self.space.directions):
            raise ValueError(f"coeffs must be (P, {len(self.space.directions)}), got {tuple(coeffs.shape)}")
        rows = coeffs.double().cpu().tolist()
        strategy = self._chosen or ("loop" if "loop" not in self._timings else "vmap")
        t0 = time.perf_counter()
        sums, correct = (self._vmap if strategy == "vmap" else self._loop)(rows)
        if self._chosen is None and rows:
            self._timings[strategy] = (time.perf_counter() - t0) / len(rows)
            if len(self._timings) == 2:
                self._chosen = min(self._timings, key=self._timings.__getitem__)
                self.stats["strategy"] = self._chosen
        n = num_units(self.y, self.loss)
        return sums.double().cpu() / n, correct.double().cpu() / n

    def _z(self, products: list[torch.Tensor], row: list[float]) -> torch.Tensor:
        z = products[0]
        for c, p in zip(row, products[1:], strict=True):
            if c != 0.0:
                z = torch.add(z, p, alpha=c)
        return z

    def _states(self, rows: list[list[float]]) -> list[Params]:
        """Parameters after the first layer at each point, ``theta + c_1 d_1 + c_2 d_2 ...``.

        Element-wise over the whole block (a few vectorised ops instead of a few per point and tensor),
        in the same order for every point, so a point's value never depends on which block it is in
        (a matmul ``C D`` would: BLAS picks kernels by shape, and 1- and 2-process grids would differ in
        the last bit). A row of zeros gives ``theta`` exactly.
        """
        c = torch.tensor(rows, dtype=self._dtype, device=self.x.device)  # (B, K)
        full = {}
        for n in self._rest:
            d = self._stacked[n]  # (K, *shape)
            t = self.space.theta[n].expand(len(rows), *d.shape[1:])
            for k in range(d.shape[0]):
                t = t + c[:, k].reshape(-1, *([1] * (d.dim() - 1))) * d[k]
            full[n] = t
        return [{self._key(n): t[i] for n, t in full.items()} for i in range(len(rows))]

    def _forward(self, state: Params, inp: torch.Tensor) -> torch.Tensor:
        if self._slots is not None:
            return self._slots(state, inp)
        buffers = {k: b.clone() for k, b in self._buffers.items()}  # train mode: BatchNorm writes them
        out: torch.Tensor = functional_call(self._net, (state, buffers), (inp,))
        return out

    def _loop(self, rows: list[list[float]]) -> tuple[torch.Tensor, torch.Tensor]:
        states = self._states(rows)
        losses: list[torch.Tensor] = []
        hits: list[torch.Tensor] = []
        for chunk in self._chunks:
            products = self._products(chunk) if self._first else None
            xs = (
                chunk.x if products is None else products[0]
            )  # inputs read once per chunk (unused if factored)
            target: torch.Tensor | None = None
            for row, state in zip(rows, states, strict=True):
                inp = self._z(products, row) if products is not None else xs
                logits = self._forward(state, inp)
                if (
                    target is None and as_loss(self.loss).kind == "mse"
                ):  # made once per chunk, not once per point
                    target = mse_target(chunk.y, logits.shape[-1], logits.dtype)
                losses.append(_loss_sum(logits, chunk.y, target, self.loss))
                hits.append(num_correct(logits, chunk.y, self.loss))
        shape = (len(self._chunks), len(rows))
        return (
            torch.stack(losses).double().reshape(shape).sum(0),
            torch.stack(hits).reshape(shape).sum(0),
        )

    def _block_size(self, chunk: _Chunk) -> int:
        """Points per vmapped call: activations of about 4x the first layer's output per point."""
        features = math.prod(self.x.shape[1:])
        per_sample = max(self._per_sample, 1) * 4 if self._first else features * 4
        per_point = per_sample * int(chunk.y.shape[0]) * self.x.element_size()
        return max(1, int(self.memory_budget // max(per_point, 1)))

    def _vmap(self, rows: list[list[float]]) -> tuple[torch.Tensor, torch.Tensor]:
        theta = self.space.theta
        loss, net, key = self.loss, self._net, self._key
        stacked = self._stacked  # (K, *shape) per tensor

        def one(state: Params, inp: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            logits = functional_call(net, ({key(n): t for n, t in state.items()}, self._buffers), (inp,))
            return loss_sum(logits, y, loss), num_correct(logits, y, loss)

        batched = vmap(one, in_dims=(0, 0 if self._first else None, None))
        sums = torch.zeros(len(rows), dtype=torch.float64, device=self.x.device)
        hits = torch.zeros(len(rows), dtype=torch.float64, device=self.x.device)
        for chunk in self._chunks:
            products = self._products(chunk) if self._first else None
            xs = chunk.x if products is None else products[0]
            size = self._block_size(chunk)
            for start in range(0, len(rows), size):
                c = torch.tensor(rows[start : start + size], dtype=self._dtype, device=self.x.device)
                state = {n: theta[n] + torch.tensordot(c, stacked[n], dims=1) for n in self._rest}
                if products is not None:
                    lin = torch.stack(products[1:])  # (K, n, *out)
                    inp = products[0] + torch.tensordot(c, lin, dims=1)
                else:
                    inp = xs
                ls, nc = batched(state, inp, chunk.y)
                sums[start : start + len(c)] += ls.double()
                hits[start : start + len(c)] += nc
        return sums, hits


def evaluate_points(
    space: Subspace,
    coeffs: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    loss: str,
    max_batch: int = 4096,
    on_step: ProgressFn | None = None,
    *,
    block: int = 64,
    memory_budget: int = DEFAULT_BUDGET,
    strategy: str = "auto",
    factor: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean loss and accuracy at each point; ``coeffs`` is (P, K); returns two (P,) float64 tensors.

    Points are evaluated ``block`` at a time by one :class:`SurfaceEvaluator` (first layer factored out
    where the model allows it); ``on_step`` hears ``{"estimator": "surface", "step", "total"}`` after
    each block.
    """
    ev = SurfaceEvaluator(space, x, y, loss, max_batch, memory_budget, strategy, factor)
    p = coeffs.shape[0]
    losses = torch.empty(p, dtype=torch.float64)
    accs = torch.empty(p, dtype=torch.float64)
    for start in range(0, p, block):
        losses[start : start + block], accs[start : start + block] = ev.evaluate(
            coeffs[start : start + block]
        )
        if on_step is not None:
            on_step({"estimator": "surface", "step": min(start + block, p), "total": p})
    return losses, accs


@torch.no_grad()
def evaluate_points_reference(
    space: Subspace,
    coeffs: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    loss: str,
    max_batch: int = 4096,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The point-by-point reference (one full forward per point); tests and benchmarks compare to it."""
    p = coeffs.shape[0]
    losses = torch.empty(p, dtype=torch.float64)
    accs = torch.empty(p, dtype=torch.float64)
    for i in range(p):
        params = space.point(coeffs[i])
        losses[i], accs[i] = evaluate(
            space.model, x, y, loss, max_batch, params=params, buffers=space.buffers
        )
    return losses, accs
