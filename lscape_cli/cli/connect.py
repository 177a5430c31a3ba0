"""`lscape connect`: are two minima connected by a low-loss path? -> A--B.connect.json (+ .png/.pdf)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from lscape_cli.cli.console import StatusLine, emit_json, err
from lscape_cli.cli.options import (
    POSITIVE,
    DataFileOpt,
    DataRootOpt,
    DeviceOpt,
    DtypeOpt,
    JsonOpt,
    LossOverrideOpt,
    MaxBatchOpt,
    ModelArgsOpt,
    ModelConfigOpt,
    ModelDefOpt,
    QuietOpt,
    SeedOpt,
    ThreadsOpt,
    TrustModelDefOpt,
    data_root,
    user_files,
    user_inputs,
)
from lscape_cli.errors import LscapeError
from lscape_cli.storage.files import refuse_overlap

PATHS = "Paths"
CURVE = "Curve fitting"
DATA = "Data and output"


def connect(
    checkpoint_a: Annotated[Path, typer.Argument(help="First minimum (A, alpha = 0).")],
    checkpoint_b: Annotated[Path, typer.Argument(help="Second minimum (B, alpha = 1), same model and data.")],
    points: Annotated[
        int, typer.Option(min=2, help="Points along each path, both ends included.", rich_help_panel=PATHS)
    ] = 51,
    align: Annotated[
        str,
        typer.Option(
            help="none, or weights: permute B's hidden units onto A by weight matching (Git Re-Basin) and "
            "add the linear path to the aligned B (registry models; your own models' structure is derived by "
            "tracing, or refused).",
            rich_help_panel=PATHS,
        ),
    ] = "none",
    align_iters: Annotated[
        int, typer.Option(min=1, help="Most weight-matching sweeps over all layers.", rich_help_panel=PATHS)
    ] = 100,
    curve: Annotated[
        str,
        typer.Option(
            help="none, bezier or polychain: train the bend of a curve from A to B (to the aligned B with "
            "--align weights) minimising the expected loss over t (Garipov et al. 2018).",
            rich_help_panel=CURVE,
        ),
    ] = "none",
    curve_epochs: Annotated[
        int, typer.Option(min=1, help="Epochs over the training split.", rich_help_panel=CURVE)
    ] = 20,
    curve_lr: Annotated[
        float, typer.Option(callback=POSITIVE, help="Learning rate of the bend.", rich_help_panel=CURVE)
    ] = 1e-3,
    curve_optimizer: Annotated[
        str, typer.Option(help="adam or sgd (momentum 0.9).", rich_help_panel=CURVE)
    ] = "adam",
    curve_batch_size: Annotated[
        int, typer.Option(min=1, help="Minibatch size (one t drawn per minibatch).", rich_help_panel=CURVE)
    ] = 128,
    reset_bn: Annotated[
        bool,
        typer.Option(
            "--reset-bn",
            help="Re-estimate BatchNorm statistics at every point of the linear paths (curves always do); "
            "default: interpolate the ends' statistics.",
            rich_help_panel=PATHS,
        ),
    ] = False,
    bn_batch_size: Annotated[
        int, typer.Option(min=2, help="Chunk size for BatchNorm re-estimation.", rich_help_panel=PATHS)
    ] = 128,
    loss: LossOverrideOpt = None,
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
    plot: Annotated[
        bool, typer.Option("--plot/--no-plot", help="Write OUT.png and OUT.pdf.", rich_help_panel=DATA)
    ] = True,
    out: Annotated[
        Path | None, typer.Option(help="Output JSON [A--B.connect.json beside A].", rich_help_panel=DATA)
    ] = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
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
    t0 = time.perf_counter()
    _validate(align, curve, curve_optimizer)
    from lscape_cli.storage.connect_record import compatible, connect_record, default_output

    out_path = out or default_output(checkpoint_a, checkpoint_b)
    stem = _stem(out_path)
    plots = [stem.with_name(f"{stem.name}.{fmt}") for fmt in ("png", "pdf")] if plot else []
    refuse_overlap(
        [out_path, *plots], [checkpoint_a, checkpoint_b, model_config, *user_files(model_def, data_file)]
    )
    warnings = compatible(checkpoint_a, checkpoint_b, model_config, model_def)
    user = user_inputs(model_def, model_args, trust_model_def, data_file)
    setup, b_loaded = _load(
        checkpoint_a, checkpoint_b, model_config, device, dtype, data_root(data_root_), loss, max_batch, user
    )
    warnings += setup.warnings + [w for w in b_loaded.warnings if w not in setup.warnings]
    from lscape_cli.core import connectivity as C
    from lscape_cli.core.stacked import has_batchnorm

    perm_spec = setup.loaded.spec
    if align == "weights":
        perm_spec = _alignment_spec(setup)
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
                _endpoint(setup.loaded.module),
                _endpoint(b_loaded.module),
                data,
                setup.loss,
                req,
                on_step,
            )
        except ValueError as exc:  # a failed function check of the alignment
            raise LscapeError(str(exc), str(checkpoint_b), "report this as a bug") from exc
    from lscape_cli.cli import invocation

    record = connect_record(
        checkpoint_a, checkpoint_b, out_path, invocation(), setup, req, results, warnings + more
    )
    record["timing_s"] = {"load": t_load, **timing}
    from lscape_cli.storage.records import to_json, write_record

    write_record(out_path, record)  # the measurements first: a failing plot loses nothing
    if plot:
        t_plot = time.perf_counter()
        record["results"]["plot"] = _plot(record, out_path, checkpoint_a, checkpoint_b)
        record["timing_s"]["plot"] = time.perf_counter() - t_plot
        write_record(out_path, record)
    if json_out:
        emit_json(to_json(record))
    elif not quiet:
        _table(record["results"], out_path)


def _validate(align: str, curve: str, optimizer: str) -> None:
    from lscape_cli.core import choices as ch

    ch.Align.check(align, "--align")
    ch.Curve.check(curve, "--curve")
    ch.CurveOptimizer.check(optimizer, "--curve-optimizer")


def _load(
    a: Path,
    b: Path,
    model_config: Path | None,
    device: str,
    dtype: str,
    root: Path,
    loss: str | None,
    max_batch: int,
    user: Any = None,
) -> tuple[Any, Any]:
    from lscape_cli.cli.common import load_for_eval
    from lscape_cli.storage.checkpoint import load_model

    setup = load_for_eval(
        a,
        model_config=model_config,
        split="train",
        device_name=device,
        dtype_name=dtype,
        root=root,
        loss=loss,
        max_batch=max_batch,
        user=user,
    )
    return setup, load_model(b, model_config, device=setup.device, dtype=setup.dtype, user=user)


def _alignment_spec(setup: Any) -> Any:
    """The registry's permutation structure, or one derived by tracing a user model (or one line why not)."""
    from lscape_cli.core.permutation_trace import spec_for

    spec = setup.loaded.spec
    try:
        return spec_for(setup.loaded.module, spec, setup.x[:2])
    except ValueError as exc:
        name = getattr(spec.config, "source", spec.name)
        raise LscapeError(
            f"cannot align {name}: {exc}", "--align weights", "connect without --align (the linear path only)"
        ) from exc


def _endpoint(module: Any) -> Any:
    from lscape_cli.core.connectivity import Endpoint

    return Endpoint(
        {n: p.detach() for n, p in module.named_parameters()},
        {n: t.detach() for n, t in module.named_buffers()},
    )


def _stem(out_path: Path) -> Path:
    name = out_path.name
    return out_path.with_name(name[: -len(".json")] if name.endswith(".json") else name)


def _plot(record: dict[str, Any], out_path: Path, a: Path, b: Path) -> dict[str, str]:
    from lscape_cli.plotting.connect import plot_connect
    from lscape_cli.storage.connect_record import checkpoint_stem

    written = plot_connect(record, _stem(out_path), f"{checkpoint_stem(a)} → {checkpoint_stem(b)}")
    return {p.suffix.lstrip("."): p.name for p in written}


def _table(results: dict[str, Any], out_path: Path) -> None:
    from rich.table import Table

    table = Table(
        title=f"lscape connect -> {out_path}",
        caption="barriers: max - mean of ends (relative), chord, max - max of ends",
    )
    error = "error" in results["linear"]["barriers"]["train"]  # no error rate for regression data
    cols = ["path", "split", "loss max-mean", "rel.", "chord", "max-max"] + (
        ["error max-mean"] if error else []
    )
    for col in cols:
        table.add_column(col, justify="left" if col in ("path", "split") else "right")
    for key in ("linear", "aligned", "curve"):
        path = results.get(key)
        if not path:
            continue
        for split in ("train", "test"):
            lb = path["barriers"][split]["loss"]
            rel = lb["max_minus_mean_ends"]["relative"]
            row = [
                path["path"] if key == "curve" else key,
                split,
                f"{lb['max_minus_mean_ends']['value']:.4g}",
                "n/a" if rel is None else f"{rel:.3g}",
                f"{lb['chord']['value']:.4g}",
                f"{lb['max_minus_max_ends']['value']:.4g}",
            ]
            if error:
                row.append(f"{path['barriers'][split]['error']['max_minus_mean_ends']['value']:.4g}")
            table.add_row(*row)
    err.print(table)
