"""`lscape train`: train R restarts of one model and write a self-describing checkpoint for each."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from lscape_cli.cli._train_report import Progress, print_summary
from lscape_cli.cli.console import emit_json
from lscape_cli.cli.options import (
    BETA,
    NONNEGATIVE,
    POSITIVE,
    DataFileOpt,
    DataRootOpt,
    DeviceOpt,
    DtypeOpt,
    JsonOpt,
    MaxBatchOpt,
    ModelArgsOpt,
    ModelDefOpt,
    OverwriteOpt,
    QuietOpt,
    SeedOpt,
    ThreadsOpt,
    data_root,
    file_stem,
    user_inputs,
)
from lscape_cli.errors import DivergedError, LscapeError

MODEL = "Model"
DATA = "Data"
OPTIM = "Optimisation"
STOP = "Stopping"
OUT = "Output"
TRACK = "Tracking (curvature during training)"


def _batch_size(value: str) -> int | None:
    if value == "full":
        return None
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise LscapeError(
            f"invalid batch size {value!r}", "--batch-size", "give a positive integer or 'full'"
        )
    return n


def _model_options(**opts: Any) -> dict[str, Any]:
    return {k: v for k, v in opts.items() if v is not None}


def train(
    model: Annotated[
        str,
        typer.Option(
            help="Architecture: mlp, cnn, resnet, linear, or torchvision:NAME (e.g. torchvision:resnet18).",
            rich_help_panel=MODEL,
        ),
    ] = "mlp",
    model_def: ModelDefOpt = None,
    model_args: ModelArgsOpt = None,
    depth: Annotated[
        int | None, typer.Option(min=1, max=1000, help="mlp: hidden layers [1].", rich_help_panel=MODEL)
    ] = None,
    width: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="mlp: units per hidden layer [48]; cnn: first conv channels [32]; resnet: first stage channels [16].",
            rich_help_panel=MODEL,
        ),
    ] = None,
    hidden: Annotated[
        int | None, typer.Option(min=1, help="cnn: units of the FC layer [128].", rich_help_panel=MODEL)
    ] = None,
    activation: Annotated[
        str | None, typer.Option(help="relu, tanh, gelu, sigmoid, leaky_relu [relu].", rich_help_panel=MODEL)
    ] = None,
    bias: Annotated[
        bool | None,
        typer.Option("--bias/--no-bias", help="Bias terms (mlp, cnn, linear) [on].", rich_help_panel=MODEL),
    ] = None,
    stages: Annotated[
        int | None, typer.Option(min=1, max=16, help="resnet: stages [2].", rich_help_panel=MODEL)
    ] = None,
    blocks: Annotated[
        int | None, typer.Option(min=1, max=1000, help="resnet: blocks per stage [1].", rich_help_panel=MODEL)
    ] = None,
    skip: Annotated[
        bool | None,
        typer.Option("--skip/--no-skip", help="resnet: residual connections [on].", rich_help_panel=MODEL),
    ] = None,
    batchnorm: Annotated[
        bool | None,
        typer.Option("--batchnorm/--no-batchnorm", help="resnet: BatchNorm [on].", rich_help_panel=MODEL),
    ] = None,
    init: Annotated[
        str,
        typer.Option(
            help="'default' (framework) or 'normal:STD' (seed 000: normal:1).", rich_help_panel=MODEL
        ),
    ] = "default",
    dataset: Annotated[
        str,
        typer.Option(
            help="digits, mnist-5k (offline), mnist, fashion-mnist, cifar10, torchvision:CLASS (torchvision), "
            "synthetic.",
            rich_help_panel=DATA,
        ),
    ] = "mnist-5k",
    split_seed: Annotated[
        int,
        typer.Option(min=0, max=2**31 - 1, help="Seed of the train/val/test split.", rich_help_panel=DATA),
    ] = 0,
    train_size: Annotated[
        int | None,
        typer.Option(min=1, help="Training samples [all left by the split].", rich_help_panel=DATA),
    ] = None,
    val_size: Annotated[
        int | None, typer.Option(min=0, help="Validation samples [dataset default].", rich_help_panel=DATA)
    ] = None,
    test_size: Annotated[
        int | None, typer.Option(min=0, help="Test samples [dataset default].", rich_help_panel=DATA)
    ] = None,
    normalization: Annotated[
        str, typer.Option(help="unit (pixels in [0,1]) or standard (train mean/std).", rich_help_panel=DATA)
    ] = "unit",
    input_dim: Annotated[
        int | None, typer.Option(min=1, help="synthetic: input features [20].", rich_help_panel=DATA)
    ] = None,
    num_samples: Annotated[
        int | None, typer.Option(min=3, help="synthetic: samples [2000].", rich_help_panel=DATA)
    ] = None,
    data_file: DataFileOpt = None,
    data_root_: DataRootOpt = None,
    download: Annotated[
        bool, typer.Option(help="Download a torchvision dataset if missing.", rich_help_panel=DATA)
    ] = False,
    loss: Annotated[
        str,
        typer.Option(
            help="ce, or mse (summed over outputs, one-hot targets; seed 000).", rich_help_panel=OPTIM
        ),
    ] = "ce",
    optimizer: Annotated[str, typer.Option(help="sgd, adam or adamw.", rich_help_panel=OPTIM)] = "sgd",
    lr: Annotated[
        float, typer.Option(callback=NONNEGATIVE, help="Learning rate (>= 0).", rich_help_panel=OPTIM)
    ] = 0.01,
    momentum: Annotated[
        float, typer.Option(callback=BETA, help="sgd momentum, in [0, 1).", rich_help_panel=OPTIM)
    ] = 0.0,
    nesterov: Annotated[bool, typer.Option(help="sgd: Nesterov momentum.", rich_help_panel=OPTIM)] = False,
    beta1: Annotated[
        float, typer.Option(callback=BETA, help="adam/adamw beta1, in [0, 1).", rich_help_panel=OPTIM)
    ] = 0.9,
    beta2: Annotated[
        float, typer.Option(callback=BETA, help="adam/adamw beta2, in [0, 1).", rich_help_panel=OPTIM)
    ] = 0.999,
    weight_decay: Annotated[
        float,
        typer.Option(
            callback=NONNEGATIVE,
            help="L2 (sgd, adam) or decoupled (adamw) weight decay.",
            rich_help_panel=OPTIM,
        ),
    ] = 0.0,
    batch_size: Annotated[
        str, typer.Option(help="Minibatch size, or 'full' for full-batch steps.", rich_help_panel=OPTIM)
    ] = "128",
    epochs: Annotated[
        int, typer.Option(min=1, help="Epoch budget (full batch: steps).", rich_help_panel=STOP)
    ] = 10,
    max_steps: Annotated[int | None, typer.Option(min=1, help="Step budget.", rich_help_panel=STOP)] = None,
    schedule: Annotated[
        str,
        typer.Option(
            help="Learning-rate schedule: constant, step:EVERY:GAMMA (epochs), cosine, linear-warmup:STEPS+cosine.",
            rich_help_panel=OPTIM,
        ),
    ] = "constant",
    tol: Annotated[
        float | None,
        typer.Option(
            callback=POSITIVE,
            help="Stop when |train loss change between epochs| < TOL (seed 000: 1e-6 with --batch-size full).",
            rich_help_panel=STOP,
        ),
    ] = None,
    tol_rule: Annotated[
        str,
        typer.Option(
            help="--tol rule: step (|l_e - l_e-1| < TOL) or window:K (relative change of K-epoch mean loss < TOL).",
            rich_help_panel=STOP,
        ),
    ] = "step",
    grad_tol: Annotated[
        float | None,
        typer.Option(help="Stop when the epoch's mean gradient norm < GRAD_TOL.", rich_help_panel=STOP),
    ] = None,
    restore_best: Annotated[
        bool,
        typer.Option(
            "--restore-best",
            help="Save the best validation epoch's state, not the last.",
            rich_help_panel=STOP,
        ),
    ] = False,
    patience: Annotated[
        int | None,
        typer.Option(
            min=1, help="Stop after this many evaluations without val-loss improvement.", rich_help_panel=STOP
        ),
    ] = None,
    min_delta: Annotated[
        float,
        typer.Option(
            callback=NONNEGATIVE, help="Val-loss improvement that resets --patience.", rich_help_panel=STOP
        ),
    ] = 0.0,
    eval_every: Annotated[
        int,
        typer.Option(
            min=1, help="Evaluate all splits every N epochs (and at the end).", rich_help_panel=STOP
        ),
    ] = 1,
    track: Annotated[
        str | None,
        typer.Option(
            help="Probe during training, e.g. lambda_max,top_k:3,trace,frobenius,grad_norm,sharpness:0.05,noise:0.01.",
            rich_help_panel=TRACK,
        ),
    ] = None,
    track_every: Annotated[
        int, typer.Option(min=1, help="Track every N epochs (and the first and last).", rich_help_panel=TRACK)
    ] = 1,
    track_split: Annotated[str, typer.Option(help="Split to track on.", rich_help_panel=TRACK)] = "train",
    track_samples: Annotated[
        int | None,
        typer.Option(min=1, help="Track on the first M samples of the split [all].", rich_help_panel=TRACK),
    ] = None,
    track_seed: Annotated[
        int, typer.Option(help="Seed of the tracked estimators.", rich_help_panel=TRACK)
    ] = 0,
    restarts: Annotated[
        int,
        typer.Option(
            min=1,
            help="Independent runs, seeds seed..seed+R-1, trained together.",
            rich_help_panel=OUT,
        ),
    ] = 1,
    shard: Annotated[
        str | None,
        typer.Option(
            help="I/N: train only shard I (0-based) of N of the restarts (separate processes or array jobs).",
            rich_help_panel=OUT,
        ),
    ] = None,
    seed: SeedOpt = 0,
    out: Annotated[
        Path, typer.Option(help="Output directory (created with its parents).", rich_help_panel=OUT)
    ] = Path("run"),
    name: Annotated[
        str,
        typer.Option(
            callback=file_stem,
            help="File stem: NAME.safetensors, or NAME-r000... with restarts.",
            rich_help_panel=OUT,
        ),
    ] = "model",
    save_trajectory: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Snapshot parameters every N epochs into NAME.trajectory.safetensors (for PCA slices).",
            rich_help_panel=OUT,
        ),
    ] = None,
    overwrite: OverwriteOpt = False,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "float32",
    max_batch: MaxBatchOpt = 4096,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    threads: ThreadsOpt = None,
) -> None:
    """Train a model (R restarts at once) and write one self-describing checkpoint + train record per restart.

    Outputs in OUT: NAME.safetensors (weights + metadata to rebuild the model), NAME.train.json (config,
    per-epoch history, final metrics), NAME.trajectory.safetensors with --save-trajectory. A diverged
    restart is recorded in its JSON, gets no checkpoint, and the command exits 1.

    \b
    Example:
        lscape train --model mlp --depth 4 --width 48 --dataset mnist-5k --loss mse --optimizer adam --lr 1e-3 --restarts 3 --out runs/d4
        # seed 003: lambda_max during training, small vs large batch
        lscape train --model cnn --optimizer sgd --lr 0.05 --batch-size 64 --epochs 20 --track lambda_max --track-every 2 --out runs/b64
        lscape train --model cnn --optimizer sgd --lr 0.05 --batch-size 2048 --epochs 20 --track lambda_max --track-every 2 --out runs/b2048
    """  # noqa: D301 (a literal \b keeps Click from re-wrapping the examples)
    from lscape_cli.core.objective import LOSSES
    from lscape_cli.core.tracking import make_spec
    from lscape_cli.core.train_rules import parse_schedule, parse_tol_rule
    from lscape_cli.core.training import OPTIMIZERS, TrainConfig, shard_restarts

    if loss not in LOSSES:
        raise LscapeError(f"unknown loss {loss!r}", "--loss", f"choose one of: {', '.join(LOSSES)}")
    if optimizer not in OPTIMIZERS:
        raise LscapeError(
            f"unknown optimizer {optimizer!r}", "--optimizer", f"choose one of: {', '.join(OPTIMIZERS)}"
        )
    if init != "default" and not _valid_init(init):
        raise LscapeError(f"invalid init {init!r}", "--init", "use 'default' or 'normal:STD', e.g. normal:1")
    from lscape_cli.storage.train_record import check_outputs

    chosen = _parsed(shard_restarts, "--shard", restarts, shard)
    check_outputs(out, name, restarts, save_trajectory is not None, overwrite, chosen)
    cfg = TrainConfig(
        loss=loss,
        optimizer=optimizer,
        lr=lr,
        momentum=momentum,
        nesterov=nesterov,
        beta1=beta1,
        beta2=beta2,
        weight_decay=weight_decay,
        batch_size=_batch_size(batch_size),
        epochs=epochs,
        max_steps=max_steps,
        tol=tol,
        tol_rule=_checked(parse_tol_rule, "--tol-rule", tol_rule),
        grad_tol=grad_tol,
        schedule=_checked(parse_schedule, "--schedule", schedule),
        restore_best=restore_best,
        patience=patience,
        min_delta=min_delta,
        eval_every=eval_every,
        trajectory_every=save_trajectory,
        init=init,
        max_batch=max_batch,
    )
    model_opts = _model_options(
        depth=depth,
        width=width,
        hidden=hidden,
        activation=activation,
        bias=bias,
        stages=stages,
        blocks=blocks,
        skip=skip,
        batchnorm=batchnorm,
    )
    from lscape_cli.datasets import DatasetSpec

    dspec = DatasetSpec(
        name="file" if data_file else dataset,
        path=str(data_file.resolve()) if data_file else None,
        split_seed=split_seed,
        train_size=train_size,
        val_size=val_size,
        test_size=test_size,
        normalization=normalization,
        input_dim=input_dim,
        num_samples=num_samples,
    )
    track_spec = None
    if track is not None:
        track_spec = _parsed(make_spec, "--track", track, track_every, track_split, track_samples, track_seed)
    run_training(
        model,
        model_opts,
        dspec,
        cfg,
        seed=seed,
        restarts=restarts,
        chosen=chosen,
        track_spec=track_spec,
        out=out,
        name=name,
        root=data_root(data_root_),
        download=download,
        device_name=device,
        dtype_name=dtype,
        json_out=json_out,
        quiet=quiet or json_out,
        user=user_inputs(model_def, model_args, False, data_file),
    )


def _parsed(fn: Any, option: str, *args: Any) -> Any:
    """``fn(*args)``, its ValueError as the one-line error about ``option``."""
    try:
        return fn(*args)
    except ValueError as exc:
        raise LscapeError(str(exc), option, f"see lscape train --help for {option}") from exc


def _checked(parse: Any, option: str, text: str) -> str:
    """``text`` once ``parse`` accepts it (the config keeps the text, the engine parses it again)."""
    _parsed(parse, option, text)
    return text


def _valid_init(init: str) -> bool:
    kind, _, arg = init.partition(":")
    try:
        return kind == "normal" and math.isfinite(float(arg)) and float(arg) > 0
    except ValueError:
        return False


def run_training(
    model_name: str,
    model_opts: dict[str, Any],
    dspec: Any,
    cfg: Any,
    *,
    seed: int,
    restarts: int,
    chosen: range,
    track_spec: Any,
    out: Path,
    name: str,
    root: Path,
    download: bool,
    device_name: str,
    dtype_name: str,
    json_out: bool,
    quiet: bool,
    user: Any = None,
) -> None:
    """Load data, build the model, train, write every file, report."""
    from lscape_cli import datasets, models
    from lscape_cli.core import budget
    from lscape_cli.core.tracking import make_tracker
    from lscape_cli.core.training import relabel, train_restarts
    from lscape_cli.runtime import resolve_device, resolve_dtype
    from lscape_cli.storage.train_record import output_stems

    t0 = time.perf_counter()
    device, dtype = resolve_device(device_name), resolve_dtype(dtype_name)
    if download:
        datasets.download(dspec.name, root)
    budget.check(budget.synthetic_demands(dspec.num_samples, dspec.input_dim), device)
    splits = datasets.load(dspec, root, device=device, dtype=dtype)
    splits.check_loss(cfg.loss)
    if (cfg.patience is not None or cfg.restore_best) and splits.sizes()["val"] == 0:
        raise LscapeError(
            "--patience and --restore-best need a validation split",
            "--val-size 0",
            "give --val-size > 0 or drop them",
        )
    tracker = None if track_spec is None else _parsed(make_tracker, "--track-split", track_spec, splits, cfg)
    mspec, module, initial_state, notes = _model_for(model_name, model_opts, user, splits, cfg)
    size = budget.Problem.of(module, splits.sizes()["train"])
    every, batch = cfg.trajectory_every, cfg.batch_size or size.num_samples
    budget.check(budget.training_demands(restarts, cfg.epochs, cfg.max_steps, batch, every, size), device)
    stems = output_stems(out, name, restarts, chosen)  # after the budget: a huge --restarts is refused first
    t_setup = time.perf_counter() - t0
    seeds = [seed + r for r in chosen]
    with Progress(quiet, cfg.epochs, len(chosen)) as on_epoch:
        results = train_restarts(
            module,
            splits,
            cfg,
            seeds,
            device,
            dtype,
            on_epoch=on_epoch,
            tracker=tracker,
            initial_state=initial_state,
        )
    results = relabel(results, chosen)
    t_train = time.perf_counter() - t0 - t_setup
    context = {
        "model": mspec.to_dict(),
        "dataset": splits.describe(),
        "cfg": cfg,
        "device": str(device),
        "dtype": dtype_name,
        "restarts": restarts,
        "base_seed": seed,
        "num_parameters": models.num_parameters(module),
        "warnings": notes,
        "tracking": None if tracker is None else tracker.describe(),
        "tracking_s": sum(r.tracking_s for r in results),
    }
    from lscape_cli.cli import invocation
    from lscape_cli.storage.train_record import write_run

    texts = [
        write_run(res, stem, context, {"setup": t_setup, "train": t_train}, invocation())
        for res, stem in zip(results, stems, strict=True)
    ]
    if json_out:
        for text in texts:
            emit_json(text)  # one record per line (JSON Lines)
    if not quiet:
        print_summary(results, stems, splits.task)
    _final_status(results)


def _model_for(name: str, opts: dict[str, Any], user: Any, splits: Any, cfg: Any) -> tuple[Any, ...]:
    """``(spec, module, initial_state, warnings)``: a registry model, or the user's (``--model-def``)."""
    from lscape_cli import models, usermodel

    source = user.model_def if user is not None and user.model_def else None
    if name.startswith("torchvision:"):
        source = source or name
    if source is None:
        if user is not None and user.model_args:
            raise LscapeError(
                "--model-args is for --model-def and torchvision models",
                "--model-args",
                "registry models take --depth, --width, ...",
            )
        mspec = models.make_spec(
            name, {**opts, "input_shape": splits.input_shape, "num_classes": splits.num_classes}
        )
        _check_model_size(mspec, splits)
        return mspec, models.build(mspec), None, []
    if opts:
        raise LscapeError(
            f"--{next(iter(opts))} applies to the registry models, not to {source}",
            "--model-def",
            "pass the model's own arguments with --model-args JSON",
        )
    kwargs = usermodel.parse_kwargs(user.model_args if user is not None else None)
    tm = usermodel.for_training(source, kwargs, splits, cfg.loss, cfg.init)
    return tm.spec, tm.module, tm.initial_state, tm.notes


def _check_model_size(mspec: Any, splits: Any) -> None:
    """Refuse a registry model too large for the device, counted on the meta device before building it."""
    from lscape_cli import models
    from lscape_cli.core import budget

    x = splits.x["train"]
    n = budget.num_parameters_of(lambda: models.build(mspec))
    budget.check([budget.model_demand(n, x.element_size())], x.device)


def _final_status(results: list[Any]) -> None:
    diverged = [r for r in results if r.stop_reason == "diverged"]
    if diverged:
        which = ", ".join(f"{r.restart} (step {r.steps})" for r in diverged)
        raise DivergedError(
            f"{len(diverged)} of {len(results)} restart(s) diverged: non-finite training loss",
            f"restart {which}",
            "lower --lr or change --init"
            + (
                "; the other restarts were saved" if len(diverged) < len(results) else "; nothing was written"
            ),
            keep_outputs=len(diverged) < len(results),
        )
    if any(r.stop_reason == "interrupted" for r in results):
        from lscape_cli.cli import EXIT_INTERRUPTED, fail

        raise fail(
            "training interrupted: nothing was written and previous files are unchanged (run it again)",
            EXIT_INTERRUPTED,
        )
