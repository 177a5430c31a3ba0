"""The HVP strategies behind :class:`lscape_cli.core.linalg.hvp.HVP` (see that module's docstring).

Each computes ``[Hv for v in vs]`` for the whole-split objective, chunk by chunk, summing the chunks'
sample-weighted contributions; they differ in cost and memory, not in the numbers (up to rounding).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import torch
from torch.func import jacrev, jvp, vmap

from lscape_cli.core.params import Params, axpy

if TYPE_CHECKING:
    from lscape_cli.core.objective import Objective

STRATEGIES = ("double_backward", "fwd_rev", "vmap")


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
        retained = itertools.islice(self.obj.chunks(), self.retain_chunks)  # None: every chunk; reads no more
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
        """The chunks' products, summed into the first chunk's.

        No zero-filled accumulator: a large model's single chunk returns autograd's own tensors, as a
        plain retained-graph product does.
        """
        assert self.graphs is not None and self.leaves is not None
        directions = [v[n] for n in self.leaves]
        acc: list[torch.Tensor] | None = None
        for i, (xb, yb) in enumerate(self.obj.chunks()):
            kept = i < len(self.graphs)
            g = self.graphs[i] if kept else self._chunk_grad(xb, yb)  # not kept: rebuilt, used once, freed
            part = self._vjp(g, directions, retain=kept)
            if acc is None:  # autograd may hand back a direction itself (a pass-through node): copy it
                owned = {d.data_ptr() for d in directions}
                acc = [p.clone() if p.data_ptr() in owned else p for p in part]
            else:
                for total, p in zip(acc, part, strict=True):
                    total += p
        assert acc is not None
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
        out: Params = jvp(grad_fn, (obj.params,), (v,))[1]
        return out

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
