"""The directions of a slice, one builder per kind: random, toward, pca, eigen and file.

:func:`build_directions` turns a :class:`~.slice_run.SliceRequest` and the files it names
(already read, as :class:`SliceInput`) into a :class:`SliceDirections`: the directions (parameter-name ->
tensor dicts shaped like theta), the settings the record keeps under ``config.directions``, the axis
labels, facts about the directions and, for ``--pca``, the trajectory's coordinates.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypedDict

import torch

from lscape_cli.core.landscape import directions as D
from lscape_cli.core.params import Params
from lscape_cli.errors import LscapeError

if TYPE_CHECKING:
    from lscape_cli.core.landscape.slice_request import DirectionSettings, SliceRequest
    from lscape_cli.core.linalg.hvp import Objective


class DirectionsMade(TypedDict):
    """How a direction file's directions were made, their digest and where (what its writer is given)."""

    kind: str
    settings: DirectionSettings
    digest: str
    origin: dict[str, str] | None  # checkpoint, sha256 of the centre they were made at


class DirectionsInfo(DirectionsMade):
    """A direction file's ``directions`` metadata."""

    count: int


class SourceMeta(TypedDict, total=False):
    """The header metadata of the file a slice reads (the keys its kind uses; read back from disk)."""

    schema: str | None
    model: dict[str, object]  # the model description a direction file was made for
    epochs: list[int]  # a trajectory's epoch per snapshot
    steps: list[int]
    directions: DirectionsInfo  # a direction file's


class DirectionFacts(TypedDict, total=False):
    """``results.directions``: what the directions are (digest, lengths, cosines)."""

    kind: str
    count: int
    digest: str
    lengths: list[float]
    theta_norm: float
    cosines: list[list[float]]  # [i, j, cos(d_i, d_j)] per pair
    filter_norm_max_relative_deviation: list[float]  # random filter-normalised directions


@dataclass(frozen=True)
class SliceInput:
    """A file a slice reads its directions from: another checkpoint, a trajectory or a direction file.

    ``where`` names it in errors (the path as given), ``name`` in labels and the record (its file name).
    """

    name: str
    where: str
    sha256: str
    tensors: dict[str, torch.Tensor]  # a checkpoint's state or a trajectory's snapshots (T, ...)
    meta: SourceMeta
    directions: list[Params] = field(default_factory=list)  # a direction file's, in order


@dataclass(frozen=True)
class PcaTrajectory:
    """The ``--pca`` trajectory in the slice's coordinates."""

    coords: torch.Tensor  # (T, K) coordinates of the snapshots along the principal directions
    epochs: list[Any]
    steps: Any
    in_span_fraction: Any
    explained: list[float]


@dataclass
class SliceDirections:
    """The directions of one slice and what the record and the plots say about them."""

    dirs: list[Params]
    settings: DirectionSettings  # config.directions
    radius: float  # the range, resolved (1, or fitted to the trajectory with --pca)
    labels: list[str] = field(default_factory=list)  # axis labels of a plane
    short: list[str] = field(default_factory=list)  # one per line of a 1-D slice
    what: str = ""
    facts: DirectionFacts = field(default_factory=lambda: DirectionFacts())  # results.directions
    eigenvalues: list[float] | None = None
    trajectory: PcaTrajectory | None = None
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Context:
    req: SliceRequest
    theta: Params
    buffers: Params
    model: dict[str, object]  # the model description, to compare with a direction file's
    source: SliceInput | None
    objective: Callable[[], Objective]
    warnings: list[str]


def build_directions(
    req: SliceRequest,
    theta: Params,
    buffers: Params,
    model: dict[str, object],
    source: SliceInput | None,
    objective: Callable[[], Objective],
) -> SliceDirections:
    """The directions ``req`` asks for (``source``: the file its kind reads; ``objective`` for eigen)."""
    ctx = _Context(req, theta, buffers, model, source, objective, [])
    build = {"random": _random, "toward": _toward, "pca": _pca, "eigen": _eigen, "file": _file}
    settings = req.describe()
    out = build[req.kind](ctx, settings)
    out.warnings = ctx.warnings
    if req.orthogonalize and req.kind in ("toward", "file") and len(out.dirs) > 1:
        out.dirs = D.orthogonalize(out.dirs)
    out.facts = _facts(req, theta, out.dirs, settings)
    return out


def _axis_names(req: SliceRequest) -> list[str]:
    """The axis names: alpha and beta for a plane, d1 .. dK for K lines."""
    return ["alpha", "beta"] if req.dims == 2 else [f"d{i + 1}" for i in range(req.needed)]


def _norm_label(req: SliceRequest) -> str:
    names = {"filter": "filter-normalised", "layer": "layer-normalised", "unit": "unit length"}
    return names.get(req.norm, "unnormalised")


def _radius(req: SliceRequest) -> float:
    return 1.0 if req.radius is None else req.radius


def _random(ctx: _Context, settings: DirectionSettings) -> SliceDirections:
    req = ctx.req
    k = req.needed
    dirs = D.random_directions(ctx.theta, k, req.seed, req.norm, req.bias, req.orthogonalize)
    return SliceDirections(
        dirs,
        settings,
        _radius(req),
        labels=[
            f"{n}: random direction {i + 1} ({_norm_label(req)})" for i, n in enumerate(_axis_names(req))
        ],
        short=[f"direction {i + 1}" for i in range(k)],
        what=f"random Gaussian directions, {_norm_label(req)}",
    )


def _toward(ctx: _Context, settings: DirectionSettings) -> SliceDirections:
    req, src = ctx.req, ctx.source
    assert src is not None
    state = {n: t for n, t in src.tensors.items() if n not in ctx.buffers}  # parameters only
    params = _match(ctx, state, src, "checkpoint to slice toward")
    d = D.toward(ctx.theta, params)
    settings.update({"other": {"checkpoint": src.name, "sha256": src.sha256}, "distance": D.length(d)})
    out = SliceDirections(
        [d],
        settings,
        _radius(req),
        labels=[f"alpha: toward {src.name} (1 = that checkpoint)"],
        short=[f"toward {src.name}"],
        what=f"1 = {src.name}",
    )
    if req.dims == 2:
        out.labels.append(f"beta: random direction ({_norm_label(req)})")
        out.dirs.append(D.random_directions(ctx.theta, 1, req.seed, req.norm, req.bias)[0])
    return out


def _match(ctx: _Context, state: Params, src: SliceInput, what: str) -> Params:
    problems = D.mismatches(state, ctx.theta)
    if problems:
        raise LscapeError(
            f"{what} does not match the model: " + " | ".join(problems),
            src.where,
            "use a file made for this architecture",
        )
    return {n: state[n].to(device=t.device, dtype=t.dtype) for n, t in ctx.theta.items()}


def _check_finite(tensors: Params, where: str, what: str, fix: str) -> None:
    """Refuse NaN/inf before a decomposition would fail on them, naming the tensor (and snapshot)."""
    for name, t in tensors.items():
        bad = ~torch.isfinite(t)
        if bool(bad.any()):
            at = (
                f" (snapshot {int(bad.reshape(t.shape[0], -1).any(dim=1).nonzero()[0])})"
                if t.dim() > 1
                else ""
            )
            raise LscapeError(f"{what} holds NaN/inf values in {name}{at}", where, fix)


def _pca(ctx: _Context, settings: DirectionSettings) -> SliceDirections:
    req, src = ctx.req, ctx.source
    assert src is not None
    t_count = _snapshots(ctx, src)
    theta = {n: t.detach().to("cpu", torch.float64) for n, t in ctx.theta.items()}
    snaps = {n: src.tensors[n].to(torch.float64) for n in theta}
    _check_finite(snaps, src.where, "the trajectory", "re-create it, e.g. from a run that did not diverge")
    _check_finite(theta, "the checkpoint", "the centre", "slice a checkpoint with finite parameters")
    res = D.pca_directions(theta, snaps, req.needed)
    _check_last_snapshot(ctx, theta, snaps)
    coords = res["coords"]
    radius = _fit_range(ctx, float(coords.abs().max()))
    ratios = res["explained_variance_ratio"]
    settings.update(
        {
            "trajectory": {"file": src.name, "sha256": src.sha256, "snapshots": t_count},
            "method": "PCA of theta_t - theta (snapshots centred over t, as Li et al. 2018); unit directions",
            "explained_variance_ratio": ratios,
            "singular_values": res["singular_values"],
        }
    )
    trajectory = PcaTrajectory(
        coords=coords,
        epochs=list(src.meta.get("epochs") or range(t_count)),
        steps=src.meta.get("steps"),
        in_span_fraction=res["in_span_fraction"],
        explained=ratios,
    )
    dirs = [
        {n: t.to(device=ctx.theta[n].device, dtype=ctx.theta[n].dtype) for n, t in d.items()}
        for d in res["directions"]
    ]
    return SliceDirections(
        dirs,
        settings,
        radius,
        labels=[
            f"{n}: PC{i + 1} of the trajectory ({100 * r:.1f}% of variance)"
            for i, (n, r) in enumerate(zip(_axis_names(req), ratios, strict=True))
        ],
        short=[f"PC{i + 1} ({100 * r:.1f}% of variance)" for i, r in enumerate(ratios)],
        what=f"principal directions of {src.name}, unit length",
        trajectory=trajectory,
    )


def _snapshots(ctx: _Context, src: SliceInput) -> int:
    """The trajectory's snapshot count, once its tensors match the model and it has enough of them."""
    first = {n: t[0] for n, t in src.tensors.items()}
    _match(ctx, first, src, "trajectory")
    t_count = int(next(iter(src.tensors.values())).shape[0])
    needed = ctx.req.needed
    if t_count < needed + 1:
        raise LscapeError(
            f"{needed} principal directions need at least {needed + 1} snapshots; "
            f"the trajectory has {t_count}",
            src.where,
            "train with a smaller --save-trajectory interval, or slice fewer directions",
        )
    return t_count


def _check_last_snapshot(ctx: _Context, theta: Params, snaps: Params) -> None:
    last = max(float((snaps[n][-1] - theta[n]).abs().max()) for n in theta)
    scale = max(float(theta[n].abs().max()) for n in theta)
    if last > 1e-6 * scale:
        ctx.warnings.append(
            f"the trajectory's last snapshot differs from the checkpoint (max |diff| {last:.3g}); "
            "directions and coordinates are relative to the checkpoint"
        )


def _fit_range(ctx: _Context, reach: float) -> float:
    """Without --range, 1.2 x the trajectory's reach rounded up; a warning where the range cuts it off."""
    radius = _nice(1.2 * reach) if ctx.req.radius is None else ctx.req.radius
    if reach > radius:
        ctx.warnings.append(
            f"the trajectory reaches |coordinate| {reach:.3g}, beyond --range {radius:g}; "
            f"use --range {reach * 1.1:.3g} to see all of it"
        )
    return radius


def _eigen(ctx: _Context, settings: DirectionSettings) -> SliceDirections:
    req = ctx.req
    try:
        obj = ctx.objective()
    except ValueError as exc:
        raise LscapeError(str(exc), "--mode", "use --mode eval for models with BatchNorm or dropout") from exc
    dirs, res = D.eigen_directions(obj, req.needed, req.seed, req.eigen_tol)
    if not res.converged:
        ctx.warnings.append(f"Lanczos did not converge in {res.iterations} steps; residuals {res.residuals}")
    settings.update(
        {
            "eigenvalues": res.eigenvalues,
            "residuals": res.residuals,
            "converged": res.converged,
            "iterations": res.iterations,
            "num_matvecs": res.num_matvecs,
        }
    )
    return SliceDirections(
        dirs,
        settings,
        _radius(req),
        labels=[
            f"{n}: Hessian eigenvector {i + 1} (lambda = {lam:.4g})"
            for i, (n, lam) in enumerate(zip(_axis_names(req), res.eigenvalues, strict=True))
        ],
        short=[f"eigenvector {i + 1} (lambda = {lam:.4g})" for i, lam in enumerate(res.eigenvalues)],
        what="top Hessian eigenvectors, unit length",
        eigenvalues=res.eigenvalues,
    )


def _file(ctx: _Context, settings: DirectionSettings) -> SliceDirections:
    req, src = ctx.req, ctx.source
    assert src is not None
    dirs = src.directions
    if len(dirs) < req.needed:
        raise LscapeError(
            f"direction file holds {len(dirs)} direction(s), this slice needs {req.needed}",
            src.where,
            "slice fewer directions (--dims/--count) or make a file with more",
        )
    for k, d in enumerate(dirs[: req.needed]):
        problems = D.mismatches(d, ctx.theta)
        if problems:
            raise LscapeError(
                f"direction file does not match the model (direction {k}): " + " | ".join(problems),
                src.where,
                "use directions made for this architecture, or drop --directions",
            )
    if src.meta.get("model") != ctx.model:
        ctx.warnings.append(
            f"{src.name} was made for model {src.meta.get('model')}; shapes match, so it is used"
        )
    made = src.meta["directions"]
    settings.update(
        {
            "file": {"path": src.name, "sha256": src.sha256},
            "made_as": made.get("settings", {}),
            "origin": made.get("origin"),
        }
    )
    kind = made.get("kind", "?")
    out = SliceDirections(
        [
            {n: d[n].to(device=t.device, dtype=t.dtype) for n, t in ctx.theta.items()}
            for d in dirs[: req.needed]
        ],
        settings,
        _radius(req),
        labels=[f"{n}: direction {i + 1} of {src.name} ({kind})" for i, n in enumerate(_axis_names(req))],
        short=[f"direction {i + 1}" for i in range(req.needed)],
        what=f"directions from {src.name} ({kind})",
    )
    if kind == "eigen":
        _saved_eigen(out, req, src.name, made.get("settings", {}))
    return out


def _saved_eigen(out: SliceDirections, req: SliceRequest, name: str, made: DirectionSettings) -> None:
    """Labels with the eigenvalues `lscape probe --save-eigenvectors` saved (nothing recomputed)."""
    eig = made.get("eigenvalues") or []
    if len(eig) < req.needed:
        return
    kind = (made.get("curvature") or {}).get("kind", "hessian")
    out.labels = [
        f"{n}: {kind} eigenvector {i + 1} of {name} (lambda = {lam:.4g})"
        for i, (n, lam) in enumerate(zip(_axis_names(req), eig, strict=False))
    ]
    out.short = [f"eigenvector {i + 1} (lambda = {eig[i]:.4g})" for i in range(req.needed)]
    if kind == "hessian":  # v^T H v = lambda (blocks too: v is zero outside): the parabola checks it
        out.eigenvalues = eig[: req.needed]


def _facts(
    req: SliceRequest, theta: Params, dirs: list[Params], settings: DirectionSettings
) -> DirectionFacts:
    facts: DirectionFacts = {
        "kind": settings["kind"],
        "count": len(dirs),
        "digest": D.digest(dirs),
        "lengths": [D.length(d) for d in dirs],
        "theta_norm": D.length(theta),
        "cosines": [
            [i, j, D.cosine(dirs[i], dirs[j])] for i in range(len(dirs)) for j in range(i + 1, len(dirs))
        ],
    }
    if settings["kind"] == "random" and req.norm == "filter":
        dev = [max(D.filter_norm_ratio(d, theta).values(), default=0.0) for d in dirs]
        facts["filter_norm_max_relative_deviation"] = dev
    return facts


def _nice(x: float) -> float:
    """The smallest of 1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8 (times a power of ten) at or above ``x``."""
    scale = 10.0 ** math.floor(math.log10(x)) if x > 0 else 1.0
    return next(m * scale for m in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10) if m * scale >= x * (1 - 1e-12))
