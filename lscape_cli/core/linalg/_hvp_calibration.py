"""Choosing an HVP strategy by measurement (``--hvp measure``, and ``auto`` off the CPU).

See :mod:`lscape_cli.core.linalg.hvp` for the policy; this module times the strategies on an objective and
applies it.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from lscape_cli.core.linalg._hvp_strategies import _DoubleBackward, _FwdRev, _VMap
from lscape_cli.core.params import _dtype, gaussian

if TYPE_CHECKING:
    from lscape_cli.core.objective import Objective

CALIBRATION_SAMPLES = 128  # CPU: samples ``measure`` times the strategies on
AMORTISED_PRODUCTS = 20  # ``measure`` charges double_backward's graph build as spread over this many products


@dataclass(frozen=True)
class Timings:
    """Seconds measured on one calibration chunk (``None``: the strategy failed there or was wrong).

    A strategy fails where it runs out of memory; it is wrong where its product disagrees with
    ``double_backward``'s (see :func:`_wrong`).

    Attributes:
        product: per product: ``double_backward`` through a kept graph, ``fwd_rev``, and ``vmap`` on
            batches of ``batch_size`` vectors (a batch's time over its size).
        build: ``double_backward``'s gradient graph of the chunk (also the extra cost of a chunk whose
            graph is rebuilt for every product).
    """

    product: dict[str, float | None]
    build: float


@dataclass(frozen=True)
class Calibration:
    """What ``auto`` measured and chose.

    Attributes:
        single: strategy for one vector at a time (Lanczos, SLQ).
        batched: strategy for batches of vectors (Hutchinson, Hutch++).
        seconds_per_product: per strategy on the calibration chunk, ``double_backward`` including the
            rebuilt chunks' share (see :func:`choose`).
        build_seconds: ``double_backward``'s graph build on the calibration chunk.
        samples: calibration chunk size; seconds: wall time spent calibrating (0 when cached).
    """

    single: str
    batched: str
    seconds_per_product: dict[str, float | None]
    build_seconds: float
    samples: int
    seconds: float
    cached: bool


_MEASURED: dict[tuple[Any, ...], Timings] = {}  # this process's calibrations (see calibrate)


def choose(timings: Timings, rebuilt_fraction: float = 0.0) -> tuple[str, str, dict[str, float | None]]:
    """The fastest strategy per product for single vectors and for batches, from measured timings.

    ``double_backward`` costs ``product + rebuilt_fraction * build`` per product (chunks whose graph is
    not kept are rebuilt each time) plus, for the decision only, the kept chunks' one-off build spread
    over :data:`AMORTISED_PRODUCTS` products. ``vmap`` only competes for batches.

    Returns:
        ``(single, batched, seconds_per_product)``.
    """
    per = dict(timings.product)
    if per.get("double_backward") is not None:
        per["double_backward"] = per["double_backward"] + rebuilt_fraction * timings.build  # type: ignore[operator]
    cost = {k: v for k, v in per.items() if v is not None}
    if "double_backward" in cost:
        cost["double_backward"] += (1.0 - rebuilt_fraction) * timings.build / AMORTISED_PRODUCTS
    if not cost:
        raise RuntimeError("no HVP strategy ran on this objective")
    singles = {k: v for k, v in cost.items() if k != "vmap"} or cost
    return min(singles, key=lambda k: singles[k]), min(cost, key=lambda k: cost[k]), per


def calibrate(obj: Objective, retain_chunks: int | None = None, batch_size: int = 8) -> Calibration:
    """Time every strategy on ``obj``'s first chunk (at most :data:`CALIBRATION_SAMPLES` on CPU).

    Each candidate runs a warm-up and then a few products (the best time counts: a shared machine only
    ever adds time). Timings are cached per process; in a data-parallel objective every rank measures
    and the timings averaged over ranks decide, so all ranks choose alike.
    """
    n = int(obj.y.shape[0])
    samples = min(n, obj.max_batch, CALIBRATION_SAMPLES if obj.x.device.type == "cpu" else n)
    key = (
        obj.x.device.type,
        _device_name(obj.x.device),
        _dtype(obj.params),
        type(obj.model).__qualname__,
        tuple((k, tuple(t.shape)) for k, t in obj.params.items()),
        tuple(obj.x.shape[1:]),
        obj.loss,
        samples,
        batch_size,
    )
    t0 = time.perf_counter()
    timings = _MEASURED.get(key)
    cached = timings is not None
    if obj.shard is not None:  # all ranks measure when any must, so the collectives below match
        cached = float(obj.reduce(torch.tensor([0.0 if cached else 1.0], device=obj.x.device))) == 0
    if timings is None or not cached:
        sub = dataclasses.replace(obj, x=obj.x[:samples], y=obj.y[:samples], max_batch=samples, shard=None)
        with warnings.catch_warnings():  # torch.func's first use imports torch._dynamo, which warns
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.")
            timings = _agree(obj, _measure(sub, batch_size))
        _MEASURED[key] = timings
    chunks = math.ceil(n / obj.max_batch)
    kept = chunks if retain_chunks is None else min(retain_chunks, chunks)
    single, batched, per = choose(timings, (chunks - kept) / chunks)
    spent = 0.0 if cached else time.perf_counter() - t0
    return Calibration(single, batched, per, timings.build, samples, spent, cached)


def _measure(obj: Objective, batch_size: int) -> Timings:
    """One calibration: warm-up, then the best of a few timed runs per strategy."""
    generator = torch.Generator().manual_seed(0)
    vs = [gaussian(obj.params, generator) for _ in range(batch_size)]
    db = _DoubleBackward(obj, None)

    def rebuild() -> None:
        db.release()
        db._build()

    build = _best(obj, rebuild, 1)
    product: dict[str, float | None] = {"double_backward": _best(obj, lambda: db.apply(vs[:1]), 2)}
    ref = db.apply(vs[:1])[0]
    db.release()
    fwd_rev = _FwdRev(obj)
    product["fwd_rev"] = _guarded(obj, lambda: _best(obj, lambda: fwd_rev.apply(vs[:1]), 2))
    if product["fwd_rev"] is not None and _wrong(ref, fwd_rev.apply(vs[:1])[0]):
        product["fwd_rev"] = None
    batched = _VMap(obj, batch_size)
    product["vmap"] = _guarded(obj, lambda: _best(obj, lambda: batched.apply(vs), 1) / len(vs))
    if product["vmap"] is not None and _wrong(ref, batched.apply(vs)[0]):
        product["vmap"] = None
    return Timings(product, build)


def _wrong(ref: dict[str, torch.Tensor], got: dict[str, torch.Tensor]) -> bool:
    """A torch.func product that disagrees with autograd's double backward beyond rounding.

    torch 2.14's torch.func gets the mixed second derivative of an affine ``layer_norm`` (its weight
    against the layer before it) wrong, so ``fwd_rev`` and ``vmap`` are only trusted where they agree.
    """
    diff = math.sqrt(sum(float((ref[n] - got[n]).double().pow(2).sum()) for n in ref))
    scale = math.sqrt(sum(float(ref[n].double().pow(2).sum()) for n in ref))
    tol = 1e-3 if _dtype(ref) != torch.float64 else 1e-8
    return diff > tol * max(scale, 1e-30)


def _best(obj: Objective, fn: Callable[[], object], repeats: int) -> float:
    """Least wall time of ``repeats`` calls after one warm-up call (device work included)."""
    fn()
    best = math.inf
    for _ in range(repeats):
        _synchronize(obj.x.device)
        start = time.perf_counter()
        fn()
        _synchronize(obj.x.device)
        best = min(best, time.perf_counter() - start)
    return best


def _guarded(obj: Objective, fn: Callable[[], float]) -> float | None:
    """``fn()``, or ``None`` when the strategy cannot run here (out of memory, unsupported op)."""
    try:
        return fn()
    except (RuntimeError, NotImplementedError):
        if obj.x.device.type == "cuda":
            torch.cuda.empty_cache()
        return None


def _agree(obj: Objective, timings: Timings) -> Timings:
    """Average the timings over ranks (identity in one process): every rank then makes the same choice."""
    if obj.shard is None:
        return timings
    names = list(timings.product)
    values = [math.nan if timings.product[k] is None else timings.product[k] for k in names]
    local = torch.tensor([*values, timings.build, 1.0], dtype=torch.float64, device=obj.x.device)
    summed = obj.reduce(local)
    *means, build = (summed / summed[-1]).tolist()[:-1]  # means over ranks
    return Timings({k: None if math.isnan(v) else v for k, v in zip(names, means, strict=True)}, build)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
