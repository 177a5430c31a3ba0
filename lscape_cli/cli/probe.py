"""`lscape probe`: curvature and flatness of one checkpoint -> CKPT.probe.json."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from lscape_cli.cli import EXIT_CHECK_FAILED
from lscape_cli.cli._probe_report import print_table
from lscape_cli.cli.common import default_output, load_for_eval, parse_floats
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
from lscape_cli.errors import LscapeError
from lscape_cli.storage.files import refuse_overlap

CURV = "Curvature"
FLAT = "Flatness"
DATA = "Data and budget"


def probe(
    checkpoint: Annotated[Path, typer.Argument(help="A .safetensors checkpoint.")],
    lambda_max: Annotated[
        bool, typer.Option("--lambda-max", help="Largest Hessian eigenvalue (Lanczos).", rich_help_panel=CURV)
    ] = False,
    top_k: Annotated[
        int,
        typer.Option("--top-k", min=0, help="The K largest eigenvalues (seed 001: 3).", rich_help_panel=CURV),
    ] = 0,
    lambda_min: Annotated[
        bool,
        typer.Option("--lambda-min", help="Smallest eigenvalue and condition number.", rich_help_panel=CURV),
    ] = False,
    trace: Annotated[
        bool, typer.Option("--trace", help="tr(H) with standard error.", rich_help_panel=CURV)
    ] = False,
    frobenius: Annotated[
        bool, typer.Option("--frobenius", help="||H||_F (same products as --trace).", rich_help_panel=CURV)
    ] = False,
    trace_method: Annotated[
        str,
        typer.Option(
            help="krylov-hutch++ (Lanczos-deflated, 2/3 of the products), hutch++ or hutchinson.",
            rich_help_panel=CURV,
        ),
    ] = "krylov-hutch++",
    matvecs: Annotated[
        int,
        typer.Option(
            min=3, help="Hessian-vector products for trace/Frobenius (seed 000: 45).", rich_help_panel=CURV
        ),
    ] = 45,
    density: Annotated[
        bool,
        typer.Option("--density", help="Spectral density (SLQ) and effective rank.", rich_help_panel=CURV),
    ] = False,
    density_runs: Annotated[int, typer.Option(min=1, help="SLQ runs.", rich_help_panel=CURV)] = 10,
    density_steps: Annotated[
        int, typer.Option(min=2, help="Lanczos steps per SLQ run.", rich_help_panel=CURV)
    ] = 80,
    grad_norm: Annotated[
        bool, typer.Option("--grad-norm", help="||grad L|| over the split.", rich_help_panel=CURV)
    ] = False,
    tol: Annotated[
        float,
        typer.Option(
            callback=POSITIVE,
            help="Relative tolerance on each eigenvalue's error bound (or residual, see --stop).",
            rich_help_panel=CURV,
        ),
    ] = 1e-6,
    max_iter: Annotated[
        int,
        typer.Option(
            min=2, help="Most Lanczos steps (power iterations with --eig-method power).", rich_help_panel=CURV
        ),
    ] = 200,
    stop: Annotated[
        str,
        typer.Option(
            help="Eigenvalue stop: bound (error bound min(r, r^2/gap) <= tol*|lambda|) or residual (r itself).",
            rich_help_panel=CURV,
        ),
    ] = "bound",
    curvature: Annotated[
        str,
        typer.Option(
            help="Matrix of every spectral quantity: hessian, ggn (generalised Gauss-Newton = exact Fisher), "
            "fisher (Monte-Carlo, labels sampled from the model) or empirical-fisher (per-sample gradients).",
            rich_help_panel=CURV,
        ),
    ] = "hessian",
    fisher_samples: Annotated[
        int, typer.Option(min=1, help="--curvature fisher: labels drawn per input.", rich_help_panel=CURV)
    ] = 1,
    params: Annotated[
        list[str] | None,
        typer.Option(
            "--params",
            metavar="REGEX",
            help="Restrict spectral quantities to the parameters whose names fully match (repeatable), "
            "e.g. 'hidden\\.0\\..*'.",
            rich_help_panel=CURV,
        ),
    ] = None,
    per_layer: Annotated[
        bool,
        typer.Option(
            "--per-layer", help="Also each module's block, one run each (a table).", rich_help_panel=CURV
        ),
    ] = False,
    save_eigenvectors: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="Write the top-k eigenvectors as a direction file for lscape slice --directions.",
            rich_help_panel=CURV,
        ),
    ] = None,
    eig_method: Annotated[
        str,
        typer.Option(
            help="lambda_max by lanczos, or power iteration (seed 002; stopped on its residual, at most "
            "--max-iter products; not with --top-k > 1 or --lambda-min).",
            rich_help_panel=CURV,
        ),
    ] = "lanczos",
    hvp: Annotated[
        str,
        typer.Option(
            help="HVP strategy: auto (CPU: double_backward; else measure), measure (time all on this model and "
            "device, use the fastest), double_backward, fwd_rev, vmap.",
            rich_help_panel=CURV,
        ),
    ] = "auto",
    memory_budget: Annotated[
        float | None,
        typer.Option(
            metavar="MIB",
            callback=POSITIVE,
            help="Memory for kept gradient graphs (also bounds a chunk) [default: 2048; CUDA: half the free memory].",
            rich_help_panel=DATA,
        ),
    ] = None,
    retain_chunks: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Chunk graphs double_backward keeps between products; 0: least memory, every chunk recomputed "
            "[default: as many as fit --memory-budget].",
            rich_help_panel=DATA,
        ),
    ] = None,
    sharpness: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated radii EPS: random-direction sharpness S_max/S_mean (seed 003).",
            rich_help_panel=FLAT,
        ),
    ] = None,
    sharpness_kind: Annotated[
        str,
        typer.Option(
            help="l2 (||delta||=eps), filter (filter-normalised, eps relative) or adaptive (|theta|-scaled).",
            rich_help_panel=FLAT,
        ),
    ] = "l2",
    directions: Annotated[
        int, typer.Option(min=1, help="Random directions per radius.", rich_help_panel=FLAT)
    ] = 10,
    ascent_steps: Annotated[
        int,
        typer.Option(
            min=0,
            help="Worst-case sharpness by N steps of projected gradient ascent (SAM-style; 0: skip).",
            rich_help_panel=FLAT,
        ),
    ] = 0,
    bias: Annotated[
        str,
        typer.Option(
            help="Filter-normalised directions on biases/BN: zero, filter, keep.", rich_help_panel=FLAT
        ),
    ] = "zero",
    noise: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated sigmas: loss/accuracy under weight noise (seed 004).", rich_help_panel=FLAT
        ),
    ] = None,
    noise_samples: Annotated[
        int, typer.Option(min=2, help="Noise draws per sigma.", rich_help_panel=FLAT)
    ] = 10,
    magnitude_aware: Annotated[
        bool, typer.Option(help="Noise scaled by |theta| (also for --pac-bayes).", rich_help_panel=FLAT)
    ] = False,
    pac_bayes: Annotated[
        bool,
        typer.Option(
            "--pac-bayes",
            help="Largest sigma keeping the error rise under the target (Jiang et al. 2020).",
            rich_help_panel=FLAT,
        ),
    ] = False,
    pac_bayes_target: Annotated[
        float, typer.Option(callback=POSITIVE, help="Allowed rise for --pac-bayes.", rich_help_panel=FLAT)
    ] = 0.1,
    pac_bayes_metric: Annotated[str, typer.Option(help="error or loss.", rich_help_panel=FLAT)] = "error",
    stability: Annotated[
        bool, typer.Option("--stability", help="eta * lambda_max against 2 (seed 004).", rich_help_panel=FLAT)
    ] = False,
    split: SplitOpt = "train",
    num_batches: Annotated[
        int,
        typer.Option(
            min=1, help="Repeat on N disjoint batches; report mean/std/min/max.", rich_help_panel=DATA
        ),
    ] = 1,
    batch_size: Annotated[
        int | None, typer.Option(min=1, help="Samples per batch with --num-batches.", rich_help_panel=DATA)
    ] = None,
    samples: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Use only the first M samples of the split (as lscape train --track-samples).",
            rich_help_panel=DATA,
        ),
    ] = None,
    snapshot: Annotated[
        str | None,
        typer.Option(
            help="CHECKPOINT is a trajectory file: probe every snapshot (all) or those of the listed epochs.",
            rich_help_panel=DATA,
        ),
    ] = None,
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
    check: Annotated[
        list[str] | None,
        typer.Option(help="CI gate, e.g. 'lambda_max < 200' (repeatable); a failed check exits 3."),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Output JSON [CKPT.probe.json].")] = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    threads: ThreadsOpt = None,
) -> None:
    """Measure curvature and flatness at a checkpoint (default: --lambda-max --trace --frobenius --grad-norm).

    Writes CKPT.probe.json (every estimate with its method, budget, seed and uncertainty). Exit codes:
    0 ok, 1 error, 3 a --check failed.

    Example commands:

    \b
        lscape probe sample_checkpoints/mlp-d4-r000.safetensors --lambda-max --trace --json | jq .results.lambda_max
        lscape probe sample_checkpoints/mlp-d4-r000.safetensors --curvature ggn --per-layer --top-k 3
        lscape probe sample_checkpoints/mlp-d4-r000.safetensors --params 'hidden.0.*' --top-k 2 \\
            --save-eigenvectors top2.safetensors
    """  # noqa: D301 (\b keeps click from re-wrapping the examples)
    from lscape_cli.core.probe import ProbeRequest, check_budget

    t0 = time.perf_counter()
    checks = list(check or [])
    _validate(trace_method, sharpness_kind, bias, pac_bayes_metric, hvp, stop, curvature)
    _validate_power(eig_method, top_k, lambda_min)
    for expr in checks:
        _check_syntax(expr)
    out_path = out or default_output(checkpoint, "probe.json")
    outputs = [out_path] + ([Path(save_eigenvectors)] if save_eigenvectors is not None else [])
    refuse_overlap(outputs, [checkpoint, model_config, *user_files(model_def, data_file)])
    from lscape_cli.cli import _probe_curvature as pc

    pc.check_eigenvector_output(save_eigenvectors, num_batches, batch_size, snapshot is not None)
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
        samples=samples,
        trajectory=snapshot is not None,
        user=user_inputs(model_def, model_args, trust_model_def, data_file),
    )
    flags = [
        lambda_max,
        top_k > 0,
        lambda_min,
        trace,
        frobenius,
        density,
        grad_norm,
        bool(sharpness),
        bool(noise),
        pac_bayes,
        stability,
    ]
    default_set = not any(flags)
    pc.check_params(setup.loaded.module, params)
    training = setup.loaded.checkpoint.meta.get("training") or {}
    req = ProbeRequest(
        lambda_max=lambda_max
        or default_set
        or "lambda_max" in _refs(checks)
        or save_eigenvectors is not None,
        top_k=top_k,
        lambda_min=lambda_min,
        trace=trace or default_set,
        frobenius=frobenius or default_set,
        trace_method=trace_method,
        trace_matvecs=matvecs,
        density=density,
        density_runs=density_runs,
        density_steps=density_steps,
        grad_norm=grad_norm or default_set,
        sharpness_eps=parse_floats(sharpness, "--sharpness"),
        sharpness_kind=sharpness_kind,
        sharpness_directions=directions,
        sharpness_steps=ascent_steps,
        noise_sigmas=parse_floats(noise, "--noise"),
        noise_samples=noise_samples,
        magnitude_aware=magnitude_aware,
        pac_bayes=pac_bayes,
        pac_bayes_target=pac_bayes_target,
        pac_bayes_metric=pac_bayes_metric,
        stability=stability,
        lr=training.get("lr"),
        optimizer=training.get("optimizer"),
        momentum=float(training.get("momentum") or 0.0),
        tol=tol,
        eig_stop=stop,
        eig_method=eig_method,
        max_iter=max_iter,
        seed=seed,
        hvp_strategy=hvp,
        memory_budget_mib=memory_budget,
        retain_chunks=retain_chunks,
        bias=bias,
        curvature=curvature,
        fisher_samples=fisher_samples,
        params=tuple(params or ()),
        per_layer=per_layer,
        eigenvectors=save_eigenvectors is not None,
    )
    check_budget(req, setup.loaded.module, int(setup.y.shape[0]))
    t_load = time.perf_counter() - t0
    from lscape_cli.cli import invocation
    from lscape_cli.core.probe_batches import Batches, SplitData, probe_series, probe_split
    from lscape_cli.distributed import group_from_env
    from lscape_cli.storage.probe_record import write_probe
    from lscape_cli.storage.records import to_json

    data = SplitData(setup.loaded.module, setup.x, setup.y, setup.loss, setup.split, max_batch)
    batches = Batches(num_batches, batch_size, seed)
    with group_from_env(setup.device) as group:
        quiet = quiet or json_out or not group.is_main
        with StatusLine(quiet, "probe") as on_step:
            if snapshot is None:
                measured = probe_split(data, req, batches, group, on_step)
                results, scalars, vectors = measured.results, measured.scalars, measured.eigenvectors
            else:
                picked = setup.snapshots.select(snapshot)
                results, scalars = probe_series(data, setup.snapshots, picked, req, batches, group, on_step)
                vectors = None
    if not group.is_main:
        return
    t_measure = time.perf_counter() - t0 - t_load
    check_rows = [_evaluate(e, scalars) for e in checks]
    if check_rows:
        results["checks"] = check_rows
    record = write_probe(
        out_path,
        command=invocation(),
        checkpoint=checkpoint,
        req=req,
        batches=batches,
        setup=setup,
        results=results,
        timing={"load": t_load, "measure": t_measure},
        world_size=group.world_size,
    )
    if save_eigenvectors is not None and vectors is not None:
        pc.save_eigenvectors(save_eigenvectors, vectors, checkpoint, setup.loaded.spec.to_dict(), results)
    if json_out:
        emit_json(to_json(record))
    elif not quiet:
        print_table(results, scalars, out_path)
        if "per_layer" in results:
            pc.print_wide(pc.layer_table(results))
    failed = [c for c in check_rows if not c["passed"]]
    if failed:
        for c in failed:
            print(f"Check failed: {c['expr']} (values: {c['values']})", file=sys.stderr)
        raise typer.Exit(EXIT_CHECK_FAILED)


def _refs(checks: list[str]) -> set[str]:
    from lscape_cli.core import checks as chk

    return set().union(*(chk.referenced(e) for e in checks)) if checks else set()


def _evaluate(expr: str, scalars: dict[str, float | None]) -> dict[str, Any]:
    from lscape_cli.core import checks as chk

    try:
        return chk.evaluate(expr, scalars)
    except chk.CheckError as exc:
        raise LscapeError(str(exc), "--check", "compare finite quantities, e.g. 'lambda_max < 200'") from exc


def _check_syntax(expr: str) -> None:
    from lscape_cli.core import checks as chk

    try:
        chk.parse(expr)
    except chk.CheckError as exc:
        raise LscapeError(str(exc), "--check", "write a comparison such as 'lambda_max < 200'") from exc


def _validate(
    trace_method: str, kind: str, bias: str, metric: str, hvp: str, stop: str, curvature: str
) -> None:
    from lscape_cli.core import choices as ch

    ch.TraceMethod.check(trace_method, "--trace-method")
    ch.SharpnessKind.check(kind, "--sharpness-kind")
    ch.BiasPolicy.check(bias, "--bias")
    ch.PacBayesMetric.check(metric, "--pac-bayes-metric")
    ch.HvpStrategy.check(hvp, "--hvp")
    ch.EigStop.check(stop, "--stop")
    ch.CurvatureKind.check(curvature, "--curvature")


def _validate_power(eig_method: str, top_k: int, lambda_min: bool) -> None:
    from lscape_cli.core import choices as ch

    ch.EigMethod.check(eig_method, "--eig-method")
    if eig_method == "power" and (top_k > 1 or lambda_min):
        raise LscapeError(
            "power iteration gives lambda_max only",
            "--eig-method power",
            "drop --top-k/--lambda-min or use --eig-method lanczos",
        )
