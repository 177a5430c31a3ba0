"""Directions in parameter space: Gaussian draws and their normalisation, and the other slice axes.

Filter normalisation (Li et al. 2018, "Visualizing the Loss Landscape of Neural Nets", NeurIPS): for
every *filter* of a weight tensor -- an output channel of a conv kernel, an output neuron (row) of a
linear layer -- the direction is rescaled to the parameters' norm, ``d_i <- d_i / ||d_i|| * ||theta_i||``.
Peers often normalise per *tensor* while citing per-filter normalisation; here the unit is explicit:

- ``norm="filter"``: per output filter/neuron (dim 0 of every tensor with ``ndim >= 2``);
- ``norm="layer"``: per tensor, ``d <- d / ||d|| * ||theta||``;
- ``norm="none"``: the raw Gaussian draw;
- ``norm="unit"``: the whole direction scaled to length 1 (seed 003's "unit directions u, v"; not
  scale-invariant, so slices of differently scaled networks are not comparable).

One-dimensional tensors (biases, BatchNorm weights and biases) follow ``bias``:

- ``"zero"``: the direction is 0 there (Li et al.'s choice);
- ``"filter"``: normalised like everything else (per element under ``filter``, so ``|d_i| = |theta_i|``;
  per tensor under ``layer``);
- ``"keep"``: left as drawn.
"""

from __future__ import annotations

from typing import TypedDict

import torch

from lscape_cli.core.choices import BiasPolicy, Norm
from lscape_cli.core.linalg.hvp import HVP, Objective, Params, ProgressFn
from lscape_cli.core.linalg.spectrum import EigenResult, lanczos

NORMS = Norm.values()
BIAS_POLICIES = BiasPolicy.values()


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
    out: torch.Tensor = (flat_d * ratio).reshape(d.shape)
    return out


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
        elif (th.dim() <= 1 and bias == "keep") or norm in ("none", "unit"):
            out[name] = dn.clone()
        elif norm == "layer":
            out[name] = dn * (th.norm() / dn.norm().clamp_min(1e-30))
        elif th.dim() <= 1:  # filter norm on a 1-D tensor: every element is its own filter
            out[name] = dn.sign() * th.abs()
        else:
            out[name] = _per_filter(dn, th)
    if norm == "unit":
        size = float(sum((t.double() ** 2).sum() for t in out.values())) ** 0.5
        out = {n: t / max(size, 1e-300) for n, t in out.items()}
    return out


def random_direction(theta: Params, seed: int, norm: str = "filter", bias: str = "zero") -> Params:
    """A seeded Gaussian direction, normalised against ``theta``."""
    gen = torch.Generator().manual_seed(seed)
    return normalize(gaussian_direction(theta, gen), theta, norm, bias)


# ---------------------------------------------------------------------------------------------------------
# More directions: orthogonalisation, the segment to another minimum, PCA of a trajectory, eigenvectors.


def _dot(a: Params, b: Params) -> float:
    """``<a, b>`` accumulated in float64."""
    return float(sum((a[n].double() * b[n].double()).sum() for n in a))


def orthogonalize(dirs: list[Params]) -> list[Params]:
    """Gram-Schmidt in order: ``d_k <- d_k - sum_{j<k} <d_k, d_j>/<d_j, d_j> d_j``.

    Applied *after* normalisation, so the first direction keeps its filter norms exactly and later ones
    lose only their (small, ~1/sqrt(n)) component along earlier ones; lengths are not rescaled. A
    direction that is (numerically) in the span of earlier ones is an error.
    """
    out: list[Params] = []
    for d in dirs:
        size = _dot(d, d)
        for e in out:
            c = _dot(d, e) / _dot(e, e)
            d = {n: d[n] - c * e[n] for n in d}
        if _dot(d, d) <= 1e-24 * max(size, 1e-300):
            raise ValueError("directions are linearly dependent: cannot orthogonalise them")
        out.append(d)
    return out


def cosine(a: Params, b: Params) -> float:
    """``<a, b> / (|a| |b|)`` (0 when either is zero)."""
    den = (_dot(a, a) * _dot(b, b)) ** 0.5
    return _dot(a, b) / den if den > 0 else 0.0


def length(d: Params) -> float:
    """Euclidean norm of a direction."""
    return float(_dot(d, d) ** 0.5)


def random_directions(
    theta: Params, count: int, seed: int, norm: str = "filter", bias: str = "zero", orthogonal: bool = False
) -> list[Params]:
    """``count`` Gaussian directions drawn in sequence from one generator seeded with ``seed``.

    Direction k is the same whatever ``count`` is (a 1-D slice along direction 0 lies in the 2-D
    slice of the same seed), normalised against ``theta``, then orthogonalised when asked.
    """
    gen = torch.Generator().manual_seed(seed)
    dirs = [normalize(gaussian_direction(theta, gen), theta, norm, bias) for _ in range(count)]
    return orthogonalize(dirs) if orthogonal else dirs


def toward(theta: Params, other: Params) -> Params:
    """``theta_other - theta``: coefficient 1 reaches the other checkpoint."""
    return {n: other[n] - theta[n] for n in theta}


def filter_norm_ratio(d: Params, theta: Params) -> dict[str, float]:
    """Per tensor with ``ndim >= 2``: the largest ``| ||d_i|| / ||theta_i|| - 1 |`` over its filters."""
    out = {}
    for n, t in theta.items():
        if t.dim() >= 2:
            dn = d[n].reshape(t.shape[0], -1).double().norm(dim=1)
            tn = t.reshape(t.shape[0], -1).double().norm(dim=1)
            out[n] = float(((dn / tn.clamp_min(1e-300)) - 1).abs().max())
    return out


class PcaDirections(TypedDict):
    """:func:`pca_directions`: the directions, their variance shares and the snapshots' coordinates."""

    directions: list[Params]
    explained_variance_ratio: list[float]
    singular_values: list[float]
    coords: torch.Tensor  # (T, k)
    in_span_fraction: list[float]


def pca_directions(theta: Params, snapshots: Params, k: int) -> PcaDirections:
    """Top-``k`` principal directions of a training trajectory around ``theta`` (Li et al. 2018, §7).

    The rows ``theta_t - theta`` (t = 0..T-1) are centred over t, as ``sklearn.decomposition.PCA`` does
    in Li et al.'s code, and their right singular vectors are the directions (unit length). Signs are
    fixed so the first snapshot (the initialisation) has a negative coordinate: training moves towards
    +alpha. The trajectory is projected onto the (orthonormal) directions *without* centring, so the
    checkpoint is at the origin of the overlay.

    Args:
        theta: the checkpoint's parameters (the centre).
        snapshots: name -> ``(T, *shape)`` snapshots of the same parameters.
        k: number of directions (at most T - 1).

    Returns:
        ``{"directions": [Params]*k, "explained_variance_ratio": [k], "singular_values": [k],
        "coords": (T, k) tensor, "in_span_fraction": [T] share of |theta_t - theta|^2 inside the span}``.
    """
    names = list(theta)
    t_count = int(next(iter(snapshots.values())).shape[0])
    if k > t_count - 1:
        raise ValueError(
            f"{k} principal directions need at least {k + 1} snapshots, the trajectory has {t_count}"
        )
    m = torch.cat(
        [(snapshots[n].double().reshape(t_count, -1) - theta[n].double().reshape(1, -1)) for n in names],
        dim=1,
    )  # (T, n)
    centred = m - m.mean(dim=0, keepdim=True)
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)
    v = vh[:k]  # (k, n) orthonormal rows
    coords = m @ v.T  # (T, k)
    signs = torch.where(coords[0] > 0, -1.0, 1.0).to(v.dtype)
    v, coords = v * signs[:, None], coords * signs[None, :]
    var = s.pow(2)
    rows = m.pow(2).sum(dim=1)
    inside = coords.pow(2).sum(dim=1) / rows.clamp_min(1e-300)
    dirs = []
    for row in v:
        d, start = {}, 0
        for n in names:
            size = theta[n].numel()
            d[n] = row[start : start + size].reshape(theta[n].shape).to(theta[n].dtype)
            start += size
        dirs.append(d)
    return {
        "directions": dirs,
        "explained_variance_ratio": (var[:k] / var.sum().clamp_min(1e-300)).tolist(),
        "singular_values": s[:k].tolist(),
        "coords": coords,
        "in_span_fraction": [float(v) if r > 0 else 1.0 for v, r in zip(inside, rows, strict=True)],
    }


def fix_sign(d: Params) -> Params:
    """Flip ``d`` so that its largest-magnitude entry is positive (eigenvectors have no natural sign)."""
    best, sign = -1.0, 1.0
    for t in d.values():
        if t.numel():
            i = int(t.abs().argmax())
            v = float(t.reshape(-1)[i])
            if abs(v) > best:
                best, sign = abs(v), (1.0 if v >= 0 else -1.0)
    return {n: t * sign for n, t in d.items()}


def digest(dirs: list[Params]) -> str:
    """sha256 over the directions' names, shapes, dtypes and bytes (in order): identifies a direction set."""
    import hashlib

    h = hashlib.sha256()
    for k, d in enumerate(dirs):
        for n in sorted(d):
            t = d[n].detach().to("cpu").contiguous()
            h.update(f"{k}:{n}:{tuple(t.shape)}:{t.dtype};".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def mismatches(d: Params, theta: Params) -> list[str]:
    """Why a direction does not fit parameters ``theta``: missing, unexpected and mis-shaped names."""
    problems = []
    missing = sorted(set(theta) - set(d))
    unexpected = sorted(set(d) - set(theta))
    shaped = [
        f"{n} {tuple(d[n].shape)} vs {tuple(t.shape)}"
        for n, t in theta.items()
        if n in d and d[n].shape != t.shape
    ]
    if missing:
        problems.append("missing " + ", ".join(missing[:4]) + (" ..." if len(missing) > 4 else ""))
    if unexpected:
        problems.append("unexpected " + ", ".join(unexpected[:4]) + (" ..." if len(unexpected) > 4 else ""))
    if shaped:
        problems.append("mis-shaped (file vs model) " + "; ".join(shaped[:4]))
    return problems


def eigen_directions(
    obj: Objective,
    k: int,
    seed: int = 0,
    tol: float = 1e-6,
    max_iter: int = 200,
    on_step: ProgressFn | None = None,
) -> tuple[list[Params], EigenResult]:
    """The top-``k`` Hessian eigenvectors at ``obj.params`` (probe's Lanczos), unit length, sign-fixed.

    Along a unit eigenvector ``v`` with eigenvalue ``lambda`` the slice is ``L(theta) + lambda/2 a^2 +
    O(a^3)`` at a minimum, so the fitted parabola's curvature checks the eigenvalue.
    """
    res = lanczos(
        HVP(obj),
        k=k,
        which="largest",
        tol=tol,
        max_iter=max_iter,
        seed=seed,
        eigenvectors=True,
        on_step=on_step,
    )
    assert res.eigenvectors is not None
    return unit_eigenvectors(res.eigenvectors), res


def unit_eigenvectors(vectors: list[Params]) -> list[Params]:
    """Ritz vectors as directions: copied, sign-fixed (:func:`fix_sign`) and scaled to unit length."""
    dirs = []
    for v in vectors:
        v = fix_sign({n: t.detach().clone() for n, t in v.items()})
        size = length(v)
        dirs.append({n: t / size for n, t in v.items()})
    return dirs
