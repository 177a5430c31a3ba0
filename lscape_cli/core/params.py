"""Vectors of parameter space: name -> tensor dicts shaped like a model's parameters, and their algebra.

Every estimator works on these dicts (:data:`Params`) rather than on one flat tensor, so vectors keep the
parameters' shapes, dtype and device; :func:`flatten` / :func:`unflatten` convert where a flat view is
needed (Krylov bases, Gram-Schmidt). Random vectors are drawn on the CPU from a seeded generator, so a
seed gives the same vector on every device and dtype.
"""

from __future__ import annotations

import torch

Params = dict[str, torch.Tensor]


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
    bits = torch.randint(0, 2, (numel(like),), generator=generator, dtype=torch.int8)
    flat = bits.to(device=_device(like), dtype=_dtype(like)).mul_(2).sub_(1)  # ±1 exactly in every dtype
    return unflatten(flat, like)


def gaussian(like: Params, generator: torch.Generator) -> Params:
    """A standard normal vector shaped like ``like`` (drawn on the CPU in float64, see :func:`rademacher`)."""
    flat = torch.randn(numel(like), generator=generator, dtype=torch.float64)
    return unflatten(flat.to(device=_device(like), dtype=_dtype(like)), like)


def _dtype(a: Params) -> torch.dtype:
    return next(iter(a.values())).dtype


def _device(a: Params) -> torch.device:
    return next(iter(a.values())).device
