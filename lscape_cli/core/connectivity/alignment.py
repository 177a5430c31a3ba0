"""Permutation symmetry of hidden units and weight matching (Ainsworth et al. 2023, "Git Re-Basin").

Permuting the hidden units of a layer -- the rows of its weight and bias (and its BatchNorm's
parameters and running statistics) together with the matching input columns of the next layer --
leaves the function computed by the network unchanged, because every activation acts element-wise
(and max-pooling per channel). Two independently trained networks may therefore sit in the same basin up
to such a permutation; aligning B to A before interpolating removes that symmetry from the barrier.

A :class:`PermutationSpec` names the permutation *groups* (one per layer of hidden units, or one per
residual stream of a ResNet stage) and, for every tensor of the ``state_dict``, the group that acts on
each of its axes. A tensor may be *viewed* in another shape first: ``fc1.weight`` of the SimpleCNN is
``(hidden, C*H*W)`` with inputs flattened channel-major, so it is viewed as ``(hidden, C, H*W)`` and
its axis 1 follows the last conv's channel permutation.

Weight matching (Ainsworth et al. 2023, Algorithm 1) maximises ``sum_tensors <W_A, pi(W_B)>`` over the
permutations ``pi`` by coordinate descent: groups are visited in a seeded random order, and each step
solves one linear assignment problem ``max_P <S, P>`` for that group with the others fixed, where
``S[i, j] = sum <row i of A's incident tensors, row j of B's, permuted on their other axes>``
(``scipy.optimize.linear_sum_assignment``). A sweep that changes nothing ends the search; the
objective never decreases, so it ends after finitely many sweeps.

Convention: ``perms[g]`` is an index tensor ``p`` with ``permuted_B[..., i, ...] = B[..., p[i], ...]``
along every axis that group ``g`` acts on, i.e. unit ``p[i]`` of B is matched to unit ``i`` of A.

Supported families: ``mlp``, ``cnn`` (SimpleCNN), ``resnet`` (with or without skips and BatchNorm;
a residual stream shares one permutation across the blocks it passes through) and ``linear`` (no
hidden units: the only permutation is the identity).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypedDict

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from lscape_cli.core.params import Params

Perms = dict[str, torch.Tensor]
FAMILIES = ("mlp", "cnn", "resnet", "linear")
_BN_KEYS = ("weight", "bias", "running_mean", "running_var")


@dataclass(frozen=True)
class PermutationSpec:
    """Which permutation group acts on which axis of every tensor of a ``state_dict``.

    Attributes:
        sizes: group name -> number of units it permutes.
        axes: tensor name -> one entry per axis of the tensor's view: a group name or ``None``.
        views: tensor name -> the shape the tensor is viewed as before permuting (absent: its own).
    """

    sizes: dict[str, int]
    axes: dict[str, tuple[str | None, ...]]
    views: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def incident(self, group: str, names: Any) -> list[tuple[str, int]]:
        """``(tensor name, axis)`` pairs among ``names`` that ``group`` acts on."""
        return [(n, ax) for n in names for ax, g in enumerate(self.axes[n]) if g == group]


class _Builder:
    def __init__(self) -> None:
        self.sizes: dict[str, int] = {}
        self.axes: dict[str, tuple[str | None, ...]] = {}
        self.views: dict[str, tuple[int, ...]] = {}

    def group(self, name: str, size: int) -> str:
        self.sizes[name] = size
        return name

    def add(self, name: str, axes: tuple[str | None, ...], view: tuple[int, ...] | None = None) -> None:
        self.axes[name] = axes
        if view is not None:
            self.views[name] = view

    def linear(self, prefix: str, out: str | None, inp: str | None, bias: bool) -> None:
        self.add(f"{prefix}.weight", (out, inp))
        if bias:
            self.add(f"{prefix}.bias", (out,))

    def conv(self, prefix: str, out: str | None, inp: str | None, bias: bool) -> None:
        self.add(f"{prefix}.weight", (out, inp, None, None))
        if bias:
            self.add(f"{prefix}.bias", (out,))

    def batchnorm(self, prefix: str, group: str) -> None:
        for key in _BN_KEYS:
            self.add(f"{prefix}.{key}", (group,))
        self.add(f"{prefix}.num_batches_tracked", ())

    def spec(self) -> PermutationSpec:
        return PermutationSpec(dict(self.sizes), dict(self.axes), dict(self.views))


def _mlp(cfg: Any) -> PermutationSpec:
    b = _Builder()
    prev: str | None = None
    for layer in range(cfg.depth):
        g = b.group(f"hidden.{layer}", cfg.width)
        b.linear(f"hidden.{layer}", g, prev, cfg.bias)
        prev = g
    b.linear("head", None, prev, cfg.bias)
    return b.spec()


def _cnn(cfg: Any) -> PermutationSpec:
    b = _Builder()
    _, h, w = cfg.input_shape
    c1, c2 = b.group("conv1", cfg.width), b.group("conv2", 2 * cfg.width)
    fc = b.group("fc1", cfg.hidden)
    b.conv("conv1", c1, None, cfg.bias)
    b.conv("conv2", c2, c1, cfg.bias)
    # fc1 reads the flattened (C2, H/4, W/4) maps channel-major: view its columns as (C2, H/4 * W/4).
    b.add("fc1.weight", (fc, c2, None), view=(cfg.hidden, 2 * cfg.width, (h // 4) * (w // 4)))
    if cfg.bias:
        b.add("fc1.bias", (fc,))
    b.linear("fc2", None, fc, cfg.bias)
    return b.spec()


def _resnet(cfg: Any) -> PermutationSpec:
    b = _Builder()
    bn = cfg.batchnorm
    stream = b.group("stem", cfg.width)
    b.conv("stem", stream, None, not bn)
    if bn:
        b.batchnorm("stem_bn", stream)
    cin, i = cfg.width, 0
    for stage in range(cfg.stages):
        cout = cfg.width * 2**stage
        for blk in range(cfg.blocks):
            p = f"blocks.{i}"
            stride = 2 if (stage > 0 and blk == 0) else 1
            inner = b.group(f"{p}.conv1", cout)
            b.conv(f"{p}.conv1", inner, stream, not bn)
            if bn:
                b.batchnorm(f"{p}.bn1", inner)
            if cfg.skip and stride == 1 and cin == cout:
                out = stream  # identity shortcut: the block writes into the same residual stream
            elif cfg.skip:
                out = b.group(f"{p}.shortcut", cout)  # a 1x1 projection starts a new stream
                b.conv(f"{p}.shortcut.0", out, stream, False)
                if bn:
                    b.batchnorm(f"{p}.shortcut.1", out)
            else:
                out = b.group(f"{p}.conv2", cout)
            b.conv(f"{p}.conv2", out, inner, not bn)
            if bn:
                b.batchnorm(f"{p}.bn2", out)
            stream, cin, i = out, cout, i + 1
    b.linear("head", None, stream, True)
    return b.spec()


def _linear(cfg: Any) -> PermutationSpec:
    b = _Builder()
    b.linear("head", None, None, cfg.bias)
    return b.spec()


_BUILDERS = {"mlp": _mlp, "cnn": _cnn, "resnet": _resnet, "linear": _linear}


def permutation_spec(model_spec: Any) -> PermutationSpec:
    """The permutation groups of a registry model (a :class:`lscape_cli.models.ModelSpec`).

    Raises:
        ValueError: the family has no known permutation structure.
    """
    if model_spec.name not in _BUILDERS:
        raise ValueError(f"no permutation structure known for model {model_spec.name!r}")
    return _BUILDERS[model_spec.name](model_spec.config)


def check_spec(spec: PermutationSpec, state: Params) -> None:
    """Raise ``ValueError`` unless ``spec`` describes exactly the tensors of ``state`` and their shapes."""
    missing, unexpected = sorted(set(state) - set(spec.axes)), sorted(set(spec.axes) - set(state))
    if missing or unexpected:
        raise ValueError(
            f"permutation spec does not match the state dict (not covered: {missing[:5]}, "
            f"absent: {unexpected[:5]})"
        )
    for name, t in state.items():
        shape = spec.views.get(name, tuple(t.shape))
        if int(np.prod(shape)) != t.numel() or len(shape) != len(spec.axes[name]):
            raise ValueError(f"permutation spec gives {name} the view {shape}, but it is {tuple(t.shape)}")
        for ax, g in enumerate(spec.axes[name]):
            if g is not None and shape[ax] != spec.sizes[g]:
                raise ValueError(f"{name} axis {ax} has {shape[ax]} units, group {g} has {spec.sizes[g]}")


def _as_spec(spec: Any) -> PermutationSpec:
    return spec if isinstance(spec, PermutationSpec) else permutation_spec(spec)


def _permute_tensor(
    spec: PermutationSpec, name: str, t: torch.Tensor, perms: Perms, skip: int | None = None
) -> torch.Tensor:
    """``t`` in its view shape with every permuted axis but ``skip`` permuted."""
    v = t.reshape(spec.views.get(name, tuple(t.shape)))
    for ax, g in enumerate(spec.axes[name]):
        if g is not None and ax != skip and g in perms:
            v = v.index_select(ax, perms[g].to(v.device))
    return v


def permute(spec: Any, state: Params, perms: Perms) -> Params:
    """Apply ``perms`` to every tensor of ``state`` (parameters and/or buffers); returns new tensors.

    Args:
        spec: a :class:`PermutationSpec` or a registry ``ModelSpec``.
        state: name -> tensor, any subset of the spec's tensors.
        perms: group -> index tensor (see the module docstring's convention); missing groups stay fixed.
    """
    spec = _as_spec(spec)
    unknown = sorted(set(state) - set(spec.axes))
    if unknown:
        raise ValueError(f"tensors not described by the permutation spec: {unknown[:5]}")
    return {n: _permute_tensor(spec, n, t, perms).reshape(t.shape).clone() for n, t in state.items()}


def identity(spec: Any) -> Perms:
    """The identity permutation of every group."""
    return {g: torch.arange(n) for g, n in _as_spec(spec).sizes.items()}


def random_permutation(spec: Any, seed: int) -> Perms:
    """A uniformly random permutation of every group (seeded, drawn on CPU)."""
    gen = torch.Generator().manual_seed(seed)
    return {g: torch.randperm(n, generator=gen) for g, n in _as_spec(spec).sizes.items()}


def invert(perms: Perms) -> Perms:
    """Inverse permutations: permuting by ``p`` and then by its inverse gives the original back."""
    return {g: torch.argsort(p) for g, p in perms.items()}


def inner_product(spec: Any, params_a: Params, params_b: Params, perms: Perms) -> float:
    """The matching objective ``sum_names <A[name], pi(B)[name]>`` over ``params_a``'s tensors (float64)."""
    spec = _as_spec(spec)
    return float(
        sum(
            torch.vdot(
                params_a[n].double().flatten(),
                _permute_tensor(spec, n, params_b[n], perms).double().flatten(),
            )
            for n in params_a
        )
    )


class AlignmentSummary(TypedDict):
    """:meth:`Alignment.summary`: method, settings, convergence and per-group statistics."""

    method: str
    reference: str
    objective_definition: str
    solver: str
    seed: int
    max_iter: int
    iterations: int
    converged: bool
    objective_history: list[float]
    groups: dict[str, dict[str, int]]  # group -> size, moved


@dataclass
class Alignment:
    """B permuted onto A by weight matching, with how the search went.

    Attributes:
        params: B's parameters after the permutation (same function as B).
        buffers: B's buffers permuted the same way (e.g. BatchNorm running statistics).
        perms: group -> index tensor (CPU, int64); unit ``perms[g][i]`` of B became unit ``i``.
        iterations: sweeps over all groups.
        objective: ``sum <theta_A, pi(theta_B)>`` for the identity, then after each sweep.
        converged: the last sweep changed no permutation (a coordinate-wise optimum).
        seed: seed of the group visiting order.
        max_iter: the sweep budget.
    """

    params: Params
    buffers: Params
    perms: Perms
    iterations: int
    objective: list[float]
    converged: bool
    seed: int
    max_iter: int

    def summary(self) -> AlignmentSummary:
        """JSON-ready description: method, settings, convergence and per-group statistics."""
        return {
            "method": "weight_matching",
            "reference": "Ainsworth, Hayase & Srinivasa 2023, Git Re-Basin, Algorithm 1",
            "objective_definition": "sum over parameter tensors of <theta_A, pi(theta_B)>",
            "solver": "coordinate descent over groups in seeded random order; "
            "scipy.optimize.linear_sum_assignment per group",
            "seed": self.seed,
            "max_iter": self.max_iter,
            "iterations": self.iterations,
            "converged": self.converged,
            "objective_history": self.objective,
            "groups": {
                g: {"size": int(p.numel()), "moved": int((p != torch.arange(p.numel())).sum())}
                for g, p in self.perms.items()
            },
        }


def _similarity(spec: PermutationSpec, group: str, params_a: Params, params_b: Params, perms: Perms) -> Any:
    """``S[i, j]``: inner product of A's unit ``i`` with B's unit ``j`` over every incident tensor."""
    n = spec.sizes[group]
    sim = torch.zeros(n, n, dtype=torch.float64)
    for name, ax in spec.incident(group, params_a):
        wa = params_a[name].reshape(spec.views.get(name, tuple(params_a[name].shape)))
        wb = _permute_tensor(spec, name, params_b[name], perms, skip=ax)
        wa = wa.movedim(ax, 0).reshape(n, -1).double().cpu()
        wb = wb.movedim(ax, 0).reshape(n, -1).double().cpu()
        sim += wa @ wb.T
    return sim.numpy()


def weight_matching(
    spec: Any, params_a: Params, params_b: Params, *, seed: int = 0, max_iter: int = 100
) -> tuple[Perms, int, list[float], bool]:
    """Permutations of B's groups maximising ``sum <theta_A, pi(theta_B)>`` (see the module docstring).

    Returns:
        ``(perms, sweeps, objective history, converged)``.
    """
    from scipy.optimize import linear_sum_assignment

    spec = _as_spec(spec)
    perms = identity(spec)
    history = [inner_product(spec, params_a, params_b, perms)]
    order_rng = np.random.default_rng(seed)
    groups = sorted(spec.sizes)
    sweeps, converged = 0, not groups
    while not converged and sweeps < max_iter:
        sweeps += 1
        changed = False
        for k in order_rng.permutation(len(groups)):
            g = groups[int(k)]
            sim = _similarity(spec, g, params_a, params_b, perms)
            rows, cols = linear_sum_assignment(sim, maximize=True)
            old = float(sim[np.arange(sim.shape[0]), perms[g].numpy()].sum())
            new = float(sim[rows, cols].sum())
            if new > old + 1e-12 * max(1.0, abs(old)):  # strict gain: no cycling between equal optima
                perms[g] = torch.as_tensor(cols, dtype=torch.int64)
                changed = True
        history.append(inner_product(spec, params_a, params_b, perms))
        converged = not changed
    return perms, sweeps, history, converged


def align(
    spec: Any,
    params_a: Params,
    params_b: Params,
    buffers_b: Params | None = None,
    *,
    seed: int = 0,
    max_iter: int = 100,
) -> Alignment:
    """Permute B's hidden units to match A's by weight matching; B's function is unchanged.

    Args:
        spec: a registry ``ModelSpec`` (``mlp``, ``cnn``, ``resnet``, ``linear``) or a
            :class:`PermutationSpec`.
        params_a: A's parameters (the reference; not modified).
        params_b: B's parameters, same names and shapes.
        buffers_b: B's buffers (BatchNorm statistics), permuted along (not matched on).
        seed: seed of the order in which groups are visited.
        max_iter: most sweeps over all groups.

    Returns:
        An :class:`Alignment`; check it with :func:`function_gap` before trusting it.
    """
    spec = _as_spec(spec)
    buffers_b = buffers_b or {}
    check_spec(spec, {**params_b, **buffers_b})
    if set(params_a) != set(params_b):
        raise ValueError("A and B have different parameter names")
    perms, sweeps, history, converged = weight_matching(
        spec, params_a, params_b, seed=seed, max_iter=max_iter
    )
    return Alignment(
        params=permute(spec, params_b, perms),
        buffers=permute(spec, buffers_b, perms),
        perms=perms,
        iterations=sweeps,
        objective=history,
        converged=converged,
        seed=seed,
        max_iter=max_iter,
    )


class FunctionGapDict(TypedDict):
    """:meth:`FunctionGap.to_dict`."""

    max_abs_diff: float
    max_abs_output: float
    relative: float
    num_samples: int
    tol: float
    passed: bool
    method: str


@dataclass(frozen=True)
class FunctionGap:
    """How far two parameter settings of one model are from computing the same function."""

    max_abs_diff: float  # max over samples and outputs of |f_1(x) - f_2(x)|
    max_abs_output: float  # max |f_1(x)|, the scale
    relative: float  # max_abs_diff / max_abs_output
    num_samples: int
    tol: float  # relative tolerance for float rounding of reordered sums
    passed: bool

    def to_dict(self) -> FunctionGapDict:
        """JSON-ready form."""
        return {
            "max_abs_diff": self.max_abs_diff,
            "max_abs_output": self.max_abs_output,
            "relative": self.relative,
            "num_samples": self.num_samples,
            "tol": self.tol,
            "passed": self.passed,
            "method": "max |logits_B - logits_B_permuted| over the samples, eval mode",
        }


@torch.no_grad()
def function_gap(
    model: nn.Module,
    state_1: tuple[Params, Params],
    state_2: tuple[Params, Params],
    x: torch.Tensor,
    max_batch: int = 4096,
    tol: float | None = None,
) -> FunctionGap:
    """Compare the outputs of ``model`` at two ``(params, buffers)`` settings on the inputs ``x``.

    A permutation only reorders floating-point sums, so the outputs agree to rounding: the default
    ``tol`` is ``1e-4`` relative in float32 and ``1e-10`` in float64.
    """
    dtype = next(iter(state_1[0].values())).dtype
    tol = tol if tol is not None else (1e-10 if dtype == torch.float64 else 1e-4)
    diff, scale = 0.0, 0.0
    was_training = model.training
    model.eval()
    try:
        for start in range(0, x.shape[0], max_batch):
            xb = x[start : start + max_batch]
            f1 = functional_call(model, state_1, (xb,))
            f2 = functional_call(model, state_2, (xb,))
            diff = max(diff, float((f1 - f2).abs().max()))
            scale = max(scale, float(f1.abs().max()))
    finally:
        model.train(was_training)
    rel = diff / scale if scale > 0 else diff
    return FunctionGap(diff, scale, rel, int(x.shape[0]), tol, bool(rel <= tol))
