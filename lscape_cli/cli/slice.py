"""`lscape slice`: loss and accuracy on a line or plane through a checkpoint -> CKPT.slice.json (+ grid, plots).

Outputs (STEM = the ``--out`` path without ``.json``, by default ``CKPT.slice``):

- ``STEM.json``: the ``lscape.slice/1`` record (keys documented in docs/formats.md and :func:`_results`).
- ``STEM.safetensors``: the grid (``lscape.slice-grid/1``, :mod:`lscape_cli.storage.slices`).
- ``STEM.directions.safetensors``: the directions (``lscape.directions/1``), reusable with ``--directions``.
- ``STEM.lines.{png,pdf}`` (1-D) or ``STEM.{contour,surface,heatmap}.{png,pdf}`` (2-D).
- ``STEM.partial*.safetensors`` while the grid is being computed (``--resume`` continues from them).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

from lscape_cli.cli.common import default_output, load_for_eval
from lscape_cli.cli.console import emit_json, err
from lscape_cli.cli.options import (
    DataRootOpt,
    DatasetOverrideOpt,
    DeviceOpt,
    DtypeOpt,
    JsonOpt,
    LossOverrideOpt,
    MaxBatchOpt,
    ModelConfigOpt,
    ModeOpt,
    QuietOpt,
    SeedOpt,
    SplitOpt,
    data_root,
)
from lscape_cli.errors import LscapeError

SLICE_SCHEMA = "lscape.slice/1"
AXES = "Directions"
GRID = "Grid"
DATA = "Data and speed"
OUT = "Output"


def slice_(
    checkpoint: Annotated[Path, typer.Argument(help="A .safetensors checkpoint (the centre of the slice).")],
    dims: Annotated[int, typer.Option(help="1 (lines) or 2 (a plane).", rich_help_panel=GRID)] = 2,
    range_: Annotated[
        float | None,
        typer.Option(
            "--range",
            help="Coefficients run over [-RANGE, RANGE] (seed 001: 1.5) [1; with --pca: 1.2 x the trajectory's reach].",
            rich_help_panel=GRID,
        ),
    ] = None,
    steps: Annotated[
        int, typer.Option(help="Grid points per axis (odd: the centre is on the grid).", rich_help_panel=GRID)
    ] = 51,
    count: Annotated[
        int,
        typer.Option(help="With --dims 1: N independent directions (seed 001: 10).", rich_help_panel=GRID),
    ] = 1,
    toward: Annotated[
        Path | None,
        typer.Option(
            help="First direction = OTHER.safetensors - CKPT (coefficient 1 reaches OTHER).",
            rich_help_panel=AXES,
        ),
    ] = None,
    pca: Annotated[
        Path | None,
        typer.Option(
            help="Principal directions of a TRAJECTORY.safetensors (with the trajectory overlaid).",
            rich_help_panel=AXES,
        ),
    ] = None,
    eigen: Annotated[
        bool,
        typer.Option(
            "--eigen", help="Top Hessian eigenvectors (Lanczos, as in probe).", rich_help_panel=AXES
        ),
    ] = False,
    directions: Annotated[
        Path | None,
        typer.Option(
            help="Reuse the directions of a *.slice.directions.safetensors file.", rich_help_panel=AXES
        ),
    ] = None,
    norm: Annotated[
        str,
        typer.Option(
            help="Random directions: filter (Li et al. 2018), layer, unit (length 1; seed 003) or none.",
            rich_help_panel=AXES,
        ),
    ] = "filter",
    bias: Annotated[
        str,
        typer.Option(
            help="Random directions on biases/BatchNorm: zero, filter or keep.", rich_help_panel=AXES
        ),
    ] = "zero",
    orthogonalize: Annotated[
        bool, typer.Option(help="Gram-Schmidt the directions after normalising them.", rich_help_panel=AXES)
    ] = False,
    eigen_tol: Annotated[
        float, typer.Option(help="--eigen: relative Ritz-residual tolerance.", rich_help_panel=AXES)
    ] = 1e-6,
    split: SplitOpt = "train",
    mode: ModeOpt = "eval",
    loss: LossOverrideOpt = None,
    dataset: DatasetOverrideOpt = None,
    data_root_: DataRootOpt = None,
    model_config: ModelConfigOpt = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "float32",
    max_batch: MaxBatchOpt = 4096,
    memory_budget: Annotated[
        int,
        typer.Option(
            min=1, help="MiB for cached first-layer outputs and batched points.", rich_help_panel=DATA
        ),
    ] = 1024,
    strategy: Annotated[
        str,
        typer.Option(
            help="Points one by one (loop), vmapped (vmap) or auto (loop on CPU, timed elsewhere).",
            rich_help_panel=DATA,
        ),
    ] = "auto",
    basin_threshold: Annotated[
        float, typer.Option(help="Basin width/area: where L - L(centre) <= this.", rich_help_panel=OUT)
    ] = 0.1,
    fit_radius: Annotated[
        float | None,
        typer.Option(
            help="Parabola fit within this distance of the centre [0.1 * range].", rich_help_panel=OUT
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume", help="Continue the partial grid left by an interrupted run.", rich_help_panel=OUT
        ),
    ] = False,
    plot: Annotated[bool, typer.Option(help="Write PNG and PDF plots.", rich_help_panel=OUT)] = True,
    zscale: Annotated[
        str, typer.Option(help="Loss axis of 2-D plots: auto, linear or log.", rich_help_panel=OUT)
    ] = "auto",
    out: Annotated[
        Path | None,
        typer.Option(
            help="Output JSON [CKPT.slice.json]; the other files sit beside it.", rich_help_panel=OUT
        ),
    ] = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Evaluate loss and accuracy on a line or plane through a checkpoint (random, toward, pca, eigen).

    Writes CKPT.slice.json (grid, 1D sharpness, basin width, curvature), CKPT.slice.safetensors (the grid),
    CKPT.slice.directions.safetensors (reusable with --directions) and PNG/PDF plots. Points are placed
    absolutely (theta + a d1 + b d2); the first layer is factored out of the grid.

    Example:
        lscape slice sample_checkpoints/mlp-d4-r000.safetensors --dims 2 --range 1.5 --steps 51
    """
    t0 = time.perf_counter()
    opts = _Options(
        dims=dims,
        radius=range_,
        steps=steps,
        count=count,
        toward=toward,
        pca=pca,
        eigen=eigen,
        directions=directions,
        norm=norm,
        bias=bias,
        orthogonalize=orthogonalize,
        eigen_tol=eigen_tol,
        seed=seed,
        memory_budget_mib=memory_budget,
        strategy=strategy,
        basin_threshold=basin_threshold,
        fit_radius=fit_radius,
        zscale=zscale,
        resume=resume,
        plot=plot,
    )
    opts.validate()
    paths = _Paths.of(out or default_output(checkpoint, "slice.json"))
    setup = load_for_eval(
        checkpoint,
        model_config=model_config,
        split=split,
        device_name=device,
        dtype_name=dtype,
        root=data_root(data_root_),
        dataset=dataset,
        loss=loss,
        mode=mode,
        max_batch=max_batch,
    )
    from lscape_cli.distributed import group_from_env

    run = _Run(checkpoint, setup, opts, paths, max_batch, t0, model_config)
    with group_from_env(setup.device) as group:
        run.group = group
        quiet = quiet or json_out or not group.is_main
        try:
            run.execute(quiet)
        except KeyboardInterrupt:
            from lscape_cli.cli import EXIT_INTERRUPTED, fail

            saved = [str(p) for p in _partials(paths)]
            where = f"partial grid in {saved[0]}" if saved else "no point had finished"
            raise fail(f"interrupted: {where} (re-run with --resume to continue)", EXIT_INTERRUPTED) from None
    if not group.is_main:
        return
    from lscape_cli.storage.records import to_json

    if json_out:
        emit_json(to_json(run.record))
    elif not quiet:
        _summary(run.record, paths)


# ------------------------------------------------------------------------------------------------------
# Options and paths.


@dataclass
class _Options:
    dims: int
    radius: float | None  # None: 1, or the trajectory's reach with --pca (resolved by _Directions)
    steps: int
    count: int
    toward: Path | None
    pca: Path | None
    eigen: bool
    directions: Path | None
    norm: str
    bias: str
    orthogonalize: bool
    eigen_tol: float
    seed: int
    memory_budget_mib: int
    strategy: str
    basin_threshold: float
    fit_radius: float | None
    zscale: str
    resume: bool
    plot: bool

    @property
    def kind(self) -> str:
        if self.directions is not None:
            return "file"
        return "toward" if self.toward else "pca" if self.pca else "eigen" if self.eigen else "random"

    @property
    def needed(self) -> int:
        """Directions the grid needs: 2 for a plane, ``count`` for lines."""
        return 2 if self.dims == 2 else self.count

    def validate(self) -> None:
        import math

        choices = {
            "--norm": (self.norm, ("filter", "layer", "none", "unit")),
            "--bias": (self.bias, ("zero", "filter", "keep")),
            "--strategy": (self.strategy, ("auto", "loop", "vmap")),
            "--zscale": (self.zscale, ("auto", "linear", "log")),
        }
        for option, (value, allowed) in choices.items():
            if value not in allowed:
                raise LscapeError(f"unknown value {value!r}", option, f"choose one of: {', '.join(allowed)}")
        if self.dims not in (1, 2):
            raise LscapeError(
                f"--dims must be 1 or 2, got {self.dims}",
                "--dims",
                "use --dims 1 (lines) or --dims 2 (a plane)",
            )
        if self.radius is not None and not (math.isfinite(self.radius) and self.radius > 0):
            raise LscapeError(
                f"range must be positive, got {self.radius}",
                "--range",
                "give a positive radius, e.g. --range 1.5",
            )
        if self.steps < 2:
            raise LscapeError(
                f"steps must be at least 2, got {self.steps}",
                "--steps",
                "give 2 or more points per axis, e.g. --steps 51",
            )
        if self.count < 1:
            raise LscapeError(
                f"count must be at least 1, got {self.count}",
                "--count",
                "give a positive number of directions",
            )
        if self.count > 1 and self.dims != 1:
            raise LscapeError(
                "--count needs --dims 1", "--count", "add --dims 1 for N independent 1-D directions"
            )
        given = [
            o
            for o, v in (
                ("--toward", self.toward),
                ("--pca", self.pca),
                ("--eigen", self.eigen),
                ("--directions", self.directions),
            )
            if v
        ]
        if len(given) > 1:
            raise LscapeError(
                f"choose one kind of direction, got {' and '.join(given)}", given[1], "pass only one of them"
            )
        if self.toward is not None and self.count > 1:
            raise LscapeError("--toward gives a single direction", "--count", "use --count 1 with --toward")
        for option, value in (
            ("--basin-threshold", self.basin_threshold),
            ("--fit-radius", self.fit_radius),
            ("--eigen-tol", self.eigen_tol),
        ):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise LscapeError(f"{option} must be positive, got {value}", option, "give a positive number")

    def describe(self) -> dict[str, Any]:
        """The direction settings for the record."""
        out: dict[str, Any] = {"kind": self.kind, "count": self.needed}
        if self.kind in ("random", "toward"):
            out.update(norm=self.norm, bias=self.bias, seed=self.seed, distribution="gaussian N(0, I)")
        if self.kind in ("random", "toward", "file"):
            out["orthogonalize"] = self.orthogonalize
        if self.kind == "eigen":
            out.update(tol=self.eigen_tol, seed=self.seed, method="lanczos", which="largest")
        return out


@dataclass(frozen=True)
class _Paths:
    record: Path
    stem: Path  # record path without .json

    @classmethod
    def of(cls, record: Path) -> _Paths:
        if not record.parent.is_dir():
            raise LscapeError(
                "output directory does not exist", str(record.parent), "create it or choose another --out"
            )
        name = record.name[: -len(".json")] if record.name.endswith(".json") else record.name
        return cls(record, record.with_name(name))

    def sibling(self, suffix: str) -> Path:
        return self.stem.with_name(f"{self.stem.name}.{suffix}")

    @property
    def grid(self) -> Path:
        return self.sibling("safetensors")

    @property
    def directions(self) -> Path:
        return self.sibling("directions.safetensors")


def _partials(paths: _Paths) -> list[Path]:
    from lscape_cli.storage.slices import partial_files

    return partial_files(paths.stem)


# ------------------------------------------------------------------------------------------------------
# The run.


@dataclass
class _Run:
    checkpoint: Path
    setup: Any
    opts: _Options
    paths: _Paths
    max_batch: int
    t0: float
    model_config: Path | None = None
    group: Any = None
    warnings: list[str] = field(default_factory=list)
    timing: dict[str, float] = field(default_factory=dict)
    record: dict[str, Any] = field(default_factory=dict)

    def execute(self, quiet: bool) -> None:
        from lscape_cli.core.slices import Grid
        from lscape_cli.storage.files import sha256_file

        self.timing["load"] = time.perf_counter() - self.t0
        module = self.setup.loaded.module
        self.theta = {n: p.detach() for n, p in module.named_parameters()}
        self.buffers = {n: b.detach() for n, b in module.named_buffers()}
        self.ckpt_sha = sha256_file(self.checkpoint)
        t = time.perf_counter()
        self.dirs, self.dir_info, self.extra = _Directions(self).build()
        self.timing["directions"] = time.perf_counter() - t
        self.grid = Grid(self.opts.dims, self.opts.radius, self.opts.steps, self.opts.count)
        if self.group.is_main:
            self._save_directions()
        t = time.perf_counter()
        self.reference = _reference(self.setup, self.max_batch)
        loss, acc, done, resumed = self._state()
        self.resumed = resumed
        with _Progress(quiet, self.grid.num_points) as progress:
            computed = self._compute(loss, acc, done, progress)
        self._gather(loss, acc, computed)
        self.evaluated = self.grid.num_points - resumed
        self.timing["grid"] = time.perf_counter() - t
        if not self.group.is_main:
            return
        self.loss, self.acc = loss.reshape(self.grid.shape), acc.reshape(self.grid.shape)
        self.record = self._finish()

    # -- directions file ------------------------------------------------------------------------------

    def _save_directions(self) -> None:
        from lscape_cli.storage.directions import save_directions

        info = {
            "kind": self.dir_info["kind"],
            "settings": self.dir_info,
            "digest": self.digest,
            "origin": {"checkpoint": self.checkpoint.name, "sha256": self.ckpt_sha},
        }
        save_directions(self.paths.directions, self.dirs, self.setup.loaded.spec.to_dict(), info)

    @functools.cached_property
    def digest(self) -> str:
        """sha256 of the directions (computed once)."""
        from lscape_cli.core.directions import digest

        return digest(self.dirs)

    # -- resumable state ------------------------------------------------------------------------------

    def resume_key(self) -> dict[str, Any]:
        """Everything that fixes the grid's values; a partial file is reused only if it matches."""
        s = self.setup
        return {
            "checkpoint_sha256": self.ckpt_sha,
            "directions_digest": self.digest,
            "grid": self.grid.describe(),
            "coefficients": self.grid.alphas,
            "split": s.split,
            "mode": s.protocol["mode"],
            "loss": s.loss,
            "dtype": str(s.dtype).replace("torch.", ""),
            "max_batch": self.max_batch,
            "num_samples": s.protocol["num_samples"],
        }

    def _state(self) -> tuple[Any, Any, Any, int]:
        import torch

        from lscape_cli.storage.slices import load_partial

        p = self.grid.num_points
        loss = torch.full((p,), float("nan"), dtype=torch.float64)
        acc = torch.full((p,), float("nan"), dtype=torch.float64)
        done = torch.zeros(p, dtype=torch.bool)
        key = self.resume_key()
        files = _partials(self.paths)
        if self.opts.resume and files:
            for f in files:
                tensors, meta = load_partial(f)
                diff = sorted(k for k in key if meta["config"].get(k) != key[k])
                if diff:
                    raise LscapeError(
                        f"partial grid was made with other settings ({', '.join(diff)} differ)",
                        str(f),
                        "re-run with the original options, or without --resume to start over",
                    )
                got = tensors["done"].bool()
                loss[got], acc[got] = tensors["loss"][got], tensors["accuracy"][got]
                done |= got
        elif files and self.group.is_main:
            for f in files:
                f.unlink(missing_ok=True)
        counts = self.group.gather(int(done.sum()))  # also a barrier: nobody writes before all have read
        if len(set(counts)) != 1:
            raise LscapeError(
                "ranks read different partial grids", str(self.paths.stem), "re-run without --resume"
            )
        return loss, acc, done, int(done.sum())

    def _compute(
        self, loss: Any, acc: Any, done: Any, progress: Any
    ) -> tuple[list[int], list[float], list[float]]:
        from lscape_cli.core.slices import run_grid
        from lscape_cli.storage.slices import partial_path, save_partial

        todo = [i for i in range(self.grid.num_points) if not bool(done[i])]
        start, stop = self.group.bounds(len(todo))
        mine = todo[start:stop]
        progress.advance(int(done.sum()) + (len(todo) - len(mine)), 0)
        key = self.resume_key()
        part = partial_path(self.paths.stem, self.group.rank, self.group.world_size)
        computed: tuple[list[int], list[float], list[float]] = ([], [], [])
        evaluators = _Evaluators(self)

        def on_block(idx: list[int], bl: Any, ba: Any) -> None:
            for j, p in enumerate(idx):
                loss[p], acc[p], done[p] = bl[j], ba[j], True
            computed[0].extend(idx)
            computed[1].extend(bl.tolist())
            computed[2].extend(ba.tolist())
            save_partial(part, loss, acc, done, key, self.group.rank, self.group.world_size)
            progress.advance(len(idx), len(idx))

        t = time.perf_counter()
        run_grid(evaluators, self.grid, mine, self.opts.steps, on_block)
        self.compute_s = time.perf_counter() - t
        self.engine = evaluators.stats
        return computed

    def _gather(self, loss: Any, acc: Any, computed: tuple[list[int], list[float], list[float]]) -> None:
        """One collective at the end: every rank's points to every rank (rank 0 writes them)."""
        if not self.group.active:
            return
        for idx, ls, ac in self.group.gather(computed):  # type: ignore[misc]
            for p, lv, av in zip(idx, ls, ac, strict=True):
                loss[p], acc[p] = lv, av

    # -- outputs --------------------------------------------------------------------------------------

    def _finish(self) -> dict[str, Any]:
        from lscape_cli.storage.records import write_record

        t = time.perf_counter()
        centre = self._centre()
        results = _results(self, centre)
        self._write_grid()
        plots = self._plots(centre) if self.opts.plot else []
        results["outputs"] = {
            "grid": self.paths.grid.name,
            "directions": self.paths.directions.name,
            "plots": [p.name for p in plots],
        }
        self.timing["derive_and_plot"] = time.perf_counter() - t
        self.timing["total"] = time.perf_counter() - self.t0
        record = self._record(results)
        write_record(self.paths.record, record)
        for f in _partials(self.paths):
            f.unlink(missing_ok=True)
        return record

    def _centre(self) -> dict[str, Any]:
        """L(theta) from the grid engine (coefficients 0) next to the model's own forward pass."""
        import torch

        from lscape_cli.core.surface import Subspace, SurfaceEvaluator

        sub = Subspace(
            self.setup.loaded.module, self.theta, self.buffers, self.dirs[: 2 if self.opts.dims == 2 else 1]
        )
        ev = SurfaceEvaluator(
            sub, self.setup.x, self.setup.y, self.setup.loss, self.max_batch, strategy="loop"
        )
        loss, acc = ev.evaluate(torch.zeros(1, len(sub.directions), dtype=torch.float64))
        ref_loss, ref_acc, _ = self.reference
        meta = (self.setup.loaded.checkpoint.meta.get("metrics") or {}).get(f"{self.setup.split}_loss")
        return {
            "loss": float(loss[0]),
            "accuracy": float(acc[0]),
            "reference_loss": ref_loss,
            "reference_accuracy": ref_acc,
            "abs_difference": abs(float(loss[0]) - ref_loss),
            "checkpoint_metric": meta,
            "method": "grid engine at coefficients 0 vs the model's own forward over the split",
        }

    def _write_grid(self) -> None:
        import torch

        from lscape_cli.storage.slices import save_grid

        a = torch.tensor(self.grid.alphas, dtype=torch.float64)
        tensors = {"loss": self.loss, "accuracy": self.acc, "alpha": a}
        if self.opts.dims == 2:
            tensors["beta"] = a.clone()
        if "coords" in self.extra:
            tensors["trajectory"] = self.extra["coords"][:, : self.opts.needed].double()
        info = {**self.grid.describe(), "directions_digest": self.digest, "record": self.paths.record.name}
        save_grid(self.paths.grid, tensors, info)

    def _plots(self, centre: dict[str, Any]) -> list[Path]:
        from lscape_cli.plotting.slices import SliceFigure, save_slice_plots

        traj = self.extra.get("coords")
        fig = SliceFigure(
            alphas=self.grid.alphas,
            loss=self.loss,
            accuracy=self.acc,
            centre_loss=centre["loss"],
            dims=self.opts.dims,
            labels=self.extra["labels"] if self.opts.dims == 2 else self.extra["short"],
            description=self.extra.get("what", ""),
            title=f"{self.checkpoint.name}: {self.setup.loss} loss on {self.setup.split} ({self.setup.protocol['num_samples']} samples)",
            trajectory=None if traj is None else traj[:, : self.opts.needed].tolist(),
            trajectory_epochs=self.extra.get("epochs"),
            zscale=self.opts.zscale,
        )
        return save_slice_plots(fig, self.paths.stem)

    def _record(self, results: dict[str, Any]) -> dict[str, Any]:
        from lscape_cli.cli import invocation
        from lscape_cli.storage.records import environment, make_record

        s = self.setup
        config = {
            "slice": {**self.grid.describe(), "coefficients": self.grid.alphas},
            "directions": self.dir_info,
            "evaluation": s.protocol,
            "engine": {
                "strategy": self.opts.strategy,
                "memory_budget_mib": self.opts.memory_budget_mib,
                "max_batch": self.max_batch,
                "block": self.opts.steps,
                "placement": "absolute: theta + sum_k c_k d_k for every point",
            },
            "derived": {
                "basin_threshold": self.opts.basin_threshold,
                "fit_radius": self.fit_radius,
            },
            "resume": {"requested": self.opts.resume, "points_reused": self.resumed},
            "device": str(s.device),
            "dtype": str(s.dtype).replace("torch.", ""),
            "seed": self.opts.seed,
            "world_size": self.group.world_size,
            "model": s.loaded.spec.to_dict(),
        }
        inputs = {"checkpoint": self.checkpoint, **self.extra.get("inputs", {})}
        return make_record(
            SLICE_SCHEMA,
            out_path=self.paths.record,
            command=invocation(),
            inputs=inputs,
            config=config,
            results=results,
            timing_s=self.timing,
            warnings=self.warnings,
            env=environment(str(s.device)),
        )

    @property
    def fit_radius(self) -> float:
        return self.opts.fit_radius if self.opts.fit_radius is not None else 0.1 * self.opts.radius


class _Evaluators:
    """One :class:`SurfaceEvaluator` per subspace, made when first needed.

    Only the latest is kept (its cached first-layer products can be large); blocks arrive subspace by
    subspace.
    """

    def __init__(self, run: _Run) -> None:
        self.run = run
        self.current: tuple[int, Any] | None = None
        self.stats: dict[str, Any] = {}

    def __getitem__(self, k: int) -> Any:
        from lscape_cli.core.surface import Subspace, SurfaceEvaluator

        if self.current is None or self.current[0] != k:
            r = self.run
            dirs = r.dirs[:2] if r.opts.dims == 2 else [r.dirs[k]]
            space = Subspace(r.setup.loaded.module, r.theta, r.buffers, dirs)
            ev = SurfaceEvaluator(
                space,
                r.setup.x,
                r.setup.y,
                r.setup.loss,
                r.max_batch,
                memory_budget=r.opts.memory_budget_mib << 20,
                strategy=r.opts.strategy,
                stats=self.stats,
            )
            self.current = (k, ev)
        return self.current[1]


def _reference(setup: Any, max_batch: int) -> tuple[float, float, float]:
    """The model's own loss/accuracy at the checkpoint and the median time of one forward over the split."""
    import statistics

    import torch

    from lscape_cli.core.objective import loss_sum
    from lscape_cli.core.surface import chunk_size

    times, result = [], (0.0, 0.0)
    model, x, y, n = setup.loaded.module, setup.x, setup.y, int(setup.y.shape[0])
    max_batch = chunk_size(model, x, max_batch)  # the grid engine's chunks: same sums at the centre
    params = dict(model.named_parameters())
    with torch.no_grad():
        for _ in range(3):
            buffers = {k: b.clone() for k, b in model.named_buffers()}  # train mode: BatchNorm writes them
            t = time.perf_counter()
            total, correct = 0.0, 0
            for s in range(0, n, max_batch):
                logits = torch.func.functional_call(model, (params, buffers), (x[s : s + max_batch],))
                total += float(loss_sum(logits, y[s : s + max_batch], setup.loss))
                correct += int((logits.argmax(-1) == y[s : s + max_batch]).sum())
            times.append(time.perf_counter() - t)
            result = (total / n, correct / n)
    return result[0], result[1], statistics.median(times)


# ------------------------------------------------------------------------------------------------------
# Directions of each kind.


class _Directions:
    """Builds the slice's directions from the options: ``(dirs, info for the record, extras)``.

    ``extras``: ``labels`` (axis labels), ``inputs`` (files read, for the record), ``results`` (facts
    about the directions), and for PCA ``coords`` (T, K) and ``epochs``.
    """

    def __init__(self, run: _Run) -> None:
        self.run = run
        self.opts = run.opts
        self.theta = run.theta
        self.extra: dict[str, Any] = {"inputs": {}}

    def build(self) -> tuple[list[Any], dict[str, Any], dict[str, Any]]:
        from lscape_cli.core import directions as D

        build = {
            "random": self._random,
            "toward": self._toward,
            "pca": self._pca,
            "eigen": self._eigen,
            "file": self._file,
        }
        info = self.opts.describe()
        dirs = build[self.opts.kind](info)
        if self.opts.radius is None:
            self.opts.radius = 1.0
        if self.opts.orthogonalize and self.opts.kind in ("toward", "file") and len(dirs) > 1:
            dirs = D.orthogonalize(dirs)
        self.extra["results"] = self._facts(dirs, info)
        return dirs, info, self.extra

    def _norm_label(self) -> str:
        names = {"filter": "filter-normalised", "layer": "layer-normalised", "unit": "unit length"}
        return names.get(self.opts.norm, "unnormalised")

    def _random(self, info: dict[str, Any]) -> list[Any]:
        from lscape_cli.core.directions import random_directions

        k = self.opts.needed
        dirs = random_directions(
            self.theta, k, self.opts.seed, self.opts.norm, self.opts.bias, self.opts.orthogonalize
        )
        names = ["alpha", "beta"] if self.opts.dims == 2 else [f"d{i + 1}" for i in range(k)]
        self.extra["labels"] = [
            f"{n}: random direction {i + 1} ({self._norm_label()})" for i, n in enumerate(names)
        ]
        self.extra["short"] = [f"direction {i + 1}" for i in range(k)]
        self.extra["what"] = f"random Gaussian directions, {self._norm_label()}"
        return dirs

    def _toward(self, info: dict[str, Any]) -> list[Any]:
        from lscape_cli.core.directions import length, random_directions, toward
        from lscape_cli.storage.checkpoint import load_checkpoint
        from lscape_cli.storage.files import sha256_file

        path = self.opts.toward
        assert path is not None
        other = load_checkpoint(path, self.run.model_config)
        state = {n: t for n, t in other.state.items() if n not in self.run.buffers}  # parameters only
        params = self._match(state, path, "checkpoint to slice toward")
        d = toward(self.theta, params)
        info.update(other={"checkpoint": path.name, "sha256": sha256_file(path)}, distance=length(d))
        self.extra["inputs"]["other"] = path
        self.extra["labels"] = [f"alpha: toward {path.name} (1 = that checkpoint)"]
        self.extra["short"] = [f"toward {path.name}"]
        self.extra["what"] = f"1 = {path.name}"
        if self.opts.dims == 1:
            return [d]
        self.extra["labels"].append(f"beta: random direction ({self._norm_label()})")
        return [d, random_directions(self.theta, 1, self.opts.seed, self.opts.norm, self.opts.bias)[0]]

    def _match(self, state: dict[str, Any], path: Path, what: str) -> dict[str, Any]:
        from lscape_cli.core.directions import mismatches

        problems = mismatches(state, self.theta)
        if problems:
            raise LscapeError(
                f"{what} does not match the model: " + " | ".join(problems),
                str(path),
                "use a file made for this architecture",
            )
        return {n: state[n].to(device=t.device, dtype=t.dtype) for n, t in self.theta.items()}

    def _pca(self, info: dict[str, Any]) -> list[Any]:
        import torch

        from lscape_cli.core.directions import pca_directions
        from lscape_cli.storage.checkpoint import load_trajectory
        from lscape_cli.storage.files import sha256_file

        path = self.opts.pca
        assert path is not None
        traj = load_trajectory(path)
        first = {n: t[0] for n, t in traj.state.items()}
        self._match(first, path, "trajectory")
        t_count = int(next(iter(traj.state.values())).shape[0])
        if t_count < self.opts.needed + 1:
            raise LscapeError(
                f"{self.opts.needed} principal directions need at least {self.opts.needed + 1} snapshots; "
                f"the trajectory has {t_count}",
                str(path),
                "train with a smaller --save-trajectory interval, or slice fewer directions",
            )
        theta = {n: t.detach().to("cpu", torch.float64) for n, t in self.theta.items()}
        snaps = {n: traj.state[n].to(torch.float64) for n in theta}
        res = pca_directions(theta, snaps, self.opts.needed)
        last = max(float((snaps[n][-1] - theta[n]).abs().max()) for n in theta)
        scale = max(float(theta[n].abs().max()) for n in theta)
        if last > 1e-6 * scale:
            self.run.warnings.append(
                f"the trajectory's last snapshot differs from the checkpoint (max |diff| {last:.3g}); "
                "directions and coordinates are relative to the checkpoint"
            )
        coords = res["coords"]
        reach = float(coords.abs().max())
        if self.opts.radius is None:
            self.opts.radius = _nice(1.2 * reach)
        if reach > self.opts.radius:
            self.run.warnings.append(
                f"the trajectory reaches |coordinate| {reach:.3g}, beyond --range {self.opts.radius:g}; "
                f"use --range {reach * 1.1:.3g} to see all of it"
            )
        ratios = res["explained_variance_ratio"]
        info.update(
            trajectory={"file": path.name, "sha256": sha256_file(path), "snapshots": t_count},
            method="PCA of theta_t - theta (snapshots centred over t, as Li et al. 2018); unit directions",
            explained_variance_ratio=ratios,
            singular_values=res["singular_values"],
        )
        self.extra.update(
            coords=coords,
            epochs=list(traj.meta.get("epochs") or range(t_count)),
            steps=traj.meta.get("steps"),
            in_span_fraction=res["in_span_fraction"],
            explained=ratios,
        )
        self.extra["inputs"]["trajectory"] = path
        names = ["alpha", "beta"] if self.opts.dims == 2 else [f"d{i + 1}" for i in range(self.opts.needed)]
        self.extra["labels"] = [
            f"{n}: PC{i + 1} of the trajectory ({100 * r:.1f}% of variance)"
            for i, (n, r) in enumerate(zip(names, ratios, strict=True))
        ]
        self.extra["short"] = [f"PC{i + 1} ({100 * r:.1f}% of variance)" for i, r in enumerate(ratios)]
        self.extra["what"] = f"principal directions of {path.name}, unit length"
        return [
            {n: t.to(device=self.theta[n].device, dtype=self.theta[n].dtype) for n, t in d.items()}
            for d in res["directions"]
        ]

    def _eigen(self, info: dict[str, Any]) -> list[Any]:
        from lscape_cli.core.directions import eigen_directions
        from lscape_cli.core.hvp import Objective

        s, group = self.run.setup, self.run.group
        n = int(s.y.shape[0])
        start, stop = group.bounds(n)
        try:
            obj = Objective.from_module(
                s.loaded.module,
                s.x[start:stop],
                s.y[start:stop],
                s.loss,
                self.run.max_batch,
                shard=group.shard(n),
            )
        except ValueError as exc:
            raise LscapeError(
                str(exc), "--mode", "use --mode eval for models with BatchNorm or dropout"
            ) from exc
        dirs, res = eigen_directions(obj, self.opts.needed, self.opts.seed, self.opts.eigen_tol)
        if not res.converged:
            self.run.warnings.append(
                f"Lanczos did not converge in {res.iterations} steps; residuals {res.residuals}"
            )
        info.update(
            eigenvalues=res.eigenvalues,
            residuals=res.residuals,
            converged=res.converged,
            iterations=res.iterations,
            num_matvecs=res.num_matvecs,
        )
        names = ["alpha", "beta"] if self.opts.dims == 2 else [f"d{i + 1}" for i in range(self.opts.needed)]
        self.extra["labels"] = [
            f"{n}: Hessian eigenvector {i + 1} (lambda = {lam:.4g})"
            for i, (n, lam) in enumerate(zip(names, res.eigenvalues, strict=True))
        ]
        self.extra["short"] = [
            f"eigenvector {i + 1} (lambda = {lam:.4g})" for i, lam in enumerate(res.eigenvalues)
        ]
        self.extra["what"] = "top Hessian eigenvectors, unit length"
        self.extra["eigenvalues"] = res.eigenvalues
        return dirs

    def _file(self, info: dict[str, Any]) -> list[Any]:
        from lscape_cli.core.directions import mismatches
        from lscape_cli.storage.directions import load_directions
        from lscape_cli.storage.files import sha256_file

        path = self.opts.directions
        assert path is not None
        dirs, meta = load_directions(path)
        if len(dirs) < self.opts.needed:
            raise LscapeError(
                f"direction file holds {len(dirs)} direction(s), this slice needs {self.opts.needed}",
                str(path),
                "slice fewer directions (--dims/--count) or make a file with more",
            )
        for k, d in enumerate(dirs[: self.opts.needed]):
            problems = mismatches(d, self.theta)
            if problems:
                raise LscapeError(
                    f"direction file does not match the model (direction {k}): " + " | ".join(problems),
                    str(path),
                    "use directions made for this architecture, or drop --directions",
                )
        if meta.get("model") != self.run.setup.loaded.spec.to_dict():
            self.run.warnings.append(
                f"{path.name} was made for model {meta.get('model')}; shapes match, so it is used"
            )
        src = meta["directions"]
        info.update(
            file={"path": path.name, "sha256": sha256_file(path)},
            made_as=src.get("settings", {}),
            origin=src.get("origin"),
        )
        self.extra["inputs"]["directions"] = path
        names = ["alpha", "beta"] if self.opts.dims == 2 else [f"d{i + 1}" for i in range(self.opts.needed)]
        self.extra["labels"] = [
            f"{n}: direction {i + 1} of {path.name} ({src.get('kind', '?')})" for i, n in enumerate(names)
        ]
        self.extra["short"] = [f"direction {i + 1}" for i in range(self.opts.needed)]
        self.extra["what"] = f"directions from {path.name} ({src.get('kind', '?')})"
        return [
            {n: d[n].to(device=t.device, dtype=t.dtype) for n, t in self.theta.items()}
            for d in dirs[: self.opts.needed]
        ]

    def _facts(self, dirs: list[Any], info: dict[str, Any]) -> dict[str, Any]:
        from lscape_cli.core import directions as D

        facts: dict[str, Any] = {
            "kind": info["kind"],
            "count": len(dirs),
            "digest": D.digest(dirs),
            "lengths": [D.length(d) for d in dirs],
            "theta_norm": D.length(self.theta),
            "cosines": [
                [i, j, D.cosine(dirs[i], dirs[j])] for i in range(len(dirs)) for j in range(i + 1, len(dirs))
            ],
        }
        if info["kind"] == "random" and self.opts.norm == "filter":
            dev = [max(D.filter_norm_ratio(d, self.theta).values(), default=0.0) for d in dirs]
            facts["filter_norm_max_relative_deviation"] = dev
        return facts


# ------------------------------------------------------------------------------------------------------
# Results.


def _nice(x: float) -> float:
    """The smallest of 1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8 (times a power of ten) at or above ``x``."""
    import math

    scale = 10.0 ** math.floor(math.log10(x)) if x > 0 else 1.0
    return next(m * scale for m in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10) if m * scale >= x * (1 - 1e-12))


def _nested(t: Any) -> list[list[float | None]]:
    import math

    return [[v if math.isfinite(v) else None for v in row] for row in t.tolist()]


def _results(run: _Run, centre: dict[str, Any]) -> dict[str, Any]:
    import math

    import torch

    from lscape_cli.core import slices as S

    grid, loss, acc, l0 = run.grid, run.loss, run.acc, centre["loss"]
    alphas = grid.alphas
    bad = int((~torch.isfinite(loss)).sum())
    if bad:
        run.warnings.append(
            f"{bad} of {grid.num_points} grid points have a non-finite loss; written as null (never imputed)"
        )
    out: dict[str, Any] = {
        "centre": centre,
        "grid": {
            "shape": list(grid.shape),
            "alpha": alphas,
            **({"beta": alphas} if grid.dims == 2 else {}),
            "loss": _nested(loss),
            "accuracy": _nested(acc),
            "num_points": grid.num_points,
            "num_nonfinite": bad,
        },
        "directions": run.extra["results"],
    }
    a = torch.tensor(alphas, dtype=torch.float64)
    radius, thr = run.fit_radius, run.opts.basin_threshold
    eig = run.extra.get("eigenvalues")
    if grid.dims == 1:
        lines = []
        for k in range(grid.count):
            row = loss[k].tolist()
            line = {
                "direction": k,
                "max_rise": S.max_rise(loss[k], l0, [a]),
                "basin": S.basin_1d(alphas, row, l0, thr),
                "curvature": S.parabola_1d(alphas, row, radius),
            }
            if eig is not None:
                line["eigenvalue"] = eig[k]
            lines.append(line)
        out["lines"] = lines
        rises = [ln["max_rise"]["value"] for ln in lines]
        finite = [(v, k) for k, v in enumerate(rises) if v is not None and math.isfinite(v)]
        best = max(finite) if finite else (None, None)
        out["sharpness_1d"] = {
            "value": best[0],
            "direction": best[1],
            "per_direction": rises,
            "range": grid.radius,
            "method": "max over directions and alpha in [-range, range] of L(theta + alpha d) - L(theta) (seed 001's 1D sharpness)",
        }
    else:
        plane: dict[str, Any] = {
            "max_rise": S.max_rise(loss, l0, [a, a]),
            "basin": S.basin_2d(alphas, alphas, loss, l0, thr),
            "quadratic": S.quadratic_2d(alphas, alphas, loss, radius),
        }
        c = grid.centre_index
        if c is not None:
            plane["axes"] = {
                name: {
                    "basin": S.basin_1d(alphas, line.tolist(), l0, thr),
                    "curvature": S.parabola_1d(alphas, line.tolist(), radius),
                    "max_rise": S.max_rise(line, l0, [a]),
                }
                for name, line in (("alpha", loss[:, c]), ("beta", loss[c, :]))
            }
        if eig is not None:
            plane["eigenvalues"] = eig
        out["plane"] = plane
    if "coords" in run.extra:
        coords = run.extra["coords"][:, : grid.dims if grid.dims == 2 else grid.count]
        out["trajectory"] = {
            "coords": coords.tolist(),
            "epochs": run.extra["epochs"],
            "steps": run.extra.get("steps"),
            "in_span_fraction": run.extra["in_span_fraction"],
            "explained_variance_ratio": run.extra["explained"],
            "inside_range": bool(float(coords.abs().max()) <= grid.radius),
        }
    out["speed"] = _speed(run)
    return out


def _speed(run: _Run) -> dict[str, Any]:
    n = run.evaluated
    per_point = run.compute_s / n if n else None
    fwd = run.reference[2]
    return {
        "points_evaluated": n,
        "seconds": run.compute_s,
        "seconds_per_point": per_point,
        "forward_pass_s": fwd,
        "seconds_per_point_over_forward_pass": per_point / fwd if per_point is not None and fwd > 0 else None,
        "engine": dict(run.engine),
        "world_size": run.group.world_size,
        "note": "seconds: wall-clock of the grid (rank 0, all ranks in parallel); forward_pass_s: median of 3 "
        "plain forward passes over the split at the checkpoint",
    }


# ------------------------------------------------------------------------------------------------------
# Human output.


class _Progress:
    """Points done and time per point, on the shared one-line status (``console.StatusLine``)."""

    def __init__(self, quiet: bool, total: int) -> None:
        from lscape_cli.cli.console import StatusLine

        self.line = StatusLine(quiet, "slice")
        self.total, self.done, self.computed = total, 0, 0
        self.on_step: Any = None
        self.t0 = time.perf_counter()

    def __enter__(self) -> _Progress:
        self.on_step = self.line.__enter__()
        return self

    def advance(self, done: int, computed: int) -> None:
        self.done += done
        self.computed += computed
        if self.on_step is not None and self.computed:
            per = (time.perf_counter() - self.t0) / self.computed
            self.on_step({"points": f"{self.done}/{self.total}", "ms_per_point": per * 1e3})

    def __exit__(self, *exc: object) -> None:
        self.line.__exit__(*exc)


def _summary(record: dict[str, Any], paths: _Paths) -> None:
    from rich.table import Table

    res = record["results"]
    table = Table(title=f"lscape slice -> {paths.record}")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_column("settings")
    c = res["centre"]
    table.add_row("centre loss", f"{c['loss']:.6g}", f"forward pass: {c['reference_loss']:.6g}")
    if "lines" in res:
        s = res["sharpness_1d"]
        table.add_row(
            "1D sharpness",
            _fmt(s["value"]),
            f"max rise over {len(res['lines'])} direction(s), range {s['range']:g}",
        )
        for ln in res["lines"][:10]:
            b, q = ln["basin"], ln["curvature"]
            table.add_row(
                f"  direction {ln['direction'] + 1}",
                f"rise {_fmt(ln['max_rise']['value'])}",
                f"basin width {b['width']:.3g}{'+' if b['censored_left'] or b['censored_right'] else ''}, curvature {_fmt(q['curvature'])}",
            )
    else:
        p = res["plane"]
        table.add_row("max rise", _fmt(p["max_rise"]["value"]), f"at {p['max_rise']['at']}")
        b = p["basin"]
        table.add_row(
            "basin area", f"{b['area']:.3g}{'+' if b['censored'] else ''}", f"L - L0 <= {b['threshold']:g}"
        )
        ev = p["quadratic"]["eigenvalues"]
        table.add_row(
            "curvature",
            "n/a" if ev is None else ", ".join(f"{v:.4g}" for v in ev),
            "eigenvalues of the fitted 2x2 Hessian",
        )
    sp = res["speed"]
    if sp["seconds_per_point"] is not None:
        table.add_row(
            "speed",
            f"{sp['seconds_per_point'] * 1e3:.3g} ms/point",
            f"{sp['seconds_per_point_over_forward_pass']:.2f} forward passes per point; {sp['points_evaluated']} points",
        )
    err.print(table)
    files = [res["outputs"]["grid"], res["outputs"]["directions"], *res["outputs"]["plots"]]
    err.print("wrote " + ", ".join(files))
    for w in record["warnings"]:
        err.print(f"warning: {w}")


def _fmt(v: float | None) -> str:
    return "null" if v is None else f"{v:.4g}"
