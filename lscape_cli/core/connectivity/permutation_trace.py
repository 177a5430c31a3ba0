"""The permutation structure of any module, derived by tracing it (``torch.fx``).

:mod:`.alignment` needs a :class:`~.alignment.PermutationSpec`: which
group of hidden units acts on which axis of every tensor. For the registry models it is written by
hand; for a user's model it is derived here from the traced graph, for what is known to commute with a
permutation of units:

- ``nn.Linear`` and ``nn.Conv1d/2d/3d`` (``groups=1``) start a new group on their output units (last
  axis, resp. channel axis 1) and read their input's group on their input axis;
- element-wise activations and dropout, pooling over space, ``BatchNorm`` (channel axis) and
  ``LayerNorm`` over the unit axis pass a group through (their parameters and statistics follow it);
- ``flatten``/``view(N, -1)`` of ``(N, C, ...)`` keeps the channel group as a ``(C, rest)`` block, so the
  next ``Linear``'s weight is viewed as ``(out, C, rest)``;
- a sum or element-wise product of two grouped tensors (a residual stream) merges their groups into one;
  one with a tensor that no permutation acts on (the network input, a bare parameter) fixes the group;
- means and sums over other axes keep the group.

The model's output fixes the group that reaches it. Any other operation on a permuted tensor (attention,
recurrent layers, concatenation, transposes, grouped convolutions, a module called twice) refuses the
whole model with a :class:`ValueError` naming the node, rather than guessing. The caller still checks
that the permuted model computes the same function (:func:`.alignment.function_gap`).
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from lscape_cli.core.connectivity.alignment import PermutationSpec

FIXED = "<fixed>"  # the union-find class of groups that must stay the identity

_ELEMENTWISE_MODULES = (
    nn.ReLU,
    nn.ReLU6,
    nn.GELU,
    nn.Tanh,
    nn.Sigmoid,
    nn.SiLU,
    nn.ELU,
    nn.LeakyReLU,
    nn.Softplus,
    nn.Mish,
    nn.Hardtanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Identity,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
)
_POOLS = (
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
)
_F = torch.nn.functional
_ELEMENTWISE_FUNCTIONS = {
    _F.relu,
    _F.relu6,
    _F.gelu,
    _F.silu,
    _F.elu,
    _F.leaky_relu,
    _F.softplus,
    _F.mish,
    _F.hardtanh,
    _F.dropout,
    torch.relu,
    torch.tanh,
    torch.sigmoid,
    torch.exp,
    torch.abs,
    _F.tanh,
    _F.sigmoid,
}
_ELEMENTWISE_METHODS = {"relu", "tanh", "sigmoid", "exp", "abs", "contiguous", "clone", "relu_"}
_COMBINE = {operator.add, operator.iadd, torch.add, operator.mul, operator.imul, torch.mul, operator.sub}
_COMBINE_METHODS = {"add", "add_", "mul", "mul_", "sub"}
_REDUCE = {torch.mean, torch.sum, torch.amax}
_REDUCE_METHODS = {"mean", "sum", "amax"}
_FLATTEN_METHODS = {"flatten", "view", "reshape"}


@dataclass(frozen=True)
class Feat:
    """The group acting on one axis of a traced tensor (``flat``: the axis is a flattened ``(C, rest)``)."""

    group: str
    axis: int
    flat: tuple[int, int] | None = None


class _Tracer:
    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.parent: dict[str, str] = {FIXED: FIXED}
        self.order: dict[str, int] = {FIXED: -1}  # creation order: a merged group keeps its oldest name
        self.sizes: dict[str, int] = {}
        self.axes: dict[str, tuple[str | None, ...]] = {}
        self.views: dict[str, tuple[int, ...]] = {}
        self.seen: set[str] = set()
        self.feat: dict[fx.Node, Feat | None] = {}

    # ---- union-find over groups
    def find(self, g: str) -> str:
        while self.parent[g] != g:
            self.parent[g] = self.parent[self.parent[g]]
            g = self.parent[g]
        return g

    def union(self, a: str, b: str, where: str) -> str:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        if FIXED not in (ra, rb) and self.sizes[ra] != self.sizes[rb]:
            raise ValueError(f"{where} adds {self.sizes[ra]} units to {self.sizes[rb]}")
        keep, drop = (ra, rb) if self.order[ra] < self.order[rb] else (rb, ra)  # FIXED stays a root
        self.parent[drop] = keep
        return keep

    def new_group(self, name: str, size: int) -> str:
        self.parent[name] = name
        self.order[name] = len(self.order)
        self.sizes[name] = size
        return name

    # ---- helpers
    @staticmethod
    def shape(node: Any) -> tuple[int, ...] | None:
        meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
        return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None

    def tensor_args(self, node: fx.Node) -> list[fx.Node]:
        args = list(node.args) + list(node.kwargs.values())
        return [a for a in args if isinstance(a, fx.Node) and self.shape(a) is not None]

    def refuse(self, node: fx.Node, why: str) -> ValueError:
        return ValueError(f"{why} at node {node.name!r} ({node.op} {_target_name(node)})")

    def register(
        self, prefix: str, key: str, axes: tuple[str | None, ...], view: tuple[int, ...] | None = None
    ) -> None:
        name = f"{prefix}.{key}" if prefix else key
        self.axes[name] = axes
        if view is not None:
            self.views[name] = view

    # ---- the walk
    def run(self, gm: fx.GraphModule) -> None:
        for node in gm.graph.nodes:
            if node.op in ("placeholder", "get_attr"):
                self.feat[node] = None
            elif node.op == "output":
                for arg in self.tensor_args(node) + _nested_nodes(node.args):
                    f = self.feat.get(arg)
                    if f is not None:
                        self.union(f.group, FIXED, node.name)
            elif node.op == "call_module":
                self.feat[node] = self.module(node, gm.get_submodule(node.target), str(node.target))
            else:
                self.feat[node] = self.function(node)

    def inp(self, node: fx.Node) -> Feat | None:
        args = self.tensor_args(node)
        return self.feat.get(args[0]) if args else None

    def module(self, node: fx.Node, m: nn.Module, name: str) -> Feat | None:
        f = self.inp(node)
        out_shape = self.shape(node)
        if isinstance(
            m,
            (
                nn.Linear,
                nn.Conv1d,
                nn.Conv2d,
                nn.Conv3d,
                nn.BatchNorm1d,
                nn.BatchNorm2d,
                nn.BatchNorm3d,
                nn.LayerNorm,
            ),
        ):
            if name in self.seen:
                raise self.refuse(node, "a module with parameters is called twice")
            self.seen.add(name)
        if isinstance(m, nn.Linear):
            return self.linear(node, m, name, f, out_shape)
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            return self.conv(node, m, name, f)
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
            return self.norm(node, m, name, f, axis=1)
        if isinstance(m, nn.LayerNorm):
            if len(m.normalized_shape) != 1:
                if f is not None:
                    raise self.refuse(node, "LayerNorm over several axes of permuted units")
                return None
            return self.norm(node, m, name, f, axis=len(out_shape or ()) - 1)
        if isinstance(m, _ELEMENTWISE_MODULES):
            return f
        if isinstance(m, _POOLS):
            if f is not None and (f.axis != 1 or f.flat is not None):
                raise self.refuse(node, "pooling across permuted units")
            return f
        if isinstance(m, nn.Flatten):
            return self.flatten(node, f, out_shape)
        if f is not None:
            raise self.refuse(node, f"{type(m).__name__} is not known to commute with a permutation of units")
        return None

    def linear(self, node: fx.Node, m: nn.Linear, name: str, f: Feat | None, out_shape: Any) -> Feat:
        ndim = len(out_shape)
        g = self.new_group(name, m.out_features)
        if f is None:
            self.register(name, "weight", (g, None))
        elif f.flat is not None:
            c, rest = f.flat
            self.register(name, "weight", (g, f.group, None), view=(m.out_features, c, rest))
        elif f.axis == ndim - 1:
            self.register(name, "weight", (g, f.group))
        else:
            raise self.refuse(node, "Linear over an axis other than the permuted one")
        if m.bias is not None:
            self.register(name, "bias", (g,))
        return Feat(g, ndim - 1)

    def conv(self, node: fx.Node, m: nn.Conv1d | nn.Conv2d | nn.Conv3d, name: str, f: Feat | None) -> Feat:
        if m.groups != 1:
            raise self.refuse(node, "grouped convolution")
        if f is not None and (f.axis != 1 or f.flat is not None):
            raise self.refuse(node, "convolution whose channels are not the permuted axis")
        w: torch.Tensor = m.weight
        g = self.new_group(name, int(w.shape[0]))
        self.register(name, "weight", (g, None if f is None else f.group, *([None] * (w.dim() - 2))))
        if m.bias is not None:
            self.register(name, "bias", (g,))
        return Feat(g, 1)

    def norm(self, node: fx.Node, m: nn.Module, name: str, f: Feat | None, axis: int) -> Feat | None:
        if f is not None and (f.axis != axis or f.flat is not None):
            raise self.refuse(node, f"{type(m).__name__} over an axis other than the permuted one")
        group = None if f is None else f.group
        for key, _ in list(m.named_parameters(recurse=False)) + list(m.named_buffers(recurse=False)):
            self.register(name, key, () if key == "num_batches_tracked" else (group,))
        return f

    def flatten(self, node: fx.Node, f: Feat | None, out_shape: Any) -> Feat | None:
        in_shape = self.shape(self.tensor_args(node)[0])
        if f is None:
            return None
        if in_shape is None or out_shape is None or len(out_shape) != 2 or out_shape[0] != in_shape[0]:
            raise self.refuse(node, "reshape of permuted units other than flatten(1)")
        if len(in_shape) == 2:
            return f
        if f.axis != 1 or f.flat is not None:
            raise self.refuse(node, "flatten of a tensor permuted on another axis")
        return Feat(f.group, 1, (in_shape[1], math.prod(in_shape[2:])))

    def function(self, node: fx.Node) -> Feat | None:
        args = self.tensor_args(node)
        feats = [self.feat.get(a) for a in args]
        if all(f is None for f in feats):
            return None
        target = node.target
        method = node.op == "call_method"
        if (method and target in _ELEMENTWISE_METHODS) or (not method and target in _ELEMENTWISE_FUNCTIONS):
            if len(args) != 1:
                raise self.refuse(node, "an element-wise function of several tensors")
            return feats[0]
        if (method and target in _COMBINE_METHODS) or (not method and target in _COMBINE):
            return self.combine(node, args, feats)
        if (method and target in _FLATTEN_METHODS) or (not method and target is torch.flatten):
            return self.flatten(node, feats[0], self.shape(node))
        if (method and target in _REDUCE_METHODS) or (not method and target in _REDUCE):
            return self.reduce(node, feats[0])
        raise self.refuse(node, "an operation not known to commute with a permutation of units")

    def combine(self, node: fx.Node, args: list[fx.Node], feats: list[Feat | None]) -> Feat | None:
        if len(args) == 1:  # with a Python number
            return feats[0]
        shapes = {self.shape(a) for a in args}
        if len(shapes) != 1:
            raise self.refuse(node, "broadcasting across permuted units")
        known = [f for f in feats if f is not None]
        if len(known) < len(feats):  # with a tensor no permutation acts on: the group must stay fixed
            for f in known:
                self.union(f.group, FIXED, node.name)
            return None
        first = known[0]
        for f in known[1:]:
            if (f.axis, f.flat) != (first.axis, first.flat):
                raise self.refuse(node, "adding tensors permuted on different axes")
            self.union(first.group, f.group, node.name)
        return first

    def reduce(self, node: fx.Node, f: Feat | None) -> Feat | None:
        assert f is not None
        ndim = len(self.shape(self.tensor_args(node)[0]) or ())
        given: Any = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
        keepdim = bool(node.kwargs.get("keepdim", node.args[2] if len(node.args) > 2 else False))
        given = [given] if isinstance(given, int) else given
        if not isinstance(given, (list, tuple)) or not all(isinstance(d, int) for d in given) or f.flat:
            raise self.refuse(node, "a reduction over permuted units")
        dims = [int(d) % ndim for d in given]
        if f.axis in dims:
            raise self.refuse(node, "a reduction over permuted units")
        return Feat(f.group, f.axis if keepdim else f.axis - sum(1 for d in dims if d < f.axis))

    # ---- the result
    def spec(self, state: dict[str, torch.Tensor]) -> PermutationSpec:
        roots = {g: self.find(g) for g in self.sizes}
        live = {r for r in roots.values() if r != FIXED}
        sizes = {r: self.sizes[r] for r in sorted(live)}
        axes: dict[str, tuple[str | None, ...]] = {}
        for name, t in state.items():
            given = self.axes.get(name)
            if given is None:
                axes[name] = (None,) * t.dim()
                continue
            axes[name] = tuple(None if g is None or roots[g] == FIXED else roots[g] for g in given)
        views = {n: v for n, v in self.views.items() if n in state}
        return PermutationSpec(sizes, axes, views)


def _target_name(node: fx.Node) -> str:
    t = node.target
    return t if isinstance(t, str) else getattr(t, "__name__", repr(t))


def _nested_nodes(args: Any) -> list[fx.Node]:
    out: list[fx.Node] = []

    def keep(n: fx.Node) -> fx.Node:
        out.append(n)
        return n

    fx.node.map_arg(args, keep)
    return out


def traced_spec(model: nn.Module, example: torch.Tensor) -> PermutationSpec:
    """Derive the permutation groups of ``model`` by tracing it on ``example`` inputs ``(N, ...)``.

    Raises:
        ValueError: the model cannot be traced, or holds an operation on permuted units that is not
            known to commute with the permutation, or has no hidden units that can be permuted.
    """
    try:
        gm = fx.symbolic_trace(model)
    except Exception as exc:  # noqa: BLE001 - any tracing failure refuses the model
        raise ValueError(f"torch.fx cannot trace the model ({type(exc).__name__}: {str(exc)[:120]})") from exc
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(example)
    finally:
        model.train(was_training)
    tracer = _Tracer(model)
    tracer.run(gm)
    spec = tracer.spec(dict(model.state_dict()))
    if not spec.sizes:
        raise ValueError("the model has no hidden units whose permutation leaves its function unchanged")
    return spec


def spec_for(model: nn.Module, model_spec: Any, example: torch.Tensor | None = None) -> Any:
    """The permutation structure to align ``model`` with: the registry's own, else derived by tracing.

    Args:
        model: the module (its parameters' dtype and device are used for the example input).
        model_spec: its :class:`lscape_cli.models.ModelSpec`.
        example: a batch of inputs; default: one zero input of ``model_spec.config.input_shape``.

    Raises:
        ValueError: no permutation structure can be derived (see :func:`traced_spec`).
    """
    from lscape_cli.core.connectivity.alignment import FAMILIES

    if model_spec.name in FAMILIES:
        return model_spec
    if example is None:
        shape = getattr(model_spec.config, "input_shape", None)
        if shape is None:
            raise ValueError("the model's input shape is not recorded")
        p = next(model.parameters())
        example = torch.zeros((1, *shape), dtype=p.dtype, device=p.device)
    return traced_spec(model, example)
