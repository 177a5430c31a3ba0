"""`lscape slice`: loss and accuracy on a line or plane through a checkpoint -> CKPT.slice.json (+ grid, plots).

The command: its options -> :class:`~lscape_cli.core.slice_request.SliceRequest` ->
:func:`~lscape_cli.core.slice_run.run_slice` -> :func:`~lscape_cli.storage.slice_record.write_slice`
(which lists the files written).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from lscape_cli.cli._slice_report import print_summary
from lscape_cli.cli.common import EvalSetup, default_output, load_for_eval
from lscape_cli.cli.console import StatusLine, emit_json
from lscape_cli.cli.options import (
    POSITIVE,
    DataFileOpt,
    DataRootOpt,
    DatasetOverrideOpt,
    DeviceOpt,
    DtypeOpt,
    JsonOpt,
    LossOverrideOpt,
    MaxBatchOpt,
    ModelArgsOpt,
    ModelConfigOpt,
    ModelDefOpt,
    ModeOpt,
    QuietOpt,
    SeedOpt,
    SplitOpt,
    ThreadsOpt,
    TrustModelDefOpt,
    data_root,
    user_files,
    user_inputs,
)
from lscape_cli.storage.files import refuse_overlap

if TYPE_CHECKING:
    from lscape_cli.core.slice_request import SliceRequest
    from lscape_cli.core.slice_run import SliceData
    from lscape_cli.distributed import Group
    from lscape_cli.storage.slice_record import SlicePaths

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
            callback=POSITIVE,
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
        float,
        typer.Option(
            callback=POSITIVE, help="--eigen: relative Ritz-residual tolerance.", rich_help_panel=AXES
        ),
    ] = 1e-6,
    split: SplitOpt = "train",
    mode: ModeOpt = "eval",
    loss: LossOverrideOpt = None,
    dataset: DatasetOverrideOpt = None,
    data_root_: DataRootOpt = None,
    model_config: ModelConfigOpt = None,
    model_def: ModelDefOpt = None,
    model_args: ModelArgsOpt = None,
    trust_model_def: TrustModelDefOpt = False,
    data_file: DataFileOpt = None,
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
        float,
        typer.Option(
            callback=POSITIVE, help="Basin width/area: where L - L(centre) <= this.", rich_help_panel=OUT
        ),
    ] = 0.1,
    fit_radius: Annotated[
        float | None,
        typer.Option(
            callback=POSITIVE,
            help="Parabola fit within this distance of the centre [0.1 * range].",
            rich_help_panel=OUT,
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
    threads: ThreadsOpt = None,
) -> None:
    """Evaluate loss and accuracy on a line or plane through a checkpoint (random, toward, pca, eigen).

    Writes CKPT.slice.json (grid, 1D sharpness, basin width, curvature), CKPT.slice.safetensors (the grid),
    CKPT.slice.directions.safetensors (reusable with --directions) and PNG/PDF plots. Points are placed
    absolutely (theta + a d1 + b d2); the first layer is factored out of the grid.

    Example:
        lscape slice sample_checkpoints/mlp-d4-r000.safetensors --dims 2 --range 1.5 --steps 51
    """
    from lscape_cli.cli import EXIT_INTERRUPTED, fail
    from lscape_cli.core.slice_request import SliceRequest
    from lscape_cli.distributed import group_from_env
    from lscape_cli.storage.records import to_json
    from lscape_cli.storage.slice_record import SlicePaths

    t0 = time.perf_counter()
    req = SliceRequest(
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
    req.validate()
    paths = SlicePaths.of(out or default_output(checkpoint, "slice.json"))
    refuse_overlap(
        [paths.record, paths.grid, paths.directions],
        [checkpoint, toward, pca, directions, model_config, *user_files(model_def, data_file)],
    )
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
        user=user_inputs(model_def, model_args, trust_model_def, data_file),
    )
    from lscape_cli.core.budget import Problem, check, grid_demands

    size = Problem.of(setup.loaded.module, int(setup.y.shape[0]))
    check(grid_demands(req.dims, req.steps, req.count, size), setup.device)
    with group_from_env(setup.device) as group:
        quiet = quiet or json_out or not group.is_main
        try:
            record = _run(checkpoint, setup, req, paths, model_config, group, quiet, t0)
        except KeyboardInterrupt:
            saved = [str(p) for p in paths.partials()]
            where = f"partial grid in {saved[0]}" if saved else "no point had finished"
            raise fail(f"interrupted: {where} (re-run with --resume to continue)", EXIT_INTERRUPTED) from None
    if record is None:
        return
    if json_out:
        emit_json(to_json(record))
    elif not quiet:
        print_summary(record, paths.record)


def _run(
    checkpoint: Path,
    setup: EvalSetup,
    req: SliceRequest,
    paths: SlicePaths,
    model_config: Path | None,
    group: Group,
    quiet: bool,
    t0: float,
) -> dict[str, Any] | None:
    """Read the inputs, run the slice, and on rank 0 write its files; the record (None on other ranks)."""
    from lscape_cli.cli import invocation
    from lscape_cli.core.slice_run import run_slice
    from lscape_cli.plotting.slices import save_slice_plots, slice_figure
    from lscape_cli.storage.slice_record import SliceContext, SliceFiles, load_source, write_slice

    timing = {"load": time.perf_counter() - t0}
    data = _data(setup, checkpoint)
    store = SliceFiles(paths, checkpoint, data.checkpoint_sha256, data.model)
    source = load_source(req, model_config)
    with StatusLine(quiet, "slice") as on_step:
        res = run_slice(data, req, source, store, group, on_step)
    if not group.is_main:
        return None
    res.warnings = list(setup.warnings) + res.warnings
    dtype = str(setup.dtype).replace("torch.", "")
    ctx = SliceContext(
        checkpoint, invocation(), setup.protocol, str(setup.device), dtype, data.model, data.max_batch
    )
    title = f"{checkpoint.name}: {data.loss} loss on {data.split} ({data.num_samples} samples)"
    plots = (lambda: save_slice_plots(slice_figure(res, title), paths.stem)) if req.plot else None
    return write_slice(paths, res, ctx, plots, {**timing, **res.timing}, t0)


def _data(setup: EvalSetup, checkpoint: Path) -> SliceData:
    from lscape_cli.core.slice_run import SliceData
    from lscape_cli.storage.files import sha256_file

    metric = (setup.loaded.checkpoint.meta.get("metrics") or {}).get(f"{setup.split}_loss")
    return SliceData(
        module=setup.loaded.module,
        x=setup.x,
        y=setup.y,
        loss=setup.loss,
        split=setup.split,
        mode=setup.protocol["mode"],
        dtype=setup.dtype,
        max_batch=setup.protocol["max_batch"],
        model=setup.loaded.spec.to_dict(),
        checkpoint_sha256=sha256_file(checkpoint),
        checkpoint_metric=metric,
    )
