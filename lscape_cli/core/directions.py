"""Directions in parameter space: Gaussian draws and their normalisation.

Filter normalisation (Li et al. 2018, "Visualizing the Loss Landscape of Neural Nets", NeurIPS): for
every *filter* of a weight tensor -- an output channel of a conv kernel, an output neuron (row) of a
linear layer -- the direction is rescaled to the parameters' norm, ``d_i <- d_i / ||d_i|| * ||theta_i||``.
Peers often normalise per *tensor* while citing per-filter normalisation; here the unit is explicit:

- ``norm="filter"``: per output filter/neuron (dim 0 of every tensor with ``ndim >= 2``);
- ``norm="layer"``: per tensor, ``d <- d / ||d|| * ||theta||``;
- ``norm="none"``: the raw Gaussian draw.

One-dimensional tensors (biases, BatchNorm weights and biases) follow ``bias``:

- ``"zero"``: the direction is 0 there (Li et al.'s choice);
- ``"filter"``: normalised like everything else (per element under ``filter``, so ``|d_i| = |theta_i|``;
  per tensor under ``layer``);
- ``"keep"``: left as drawn.
"""

from __future__ import annotations

import torch

from lscape_cli.core.hvp import Params

NORMS = ("filter", "layer", "none")
BIAS_POLICIES = ("zero", "filter", "keep")


def gaussian_direction(like: Params, generator: torch.Generator) -> Params:
    """``d ~ N(0, I)`` shaped like ``like``.

    Drawn on CPU in float64, so a seed gives the same direction on every device and dtype.
    """
    return {
        n: torch.randn(p.shape, generator=generator, dtype=torch.float64).to(p.device, p.dtype)
        for n, p in like.items()
    }


def _per_filter(d: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    flat_d, flat_t = d.reshape(d.shape[0], -1), theta.reshape(theta.shape[0], -1)
    ratio = flat_t.norm(dim=1, keepdim=True) / flat_d.norm(dim=1, keepdim=True).clamp_min(1e-30)
    return (flat_d * ratio).reshape(d.shape)


def normalize(d: Params, theta: Params, norm: str = "filter", bias: str = "zero") -> Params:
    """Rescale direction ``d`` relative to parameters ``theta`` (see module docstring)."""
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}: expected one of {NORMS}")
    if bias not in BIAS_POLICIES:
        raise ValueError(f"unknown bias policy {bias!r}: expected one of {BIAS_POLICIES}")
    out: Params = {}
    for name, dn in d.items():
        th = theta[name]
        if th.dim() <= 1 and bias == "zero":
            out[name] = torch.zeros_like(dn)
        elif (th.dim() <= 1 and bias == "keep") or norm == "none":
            out[name] = dn.clone()
        elif norm == "layer":
            out[name] = dn * (th.norm() / dn.norm().clamp_min(1e-30))
        elif th.dim() <= 1:  # filter norm on a 1-D tensor: every element is its own filter
            out[name] = dn.sign() * th.abs()
        else:
            out[name] = _per_filter(dn, th)
    return out


def random_direction(theta: Params, seed: int, norm: str = "filter", bias: str = "zero") -> Params:
    """A seeded Gaussian direction, normalised against ``theta``."""
    gen = torch.Generator().manual_seed(seed)
    return normalize(gaussian_direction(theta, gen), theta, norm, bias)
