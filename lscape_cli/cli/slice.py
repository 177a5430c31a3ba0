"""`lscape slice`: loss and accuracy on a line or plane through a checkpoint -> CKPT.slice.json (+ grid, plots).

The command: its options -> :class:`~lscape_cli.core.landscape.slice_request.SliceRequest` ->
:func:`~lscape_cli.core.landscape.slice_run.run_slice` -> :func:`~lscape_cli.storage.slice_record.write_slice`
(which lists the files written).
"""

from __future__ import annotations

import time

from lscape_cli.cli import _slice_options as o
from lscape_cli.cli._slice_report import print_summary
from lscape_cli.cli._slice_run import run
from lscape_cli.cli.common import default_output
from lscape_cli.cli.console import emit_json, warn
from lscape_cli.cli.options import (
    DataFileOpt,
    DataRootOpt,
    DatasetOverrideOpt,
    DeviceOpt,
    DtypeOpt,
    JsonOpt,
    LossDefOpt,
    LossOverrideOpt,
    MaxBatchOpt,
    ModelArgsOpt,
    ModelConfigOpt,
    ModelDefOpt,
    ModeOpt,
    OutputOpt,
    OverwriteOpt,
    QuietOpt,
    SeedOpt,
    SplitOpt,
    ThreadsOpt,
    TrustModelDefOpt,
    data_root,
    user_files,
    user_inputs,
)
from lscape_cli.storage.files import allow_overwrite, refuse_foreign, refuse_overlap


def slice_(
    checkpoint: o.CheckpointArg,
    dims: o.DimsOpt = 2,
    range_: o.RangeOpt = None,
    steps: o.StepsOpt = 51,
    count: o.CountOpt = 1,
    toward: o.TowardOpt = None,
    pca: o.PcaOpt = None,
    eigen: o.EigenOpt = False,
    directions: o.DirectionsOpt = None,
    norm: o.NormOpt = "filter",
    bias: o.BiasOpt = "zero",
    orthogonalize: o.OrthogonalizeOpt = False,
    eigen_tol: o.EigenTolOpt = 1e-6,
    split: SplitOpt = "train",
    mode: ModeOpt = "eval",
    loss: LossOverrideOpt = None,
    dataset: DatasetOverrideOpt = None,
    data_root_: DataRootOpt = None,
    model_config: ModelConfigOpt = None,
    model_def: ModelDefOpt = None,
    model_args: ModelArgsOpt = None,
    output: OutputOpt = None,
    loss_def: LossDefOpt = None,
    trust_model_def: TrustModelDefOpt = False,
    data_file: DataFileOpt = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "float32",
    max_batch: MaxBatchOpt = 4096,
    memory_budget: o.MemoryBudgetOpt = 1024,
    strategy: o.StrategyOpt = "auto",
    basin_threshold: o.BasinThresholdOpt = 0.1,
    fit_radius: o.FitRadiusOpt = None,
    resume: o.ResumeOpt = False,
    plot: o.PlotOpt = True,
    zscale: o.ZscaleOpt = "auto",
    out: o.OutOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    overwrite: OverwriteOpt = False,
    threads: ThreadsOpt = None,
) -> None:
    """Evaluate loss and accuracy on a line or plane through a checkpoint (random, toward, pca, eigen).

    Writes CKPT.slice.json (grid, 1D sharpness, basin width, curvature), CKPT.slice.safetensors (the grid),
    CKPT.slice.directions.safetensors (reusable with --directions) and PNG/PDF plots. Points are placed
    absolutely (theta + a d1 + b d2); the first layer is factored out of the grid.

    Example:
        lscape slice sample_checkpoints/mlp-d4-r000.safetensors --dims 2 --range 1.5 --steps 51
    """
    allow_overwrite(overwrite)
    from lscape_cli.cli.process import EXIT_INTERRUPTED, fail
    from lscape_cli.core.landscape.slice_request import SliceRequest
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
        [
            checkpoint,
            toward,
            pca,
            directions,
            model_config,
            *user_files(model_def, data_file, model_args, loss_def),
        ],
    )
    refuse_foreign(
        {paths.record: "lscape.slice", paths.grid: "lscape.slice-grid", paths.directions: "lscape.directions"}
    )
    from lscape_cli.models.evaluation import load_for_eval

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
        user=user_inputs(model_def, model_args, trust_model_def, data_file, loss_def, output),
        on_warning=warn,
    )
    from lscape_cli.core.budget import Problem, check, grid_demands

    size = Problem.of(setup.loaded.module, int(setup.y.shape[0]))
    check(grid_demands(req.dims, req.steps, req.count, size), setup.device)
    with group_from_env(setup.device) as group:
        quiet = quiet or json_out or not group.is_main
        try:
            record = run(checkpoint, setup, req, paths, model_config, group, quiet, t0)
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
