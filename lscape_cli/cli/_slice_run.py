"""The run engine of `lscape slice`: directions, then the grid (resumable, split over ranks), then outputs.

:class:`Run` builds the directions (:mod:`lscape_cli.cli._slice_directions`), saves them, evaluates the
grid points this rank owns while saving a partial grid after every block (``--resume`` reuses it when
everything that fixes the values matches), gathers the points on rank 0, and there writes the grid, the
plots and the ``lscape.slice/1`` record (its results from :mod:`lscape_cli.cli._slice_report`).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lscape_cli.cli._slice_directions import Directions
from lscape_cli.cli._slice_options import Options, Paths
from lscape_cli.cli._slice_report import Progress, build_results
from lscape_cli.errors import LscapeError

SLICE_SCHEMA = "lscape.slice/1"


@dataclass
class Run:
    """One slice: :meth:`execute` computes the grid and, on rank 0, leaves the written record in ``record``."""

    checkpoint: Path
    setup: Any
    opts: Options
    paths: Paths
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
        self.dirs, self.dir_info, self.extra = Directions(self).build()
        self.timing["directions"] = time.perf_counter() - t
        self.grid = Grid(self.opts.dims, self.opts.radius, self.opts.steps, self.opts.count)
        if self.group.is_main:
            self._save_directions()
        t = time.perf_counter()
        self.reference = _reference(self.setup, self.max_batch)
        loss, acc, done, resumed = self._state()
        self.resumed = resumed
        with Progress(quiet, self.grid.num_points) as progress:
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
        files = self.paths.partials()
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
        results = build_results(self, centre)
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
        for f in self.paths.partials():
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

    def __init__(self, run: Run) -> None:
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
