"""Curvature matrices other than the Hessian, as matrix-free operators: GGN, Fisher, empirical Fisher.

Write ``z_i = f(θ, x_i)`` for the network's outputs (``C`` logits) and ``ℓ_i(z) = ℓ(z, y_i)`` for one
sample's loss (:mod:`lscape_cli.core.objective`: cross-entropy, or seed 000's squared error summed over
the outputs), so the objective is ``L(θ) = (1/N) Σ_i ℓ_i(f(θ, x_i))`` and ``J_i = ∂z_i/∂θ`` (``C × n``).
Every matrix here has the form

    M = (1/N) Σ_i J_iᵀ Λ_i J_i,        Λ_i ⪰ 0 (C × C),

and is applied without forming it: ``J_i v`` and ``J_iᵀ u`` are a Jacobian-vector and a vector-Jacobian
product of the network (Schraudolph 2002, "Fast curvature matrix-vector products for second-order
gradient descent", Neural Computation 14(7)). ``M`` is positive semi-definite by construction.

``Λ_i`` per kind (:data:`CURVATURES`):

- ``ggn``: the generalised Gauss-Newton matrix, ``Λ_i = ∇²_z ℓ_i``, the Hessian of the loss with respect
  to the outputs, in closed form: ``diag(p_i) − p_i p_iᵀ`` with ``p_i = softmax(z_i)`` for
  cross-entropy (label-smoothed or not: every smoothed term is a log-softmax, whose Hessian is this one),
  ``2 I`` for the summed squared error; for binary cross-entropy and a user's loss (``--loss-def``) it is
  applied by autograd, ``Λ t = ∂(∇_z ℓ · t)/∂z`` (exact for any loss; positive semi-definite when the
  loss is convex in ``z``). For token sequences a unit is a token: ``z_i`` is one position's ``V`` scores
  and ignored positions (``ignore_index``) have ``Λ = 0``. The Hessian is ``G + (1/N) Σ_i Σ_c (∂ℓ_i/∂z_ic)
  ∇²_θ z_ic``, so ``G = H`` exactly when the model is linear in its parameters (softmax regression,
  linear regression), and ``G ≈ H`` near an interpolating minimum.
- ``fisher``: the Fisher information of the model's predictive distribution, estimated by Monte Carlo
  (Martens 2020, "New insights and perspectives on the natural gradient method", JMLR 21): for each
  sample, ``S`` labels ``ỹ_is`` are drawn from the model itself (``Categorical(p_i)`` for
  cross-entropy, one per token for sequences; ``Bernoulli(σ(z_ic))`` per label for binary cross-entropy;
  ``z_i + N(0, ½ I)`` for the squared error, the Gaussian whose negative log-likelihood
  is ``‖z − y‖²`` up to a constant) and ``Λ_i = (1/S) Σ_s g_is g_isᵀ`` with ``g_is = ∇_z ℓ(z_i, ỹ_is)``.
  Both losses are negative log-likelihoods of exponential families in their natural parameter ``z``,
  so the *exact* Fisher equals the GGN (``E_ỹ[g gᵀ] = ∇²_z ℓ``): ``--curvature ggn`` is the exact
  Fisher, and ``fisher`` measures the Monte-Carlo matrix the natural-gradient literature (K-FAC, EKFAC)
  uses. The labels are drawn once per operator from ``seed`` (on the CPU, for the whole split at once,
  so chunking does not change them), and the matrix is fixed while an estimator runs. Under
  ``torch.distributed`` every rank draws for its own shard from the same seed, so the draws (each one
  a correct sample) differ from a single process's and the estimates agree with it only in
  expectation; estimates are of this sampled matrix, whose
  expectation over the labels is the GGN, and ``S`` and the seed are recorded with every estimate. The
  uncertainty an estimator reports (a trace's standard error, a Ritz residual) is that of the estimate
  of this sampled matrix; the spread due to the label draws is not in it (it shrinks as ``1/√S``:
  compare seeds, or raise ``S``).
- ``empirical-fisher``: ``(1/N) Σ_i ∇ℓ_i ∇ℓ_iᵀ`` with the per-sample gradients ``∇ℓ_i = J_iᵀ ∇_z ℓ_i`` at
  the true labels (Kunstner, Hennig & Balles 2019, "Limitations of the empirical Fisher approximation
  for natural gradient descent", NeurIPS), i.e. ``Λ_i = g_i g_iᵀ`` with ``g_i = ∇_z ℓ(z_i, y_i)``; no
  per-sample gradient is ever formed. Its trace is the mean squared per-sample gradient norm.

Products (:class:`GGN`): per chunk, the outputs ``z_c = f(θ, x_c)`` are computed once with their graph,
and with them ``g(w) = J_cᵀ w`` for a dummy ``w`` (``create_graph=True``); ``J_c v = ∂(g(w)·v)/∂w`` is a
backward pass through that graph (the double-backward form of a forward-mode product), ``u = Λ J_c v /
N`` is closed form, and ``J_cᵀ u`` is a backward pass through ``z_c``'s graph. Both graphs are kept
between products, like the Hessian's ``double_backward`` strategy (:mod:`lscape_cli.core.linalg.hvp`), for at
most ``retain_chunks`` chunks; the others are rebuilt per product. Chunks are weighted by sample count
through the ``1/N``, so chunking changes nothing beyond rounding.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import TypedDict

import torch
import torch.nn.functional as F  # noqa: N812
from torch.func import functional_call

from lscape_cli.core.attention import BACKEND as ATTENTION_BACKEND
from lscape_cli.core.attention import hessian_attention
from lscape_cli.core.choices import CurvatureKind
from lscape_cli.core.linalg.hvp import (
    HVP,
    NestedContext,
    Objective,
    Params,
    ProductsDescription,
    flatten,
    numel,
    unflatten,
)
from lscape_cli.core.losses import Loss, as_loss

CURVATURES = CurvatureKind.values()
DEFINITIONS = {
    "hessian": "H = Hessian of the mean loss",
    "ggn": "G = (1/N) sum_i J_i^T (d^2 loss_i / dz^2) J_i (generalised Gauss-Newton; = exact Fisher)",
    "fisher": "F = (1/N) sum_i J_i^T (1/S sum_s g_is g_is^T) J_i, g_is = dloss(z_i, y~p(.|x_i))/dz "
    "(Monte-Carlo Fisher, S sampled labels per input; its expectation is the GGN)",
    "empirical-fisher": "E = (1/N) sum_i grad loss_i grad loss_i^T (per-sample gradients at the true labels)",
}


class _CurvatureKind(TypedDict):
    kind: str
    definition: str


class CurvatureDict(_CurvatureKind, total=False):
    """:meth:`Curvature.describe`: kind and definition; for ``fisher``, the Monte Carlo sampling."""

    mc_samples: int
    mc_seed: int
    exact_equivalent: str


@dataclass(frozen=True)
class Curvature:
    """Which curvature matrix, with the settings that define it.

    Attributes:
        kind: one of :data:`CURVATURES`.
        mc_samples: ``fisher`` only: labels drawn per input (``S``).
        seed: ``fisher`` only: seeds the label draws.
    """

    kind: str = "hessian"
    mc_samples: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in CURVATURES:
            raise ValueError(f"unknown curvature {self.kind!r}: expected one of {CURVATURES}")
        if self.mc_samples < 1:
            raise ValueError(f"mc_samples must be >= 1, got {self.mc_samples}")

    def describe(self) -> CurvatureDict:
        """The record's ``curvature`` entry: kind, definition and, for ``fisher``, the sampling."""
        out: CurvatureDict = {"kind": self.kind, "definition": DEFINITIONS[self.kind]}
        if self.kind == "fisher":
            out.update({"mc_samples": self.mc_samples, "mc_seed": self.seed, "exact_equivalent": "ggn"})
        return out


class _OutputCurvature:
    """``u = Λ t`` for a chunk's outputs ``t`` (shaped like ``z``), from the module docstring's forms.

    Either ``probs`` (GGN of cross-entropy, masked to the non-ignored units), ``scale`` (GGN of the
    squared error: ``2 t``), ``factors`` ``(*units, S, C)`` (Fisher kinds: ``Λ = (1/S) Σ_s g_s g_sᵀ``;
    ``flat``: a unit is a whole sample, whose outputs are flattened) or ``hessian`` (any other loss:
    ``Λ t`` by a double backward through the loss's gradient in ``z``) is set.
    """

    def __init__(
        self,
        probs: torch.Tensor | None = None,
        scale: float | None = None,
        factors: torch.Tensor | None = None,
        hessian: tuple[torch.Tensor, torch.Tensor] | None = None,
        mask: torch.Tensor | None = None,
        flat: bool = False,
    ) -> None:
        self.probs, self.scale, self.factors, self.hessian = probs, scale, factors, hessian
        self.mask, self.flat = mask, flat

    def apply(self, t: torch.Tensor) -> torch.Tensor:
        if self.probs is not None:
            p = self.probs
            out = p * t - p * (p * t).sum(-1, keepdim=True)
            return out if self.mask is None else out * self.mask.unsqueeze(-1)
        if self.factors is not None:
            flat = t.reshape(t.shape[0], -1) if self.flat else t
            coeff = torch.einsum("...sc,...c->...s", self.factors, flat)
            out = torch.einsum("...sc,...s->...c", self.factors, coeff) / self.factors.shape[-2]
            return out.reshape(t.shape)
        if self.hessian is not None:
            z, grad = self.hessian
            (out,) = torch.autograd.grad(grad, z, t, retain_graph=True)
            return out
        assert self.scale is not None
        return self.scale * t


def label_draws(
    kind: str, loss: str, y: torch.Tensor, mc_samples: int, num_outputs: int, seed: int
) -> torch.Tensor | None:
    """The randomness behind ``fisher``'s sampled labels for a whole split, drawn at once on the CPU.

    Uniforms ``(*y.shape, S)`` for cross-entropy (inverse-CDF draws, one per label or token), uniforms
    ``(N, S, C)`` for binary cross-entropy (one Bernoulli per label), standard normals ``(N, S, C)`` for
    the squared error; ``None`` for the other kinds. Drawing the whole split at once makes the matrix the
    same however the data is chunked. A user loss has no predictive distribution to draw from: refused.
    """
    if kind != "fisher":
        return None
    spec = as_loss(loss)
    if spec.kind == "user":
        raise ValueError(
            "the Monte-Carlo Fisher draws labels from the model's predictive distribution, which a user "
            "loss does not define; use --curvature ggn (its output Hessian comes from autograd) or "
            "empirical-fisher"
        )
    generator = torch.Generator().manual_seed(seed)
    if spec.kind == "ce":
        return torch.rand((*y.shape, mc_samples), generator=generator, dtype=torch.float64)
    shape = (int(y.shape[0]), mc_samples, num_outputs)
    if spec.kind == "bce":
        return torch.rand(shape, generator=generator, dtype=torch.float64)
    return torch.randn(shape, generator=generator, dtype=torch.float64)


def _unit_mask(spec: Loss, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
    """Which output rows count (cross-entropy: targets other than ``ignore_index``); None: all."""
    if spec.kind != "ce":
        return None
    return (y != spec.ignore_index).to(z.dtype)


def _gradient_factors(spec: Loss, z: torch.Tensor, y: torch.Tensor) -> _OutputCurvature:
    """``empirical-fisher``: ``Λ = g gᵀ`` per unit, ``g`` the loss's gradient in the unit's outputs."""
    with torch.enable_grad():
        leaf = z.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(spec.sum(leaf, y), leaf)
    flat = spec.kind == "user" and g.dim() > 2  # a user loss's unit is a whole sample
    g = g.reshape(g.shape[0], -1) if flat else g
    return _OutputCurvature(factors=g.unsqueeze(-2), flat=flat)


def _autograd_hessian(spec: Loss, z: torch.Tensor, y: torch.Tensor) -> _OutputCurvature:
    """``ggn`` of a loss with no closed form here: ``Λ t = ∂(∇_z ℓ · t)/∂z`` by autograd."""
    with torch.enable_grad():
        leaf = z.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(spec.sum(leaf, y), leaf, create_graph=True)
    if not g.requires_grad:  # a loss linear in z: Λ = 0
        return _OutputCurvature(scale=0.0)
    return _OutputCurvature(hessian=(leaf, g))


def output_curvature(
    kind: str, z: torch.Tensor, y: torch.Tensor, loss: str, draws: torch.Tensor | None = None
) -> _OutputCurvature:
    """``Λ`` for outputs ``z`` (``(B, C)``, or ``(B, T, V)`` for tokens) and targets ``y``.

    ``fisher`` needs this chunk's ``draws``.
    """
    z = z.detach()
    spec = as_loss(loss)
    num_classes = z.shape[-1]
    mask = _unit_mask(spec, z, y)
    if kind == "ggn":
        if spec.kind == "ce":
            return _OutputCurvature(probs=z.softmax(-1), mask=mask)
        return _OutputCurvature(scale=2.0) if spec.kind == "mse" else _autograd_hessian(spec, z, y)
    if kind == "empirical-fisher":
        return _gradient_factors(spec, z, y)
    if kind != "fisher" or draws is None:
        raise ValueError(f"no output curvature for {kind!r} without label draws")
    draws = draws.to(z.device)
    if spec.kind == "ce":  # ỹ ~ Categorical(p): the first class whose cumulative probability reaches u
        p = z.softmax(-1)
        cdf = p.double().cumsum(-1).contiguous()
        labels = torch.searchsorted(cdf, draws * cdf[..., -1:]).clamp_(max=num_classes - 1)  # (..., S)
        g = p.unsqueeze(-2) - F.one_hot(labels, num_classes).to(z.dtype)
        if mask is not None:
            g = g * mask[..., None, None]
    elif spec.kind == "bce":  # ỹ_c ~ Bernoulli(σ(z_c)): g = σ(z) − ỹ
        q = z.sigmoid().unsqueeze(1)
        g = q - (draws < q.double()).to(z.dtype)
    else:  # ỹ = z + ε, ε ~ N(0, ½ I): g = 2 (z − ỹ) = −2ε, distributed as √2 · N(0, I)
        g = (math.sqrt(2.0) * draws).to(z.dtype)
    return _OutputCurvature(factors=g)


@dataclass
class _Chunk:
    """One chunk's kept graphs: outputs ``z`` (for ``Jᵀu``), ``Jᵀw`` (for ``Jv``), and ``Λ``."""

    z: torch.Tensor
    w: torch.Tensor
    jtw: tuple[torch.Tensor, ...]
    lam: _OutputCurvature


class GGN(NestedContext):
    """The operator ``v ↦ M v`` for ``M = (1/N) Σ_i J_iᵀ Λ_i J_i`` (module docstring), counting products.

    It has the interface of :class:`lscape_cli.core.linalg.hvp.HVP` (``params``, ``dim``, ``batch_size``,
    ``hvp_many``, ``num_matvecs``, nested ``with`` blocks that free the graphs on exit), so every
    estimator (Lanczos, Hutchinson/Hutch++, SLQ) runs on it unchanged.

    Args:
        obj: the objective (its model, data, loss and chunking).
        curvature: ``ggn``, ``fisher`` or ``empirical-fisher`` with its settings.
        retain_chunks: chunk graphs kept between products (None: all).
    """

    batch_size = 1

    def __init__(self, obj: Objective, curvature: Curvature, retain_chunks: int | None = None) -> None:
        if curvature.kind == "hessian":
            raise ValueError("the Hessian's operator is lscape_cli.core.linalg.hvp.HVP")
        self._obj = obj
        self.curvature = curvature
        self.params = obj.params
        self.num_matvecs = 0
        self._retain = retain_chunks
        self._depth = 0
        self._leaves: Params | None = None
        self._chunks: list[_Chunk] | None = None
        self._lams: list[_OutputCurvature] | None = None  # one per chunk, drawn once per operator

    @property
    def dim(self) -> int:
        """Number of parameters ``n``."""
        return numel(self.params)

    @property
    def has_graph(self) -> bool:
        """Whether chunk graphs are held (between the first product and :meth:`close`)."""
        return self._chunks is not None

    def _build_chunk(self, index: int, xb: torch.Tensor, yb: torch.Tensor) -> _Chunk:
        assert self._leaves is not None and self._lams is not None
        with hessian_attention(xb.device):  # Jv is a double backward through the network
            z = functional_call(self._obj.model, (self._leaves, self._obj.buffers), (xb,))
        w = torch.zeros_like(z, requires_grad=True)
        leaves = list(self._leaves.values())
        if not z.requires_grad:  # outputs independent of every parameter in the block: M = 0
            return _Chunk(z, w, tuple(torch.zeros_like(t) for t in leaves), self._lams[index])
        parts = torch.autograd.grad(z, leaves, w, create_graph=True, allow_unused=True)
        jtw = tuple(
            p if p is not None else torch.zeros_like(t)
            for p, t in zip(parts, self._leaves.values(), strict=True)
        )
        return _Chunk(z, w, jtw, self._lams[index])

    def _build(self) -> None:
        self._leaves = {n: p.detach().requires_grad_(True) for n, p in self._obj.params.items()}
        if self._lams is None:
            self._lams = self._output_curvatures()
        kept = itertools.islice(self._obj.chunks(), self._retain)  # reads only the kept chunks
        self._chunks = [self._build_chunk(i, xb, yb) for i, (xb, yb) in enumerate(kept)]

    def _output_curvatures(self) -> list[_OutputCurvature]:
        """``Λ`` per chunk, at the fixed point ``θ`` (labels for ``fisher`` drawn once, here)."""
        obj, cur = self._obj, self.curvature
        lams, start = [], 0
        with torch.no_grad():
            for xb, yb in obj.chunks():
                z = functional_call(obj.model, (obj.params, obj.buffers), (xb,))
                if start == 0:
                    draws = label_draws(cur.kind, obj.loss, obj.y, cur.mc_samples, z.shape[-1], cur.seed)
                part = None if draws is None else draws[start : start + xb.shape[0]]
                lams.append(output_curvature(cur.kind, z, yb, obj.loss, part))
                start += xb.shape[0]
        return lams

    def _product(self, chunk: _Chunk, v: list[torch.Tensor], retain: bool) -> list[torch.Tensor]:
        """``J_cᵀ Λ_c J_c v / N`` for one chunk."""
        assert self._leaves is not None
        leaves = list(self._leaves.values())
        pairs = [(g, d) for g, d in zip(chunk.jtw, v, strict=True) if g.requires_grad]
        if not pairs:  # outputs independent of every parameter in the block
            return [torch.zeros_like(t) for t in leaves]
        outs, dirs = zip(*pairs, strict=True)
        (jv,) = torch.autograd.grad(outs, chunk.w, dirs, retain_graph=True)
        u = chunk.lam.apply(jv) / self._obj.num_units
        parts = torch.autograd.grad(chunk.z, leaves, u, retain_graph=retain, allow_unused=True)
        return [p if p is not None else torch.zeros_like(t) for p, t in zip(parts, leaves, strict=True)]

    def _one(self, v: Params) -> Params:
        assert self._chunks is not None and self._leaves is not None
        dirs = [v[n] for n in self._leaves]
        acc = [torch.zeros_like(t) for t in self._leaves.values()]
        for i, (xb, yb) in enumerate(self._obj.chunks()):
            kept = i < len(self._chunks)
            chunk = self._chunks[i] if kept else self._build_chunk(i, xb, yb)
            for total, part in zip(acc, self._product(chunk, dirs, retain=kept), strict=True):
                total += part.detach()
        return dict(zip(self._leaves, acc, strict=True))

    def __call__(self, v: Params) -> Params:
        """``M v`` for one vector."""
        return self.hvp_many([v])[0]

    def hvp_many(self, vs: list[Params]) -> list[Params]:
        """``[M v for v in vs]``."""
        if self._chunks is None:
            self._build()
        out = [self._one(v) for v in vs]
        if self._obj.shard is not None:  # one all-reduce for the whole batch
            flat = self._obj.reduce(torch.stack([flatten(v) for v in out]))
            out = [unflatten(row, self.params) for row in flat]
        self.num_matvecs += len(vs)
        return out

    def describe(self) -> ProductsDescription:
        """How products are computed, and the chunking (for records; the keys of ``HVP.describe``).

        ``jvp_vjp`` is the one strategy (module docstring); nothing is measured or batched.
        """
        n = int(self._obj.y.shape[0])
        chunks = math.ceil(n / self._obj.max_batch)
        return {
            "strategy": "jvp_vjp",
            "batched_strategy": "jvp_vjp",
            "batch_size": self.batch_size,
            "chosen_by": "only-strategy",
            "seconds_per_product": None,
            "graph_build_seconds": None,
            "calibration": None,
            "chunk_size": min(n, self._obj.max_batch),
            "num_chunks": chunks,
            "retain_chunks": chunks if self._retain is None else min(chunks, self._retain),
            "attention_backend": ATTENTION_BACKEND,
        }

    def close(self) -> None:
        """Release the graphs now (the sampled labels are kept: the matrix stays the same)."""
        self._chunks = None
        self._leaves = None


def curvature_operator(
    obj: Objective,
    curvature: Curvature,
    hvp_strategy: str = "auto",
    retain_chunks: int | None = None,
) -> HVP | GGN:
    """The operator of ``curvature`` at ``obj``: :class:`HVP` for the Hessian, :class:`GGN` otherwise."""
    if curvature.kind == "hessian":
        return HVP(obj, hvp_strategy, retain_chunks)
    return GGN(obj, curvature, retain_chunks)
