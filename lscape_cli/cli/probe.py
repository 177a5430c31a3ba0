"""`lscape probe`: curvature and flatness of one checkpoint -> CKPT.probe.json."""

from __future__ import annotations

import dataclasses
import time

import typer

from lscape_cli.cli import _probe_options as o
from lscape_cli.cli import _probe_request as rq
from lscape_cli.cli import options as uo
from lscape_cli.cli._probe_report import print_failed, print_results
from lscape_cli.cli.common import parse_floats
from lscape_cli.cli.console import StatusLine, emit_json, warn
from lscape_cli.cli.options import (
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
    OverwriteOpt,
    QuietOpt,
    SeedOpt,
    SplitOpt,
    ThreadsOpt,
    TrustModelDefOpt,
    data_root,
    user_inputs,
)
from lscape_cli.cli.process import EXIT_CHECK_FAILED


def probe(
    checkpoint: o.CheckpointArg,
    lambda_max: o.LambdaMaxOpt = False,
    top_k: o.TopKOpt = 0,
    lambda_min: o.LambdaMinOpt = False,
    trace: o.TraceOpt = False,
    frobenius: o.FrobeniusOpt = False,
    trace_method: o.TraceMethodOpt = "krylov-hutch++",
    matvecs: o.MatvecsOpt = 45,
    density: o.DensityOpt = False,
    density_runs: o.DensityRunsOpt = 10,
    density_steps: o.DensityStepsOpt = 80,
    grad_norm: o.GradNormOpt = False,
    tol: o.TolOpt = 1e-6,
    max_iter: o.MaxIterOpt = 200,
    stop: o.StopOpt = "bound",
    curvature: o.CurvatureOpt = "hessian",
    fisher_samples: o.FisherSamplesOpt = 1,
    params: o.ParamsOpt = None,
    per_layer: o.PerLayerOpt = False,
    save_eigenvectors: o.SaveEigenvectorsOpt = None,
    eig_method: o.EigMethodOpt = "lanczos",
    hvp: o.HvpOpt = "auto",
    memory_budget: o.MemoryBudgetOpt = None,
    retain_chunks: o.RetainChunksOpt = None,
    sharpness: o.SharpnessOpt = None,
    sharpness_kind: o.SharpnessKindOpt = "l2",
    directions: o.DirectionsOpt = 10,
    ascent_steps: o.AscentStepsOpt = 0,
    bias: o.BiasOpt = "zero",
    noise: o.NoiseOpt = None,
    noise_samples: o.NoiseSamplesOpt = 10,
    magnitude_aware: o.MagnitudeAwareOpt = False,
    pac_bayes: o.PacBayesOpt = False,
    pac_bayes_target: o.PacBayesTargetOpt = 0.1,
    pac_bayes_metric: o.PacBayesMetricOpt = "error",
    pac_bayes_delta: o.PacBayesDeltaOpt = 0.05,
    stability: o.StabilityOpt = False,
    split: SplitOpt = "train",
    num_batches: o.NumBatchesOpt = 1,
    batch_size: o.BatchSizeOpt = None,
    samples: o.SamplesOpt = None,
    snapshot: o.SnapshotOpt = None,
    mode: ModeOpt = "eval",
    loss: LossOverrideOpt = None,
    dataset: DatasetOverrideOpt = None,
    data_root_: DataRootOpt = None,
    model_config: ModelConfigOpt = None,
    model_def: ModelDefOpt = None,
    model_args: ModelArgsOpt = None,
    output: uo.OutputOpt = None,
    loss_def: uo.LossDefOpt = None,
    trust_model_def: TrustModelDefOpt = False,
    data_file: DataFileOpt = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "float32",
    max_batch: MaxBatchOpt = 4096,
    check: o.CheckOpt = None,
    out: o.OutOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    overwrite: OverwriteOpt = False,
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
    from lscape_cli.core.probe.engine import ProbeRequest, check_budget

    t0 = time.perf_counter()
    checks = list(check or [])
    rq.validate(trace_method, sharpness_kind, bias, pac_bayes_metric, hvp, stop, curvature)
    rq.validate_power(eig_method, top_k, lambda_min)
    for expr in checks:
        rq.check_syntax(expr)
    user = user_inputs(model_def, model_args, trust_model_def, data_file, loss_def, output)
    out_path = rq.output_path(out, checkpoint, save_eigenvectors, model_config, user, overwrite)
    from lscape_cli.cli import _probe_curvature as pc

    pc.check_eigenvector_output(save_eigenvectors, num_batches, batch_size, snapshot is not None)
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
        samples=samples,
        trajectory=snapshot is not None,
        user=user,
        on_warning=warn,
    )
    pc.check_params(setup.loaded.module, params)
    training = setup.loaded.checkpoint.meta.get("training") or {}
    req = ProbeRequest(
        lambda_max=lambda_max,
        top_k=top_k,
        lambda_min=lambda_min,
        trace=trace,
        frobenius=frobenius,
        trace_method=trace_method,
        trace_matvecs=matvecs,
        density=density,
        density_runs=density_runs,
        density_steps=density_steps,
        grad_norm=grad_norm,
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
        pac_bayes_delta=pac_bayes_delta,
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
    ).with_defaults()
    if "lambda_max" in rq.refs(checks) or save_eigenvectors is not None:  # what they need
        req = dataclasses.replace(req, lambda_max=True)
    check_budget(req, setup.loaded.module, int(setup.y.shape[0]))
    known = rq.check_measured(checks, req, setup.y)
    t_load = time.perf_counter() - t0
    from lscape_cli.cli.process import invocation
    from lscape_cli.core.probe.batches import Batches, SplitData, probe_series, probe_split
    from lscape_cli.distributed import group_from_env
    from lscape_cli.storage.probe_record import write_probe
    from lscape_cli.storage.records import to_json

    prior = rq.pac_bayes_prior(setup) if pac_bayes else None
    data = SplitData(setup.loaded.module, setup.x, setup.y, setup.loss, setup.split, max_batch, prior)
    batches = Batches(num_batches, batch_size, seed)
    with group_from_env(setup.device) as group:
        quiet = quiet or json_out or not group.is_main
        with StatusLine(quiet, "probe") as on_step:
            if snapshot is None:
                measured = probe_split(data, req, batches, group, on_step)
                results, scalars, vectors = measured.results, measured.scalars, measured.eigenvectors
            else:
                assert setup.snapshots is not None  # a trajectory input (snapshot given) loads them
                picked = setup.snapshots.select(snapshot)
                results, scalars = probe_series(data, setup.snapshots, picked, req, batches, group, on_step)
                vectors = None
    if not group.is_main:
        return
    t_measure = time.perf_counter() - t0 - t_load
    check_rows = [rq.evaluate(e, scalars, known) for e in checks]
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
        print_results(results, scalars, out_path)
    if print_failed(check_rows):
        raise typer.Exit(EXIT_CHECK_FAILED)
