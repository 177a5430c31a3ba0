"""`lscape connect`: are two minima connected by a low-loss path? -> A--B.connect.json (+ .png/.pdf)."""

from __future__ import annotations

import time

from lscape_cli.cli import _connect_options as o
from lscape_cli.cli._connect_report import plot_path, plot_stem, print_table
from lscape_cli.cli._connect_request import alignment_spec, endpoint, load_pair, validate
from lscape_cli.cli.console import StatusLine, emit_json
from lscape_cli.cli.options import (
    DataFileOpt,
    DataRootOpt,
    DeviceOpt,
    DtypeOpt,
    JsonOpt,
    LossDefOpt,
    LossOverrideOpt,
    MaxBatchOpt,
    ModelArgsOpt,
    ModelConfigOpt,
    ModelDefOpt,
    OutputOpt,
    OverwriteOpt,
    QuietOpt,
    SeedOpt,
    ThreadsOpt,
    TrustModelDefOpt,
    data_root,
    user_files,
    user_inputs,
)
from lscape_cli.errors import LscapeError
from lscape_cli.storage.files import allow_overwrite, refuse_overlap


def connect(
    checkpoint_a: o.CheckpointAArg,
    checkpoint_b: o.CheckpointBArg,
    points: o.PointsOpt = 51,
    align: o.AlignOpt = "none",
    align_iters: o.AlignItersOpt = 100,
    curve: o.CurveOpt = "none",
    curve_epochs: o.CurveEpochsOpt = 20,
    curve_lr: o.CurveLrOpt = 1e-3,
    curve_optimizer: o.CurveOptimizerOpt = "adam",
    curve_batch_size: o.CurveBatchSizeOpt = 128,
    reset_bn: o.ResetBnOpt = False,
    bn_batch_size: o.BnBatchSizeOpt = 128,
    loss: LossOverrideOpt = None,
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
    plot: o.PlotOpt = True,
    out: o.OutOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    overwrite: OverwriteOpt = False,
    threads: ThreadsOpt = None,
) -> None:
    """Loss and error along paths between two minima, with their barriers (mode connectivity).

    Evaluates (1-alpha)*A + alpha*B on the train and test splits (eval mode) and reports three barriers
    for loss and error: max - mean of the ends, height over the chord, max - max of the ends (also
    relative to the mean end value). --align weights adds the path to B permuted onto A; --curve adds a
    trained Bezier curve or polygonal chain. Writes A--B.connect.json and a plot beside A.

    Example:
        lscape connect sample_checkpoints/mlp-d4-r000.safetensors sample_checkpoints/mlp-d4-r001.safetensors --align weights --curve bezier
    """
    allow_overwrite(overwrite)
    t0 = time.perf_counter()
    validate(align, curve, curve_optimizer)
    from lscape_cli.storage.connect_record import compatible, connect_record, default_output

    out_path = out or default_output(checkpoint_a, checkpoint_b)
    stem = plot_stem(out_path)
    plots = [stem.with_name(f"{stem.name}.{fmt}") for fmt in ("png", "pdf")] if plot else []
    refuse_overlap(
        [out_path, *plots],
        [checkpoint_a, checkpoint_b, model_config, *user_files(model_def, data_file, model_args, loss_def)],
    )
    warnings = compatible(checkpoint_a, checkpoint_b, model_config, model_def)
    user = user_inputs(model_def, model_args, trust_model_def, data_file, loss_def, output)
    setup, b_loaded = load_pair(
        checkpoint_a, checkpoint_b, model_config, device, dtype, data_root(data_root_), loss, max_batch, user
    )
    warnings += setup.warnings + [w for w in b_loaded.warnings if w not in setup.warnings]
    from lscape_cli.core.connectivity import paths as C
    from lscape_cli.core.training.stacked import has_batchnorm

    perm_spec = setup.loaded.spec
    if align == "weights":
        perm_spec = alignment_spec(setup)
    if reset_bn and not has_batchnorm(setup.loaded.module):
        warnings.append("--reset-bn has no effect: the model has no BatchNorm")
    req = C.ConnectRequest(
        points=points,
        align=align,
        align_max_iter=align_iters,
        curve=None if curve == "none" else curve,
        curve_config=C.CurveConfig(
            kind="bezier" if curve == "none" else curve,
            epochs=curve_epochs,
            lr=curve_lr,
            optimizer=curve_optimizer,
            batch_size=curve_batch_size,
            seed=seed,
        ),
        reset_bn=reset_bn,
        bn_batch_size=bn_batch_size,
        seed=seed,
        max_batch=max_batch,
    )
    data = {s: (setup.splits.x[s], setup.splits.y[s]) for s in ("train", "test")}
    from lscape_cli.core.budget import Problem, check, path_demands

    size = Problem.of(setup.loaded.module, sum(int(y.shape[0]) for _, y in data.values()))
    check(path_demands(points, curve_epochs, req.curve is not None, size), setup.device)
    t_load = time.perf_counter() - t0
    quiet = quiet or json_out
    with StatusLine(quiet, "connect") as on_step:
        try:
            results, timing, more = C.run_connect(
                setup.loaded.module,
                perm_spec,
                endpoint(setup.loaded.module),
                endpoint(b_loaded.module),
                data,
                setup.loss,
                req,
                on_step,
            )
        except ValueError as exc:  # a failed function check of the alignment
            raise LscapeError(str(exc), str(checkpoint_b), "report this as a bug") from exc
    from lscape_cli.cli.process import invocation

    record = connect_record(
        checkpoint_a, checkpoint_b, out_path, invocation(), setup, req, results, warnings + more
    )
    record["timing_s"] = {"load": t_load, **timing}
    from lscape_cli.storage.records import to_json, write_record

    write_record(out_path, record)  # the measurements first: a failing plot loses nothing
    if plot:
        t_plot = time.perf_counter()
        record["results"]["plot"] = plot_path(record, out_path, checkpoint_a, checkpoint_b)
        record["timing_s"]["plot"] = time.perf_counter() - t_plot
        write_record(out_path, record)
    if json_out:
        emit_json(to_json(record))
    elif not quiet:
        print_table(record["results"], out_path)
