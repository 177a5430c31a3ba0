"""`slice`'s library call: directions, then the grid (resumable, split over ranks), then derived numbers.

:func:`run_slice` builds the directions (:mod:`lscape_cli.core.landscape.slice_directions`), hands them to the
:class:`SliceStore` (which saves them), evaluates the grid points this rank owns while the store keeps a
partial grid after every block (``--resume`` reuses one when everything that fixes the values matches),
gathers the points on every rank, and on rank 0 derives the record's ``results``
(:mod:`lscape_cli.core.landscape.slice_results`). It never opens a file: the store is storage's
(:class:`lscape_cli.storage.slices.SliceFiles`).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypedDict, cast

import torch
from torch import nn

from lscape_cli.core.landscape.slice_directions import SliceDirections, SliceInput, build_directions
from lscape_cli.core.landscape.slice_request import SliceRequest
from lscape_cli.core.landscape.slice_results import SliceCentre, SliceResult, SpeedInputs, build_results
from lscape_cli.core.landscape.slices import Grid, GridDescription, run_grid
from lscape_cli.core.landscape.surface import EngineStats, Subspace, SurfaceEvaluator, chunk_size
from lscape_cli.core.objective import evaluate, num_units
from lscape_cli.core.params import Params
from lscape_cli.core.progress import ProgressFn
from lscape_cli.core.samples import span
from lscape_cli.errors import LscapeError


@dataclass(frozen=True)
class SliceData:
    """The model at the centre and the split the slice is evaluated on."""

    module: nn.Module
    x: torch.Tensor  # (N, ...) inputs of the split
    y: torch.Tensor  # (N,) labels
    loss: str
    split: str
    mode: str
    dtype: torch.dtype
    max_batch: int
    model: dict[str, object]  # the model description (registry name + config)
    checkpoint_sha256: str  # identity of the centre, part of the resume key
    checkpoint_metric: float | None = None  # the checkpoint's own ``<split>_loss``, if recorded

    @property
    def num_samples(self) -> int:
        """Samples in the split."""
        return int(self.y.shape[0])


class Group(Protocol):
    """The place of this process in a ``torchrun`` job (:class:`lscape_cli.distributed.Group`)."""

    @property
    def rank(self) -> int: ...  # noqa: D102

    @property
    def world_size(self) -> int: ...  # noqa: D102

    @property
    def is_main(self) -> bool: ...  # noqa: D102

    @property
    def active(self) -> bool: ...  # noqa: D102

    def bounds(self, n: int) -> tuple[int, int]: ...  # noqa: D102

    def shard(self, n: int) -> Any: ...  # noqa: D102

    def gather(self, obj: object) -> list[object]: ...  # noqa: D102


class ResumeKey(TypedDict):
    """Everything that fixes a slice grid's values: a partial grid is reused only when it matches."""

    checkpoint_sha256: str
    directions_digest: str
    grid: GridDescription
    coefficients: list[float]
    split: str
    mode: str
    loss: str
    dtype: str
    max_batch: int
    num_samples: int


class SliceStore(Protocol):
    """Where a slice keeps its directions and its partial grid while it runs."""

    @property
    def where(self) -> str:
        """The outputs' common stem, for errors."""

    def save_directions(self, directions: SliceDirections, digest: str) -> None:
        """Save the directions (rank 0 only)."""

    def resume(self, key: ResumeKey, requested: bool, is_main: bool) -> list[tuple[Any, Any, Any]]:
        """``(loss, accuracy, done)`` of every matching partial grid (``requested``), else remove them."""

    def save_partial(self, loss: Any, acc: Any, done: Any, key: ResumeKey, rank: int, world: int) -> None:
        """Keep the grid computed so far."""


def run_slice(
    data: SliceData,
    req: SliceRequest,
    source: SliceInput | None,
    store: SliceStore,
    group: Group,
    on_step: ProgressFn | None = None,
) -> SliceResult:
    """The slice ``req`` asks for through ``data.module``'s parameters (see the module docstring)."""
    from lscape_cli.core.landscape import directions as D

    theta = {n: p.detach() for n, p in data.module.named_parameters()}
    buffers = {n: b.detach() for n, b in data.module.named_buffers()}
    t = time.perf_counter()
    dirs = build_directions(req, theta, buffers, data.model, source, lambda: _objective(data, group))
    timing = {"directions": time.perf_counter() - t}
    digest = D.digest(dirs.dirs)
    grid = Grid(req.dims, dirs.radius, req.steps, req.count)
    if group.is_main:
        store.save_directions(dirs, digest)
    t = time.perf_counter()
    reference = _reference(data)
    key = _resume_key(data, grid, digest)
    loss, acc, done = _state(grid, store.resume(key, req.resume, group.is_main))
    resumed = _agree(group, int(done.sum()), store)
    engine: EngineStats = {}
    t_grid = time.perf_counter()
    evaluators = _Evaluators(data, req, theta, buffers, dirs.dirs, engine)

    def save(state: Block) -> None:
        store.save_partial(*state, key, group.rank, group.world_size)

    computed = _compute(evaluators, grid, req.steps, (loss, acc, done), save, group, on_step)
    compute_s = time.perf_counter() - t_grid
    _gather(group, loss, acc, computed)
    timing["grid"] = time.perf_counter() - t
    result = SliceResult(
        req, grid, dirs, digest, None, None, {}, math.nan, resumed, group.world_size, group.is_main
    )
    result.warnings = list(dirs.warnings)
    result.timing = timing
    if not group.is_main:
        return result
    t = time.perf_counter()
    result.loss, result.accuracy = loss.reshape(grid.shape), acc.reshape(grid.shape)
    centre = _centre(data, theta, buffers, dirs.dirs[: 2 if req.dims == 2 else 1], reference)
    result.centre_loss = centre["loss"]
    speed: SpeedInputs = {
        "evaluated": grid.num_points - resumed,
        "compute_s": compute_s,
        "forward_s": reference[2],
        "engine": engine,
    }
    result.results = build_results(result, centre, speed)
    timing["derive"] = time.perf_counter() - t
    return result


def _objective(data: SliceData, group: Group) -> Any:
    """The HVP objective over this rank's share of the split (for ``--eigen``)."""
    from lscape_cli.core.linalg.hvp import Objective

    n = data.num_samples
    start, stop = group.bounds(n)
    return Objective.from_module(
        data.module,
        span(data.x, start, stop),
        data.y[start:stop],
        data.loss,
        data.max_batch,
        shard=group.shard(num_units(data.y, data.loss)),  # the mean's denominator: all ranks' units
    )


def _resume_key(data: SliceData, grid: Grid, digest: str) -> ResumeKey:
    """Everything that fixes the grid's values; a partial file is reused only if it matches."""
    return {
        "checkpoint_sha256": data.checkpoint_sha256,
        "directions_digest": digest,
        "grid": grid.describe(),
        "coefficients": grid.alphas,
        "split": data.split,
        "mode": data.mode,
        "loss": data.loss,
        "dtype": str(data.dtype).replace("torch.", ""),
        "max_batch": data.max_batch,
        "num_samples": data.num_samples,
    }


Block = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _state(grid: Grid, partials: list[tuple[Any, Any, Any]]) -> Block:
    """Loss, accuracy (NaN where not done) and the done mask, from the partial grids reused."""
    p = grid.num_points
    loss = torch.full((p,), float("nan"), dtype=torch.float64)
    acc = torch.full((p,), float("nan"), dtype=torch.float64)
    done = torch.zeros(p, dtype=torch.bool)
    for pl, pa, pd in partials:
        got = pd.bool()
        loss[got], acc[got] = pl[got], pa[got]
        done |= got
    return loss, acc, done


def _agree(group: Group, count: int, store: SliceStore) -> int:
    """Every rank read the same partial grids (also a barrier: nobody writes before all have read)."""
    counts = group.gather(count)
    if len(set(counts)) != 1:
        raise LscapeError("ranks read different partial grids", store.where, "re-run without --resume")
    return count


def _compute(
    evaluators: _Evaluators,
    grid: Grid,
    block: int,
    state: Block,
    save: Callable[[Block], None],
    group: Group,
    on_step: ProgressFn | None,
) -> tuple[list[int], list[float], list[float]]:
    """Evaluate this rank's share of the points not done, in blocks, ``save``-ing the grid after each."""
    loss, acc, done = state
    todo = [i for i in range(grid.num_points) if not bool(done[i])]
    start, stop = group.bounds(len(todo))
    mine = todo[start:stop]
    progress = _Progress(grid.num_points, on_step)
    progress.advance(int(done.sum()) + (len(todo) - len(mine)), 0)
    computed: tuple[list[int], list[float], list[float]] = ([], [], [])

    def on_block(idx: list[int], bl: torch.Tensor, ba: torch.Tensor) -> None:
        for j, p in enumerate(idx):
            loss[p], acc[p], done[p] = bl[j], ba[j], True
        computed[0].extend(idx)
        computed[1].extend(bl.tolist())
        computed[2].extend(ba.tolist())
        save(state)
        progress.advance(len(idx), len(idx))

    run_grid(evaluators, grid, mine, block, on_block)  # type: ignore[arg-type]
    return computed


def _gather(group: Group, loss: Any, acc: Any, computed: tuple[list[int], list[float], list[float]]) -> None:
    """One collective at the end: every rank's points to every rank (rank 0 writes them)."""
    if not group.active:
        return
    gathered = cast(list[tuple[list[int], list[float], list[float]]], group.gather(computed))
    for idx, ls, ac in gathered:
        for p, lv, av in zip(idx, ls, ac, strict=True):
            loss[p], acc[p] = lv, av


class _Progress:
    """Points done and time per point, reported through ``on_step``."""

    def __init__(self, total: int, on_step: ProgressFn | None) -> None:
        self.total, self.done, self.computed, self.on_step = total, 0, 0, on_step
        self.t0 = time.perf_counter()

    def advance(self, done: int, computed: int) -> None:
        self.done += done
        self.computed += computed
        if self.on_step is not None and self.computed:
            per = (time.perf_counter() - self.t0) / self.computed
            self.on_step({"points": f"{self.done}/{self.total}", "ms_per_point": per * 1e3})


class _Evaluators:
    """One :class:`SurfaceEvaluator` per subspace, made when first needed.

    Only the latest is kept (its cached first-layer products can be large); blocks arrive subspace by
    subspace.
    """

    def __init__(
        self,
        data: SliceData,
        req: SliceRequest,
        theta: Params,
        buffers: Params,
        dirs: list[Params],
        stats: EngineStats,
    ) -> None:
        self.data, self.req, self.theta, self.buffers, self.dirs = data, req, theta, buffers, dirs
        self.current: tuple[int, SurfaceEvaluator] | None = None
        self.stats = stats

    def __getitem__(self, k: int) -> SurfaceEvaluator:
        if self.current is None or self.current[0] != k:
            d = self.data
            space = Subspace(
                d.module, self.theta, self.buffers, self.dirs[:2] if self.req.dims == 2 else [self.dirs[k]]
            )
            ev = SurfaceEvaluator(
                space,
                d.x,
                d.y,
                d.loss,
                d.max_batch,
                memory_budget=self.req.memory_budget_mib << 20,
                strategy=self.req.strategy,
                stats=self.stats,
            )
            self.current = (k, ev)
        return self.current[1]


def _centre(
    data: SliceData, theta: Params, buffers: Params, dirs: list[Params], reference: tuple[float, float, float]
) -> SliceCentre:
    """L(theta) from the grid engine (coefficients 0) next to the model's own forward pass."""
    sub = Subspace(data.module, theta, buffers, dirs)
    ev = SurfaceEvaluator(sub, data.x, data.y, data.loss, data.max_batch, strategy="loop")
    loss, acc = ev.evaluate(torch.zeros(1, len(sub.directions), dtype=torch.float64))
    ref_loss, ref_acc, _ = reference
    return {
        "loss": float(loss[0]),
        "accuracy": float(acc[0]),
        "reference_loss": ref_loss,
        "reference_accuracy": ref_acc,
        "abs_difference": abs(float(loss[0]) - ref_loss),
        "checkpoint_metric": data.checkpoint_metric,
        "method": "grid engine at coefficients 0 vs the model's own forward over the split",
    }


def _reference(data: SliceData) -> tuple[float, float, float]:
    """The model's own loss/accuracy at the checkpoint and the median time of one forward over the split."""
    times, result = [], (0.0, 0.0)
    model = data.module
    max_batch = chunk_size(model, data.x, data.max_batch)  # the grid engine's chunks: same sums at the centre
    for _ in range(3):
        buffers = {k: b.clone() for k, b in model.named_buffers()}  # train mode: BatchNorm writes them
        t = time.perf_counter()
        result = evaluate(model, data.x, data.y, data.loss, max_batch, buffers=buffers)
        times.append(time.perf_counter() - t)
    return result[0], result[1], statistics.median(times)
