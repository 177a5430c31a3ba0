"""`lscape train`: train R restarts of one model and write a self-describing checkpoint for each."""

from __future__ import annotations

from pathlib import Path

from lscape_cli.cli import _train_model_options as m
from lscape_cli.cli import _train_options as o
from lscape_cli.cli._train_request import (
    batch_size_of,
    check_choices,
    checked,
    model_options,
    parsed,
    training_loss,
)
from lscape_cli.cli._train_run import run_training
from lscape_cli.cli.options import (
    DataFileOpt,
    DataRootOpt,
    DeviceOpt,
    DtypeOpt,
    JsonOpt,
    LossDefOpt,
    MaxBatchOpt,
    ModelArgsOpt,
    ModelDefOpt,
    OutputOpt,
    OverwriteOpt,
    QuietOpt,
    SeedOpt,
    ThreadsOpt,
    data_root,
    user_inputs,
)
from lscape_cli.storage.files import allow_overwrite


def train(
    model: m.ModelOpt = "mlp",
    model_def: ModelDefOpt = None,
    model_args: ModelArgsOpt = None,
    output: OutputOpt = None,
    depth: m.DepthOpt = None,
    width: m.WidthOpt = None,
    hidden: m.HiddenOpt = None,
    activation: m.ActivationOpt = None,
    bias: m.BiasOpt = None,
    stages: m.StagesOpt = None,
    blocks: m.BlocksOpt = None,
    skip: m.SkipOpt = None,
    batchnorm: m.BatchnormOpt = None,
    init: m.InitOpt = "default",
    dataset: o.DatasetOpt = "mnist-5k",
    split_seed: o.SplitSeedOpt = 0,
    train_size: o.TrainSizeOpt = None,
    val_size: o.ValSizeOpt = None,
    test_size: o.TestSizeOpt = None,
    normalization: o.NormalizationOpt = "unit",
    image_size: o.ImageSizeOpt = None,
    input_dim: o.InputDimOpt = None,
    num_samples: o.NumSamplesOpt = None,
    data_file: DataFileOpt = None,
    data_root_: DataRootOpt = None,
    download: o.DownloadOpt = False,
    loss: o.LossOpt = "ce",
    loss_def: LossDefOpt = None,
    optimizer: o.OptimizerOpt = "sgd",
    lr: o.LrOpt = 0.01,
    momentum: o.MomentumOpt = 0.0,
    nesterov: o.NesterovOpt = False,
    beta1: o.Beta1Opt = 0.9,
    beta2: o.Beta2Opt = 0.999,
    weight_decay: o.WeightDecayOpt = 0.0,
    batch_size: o.BatchSizeOpt = "128",
    epochs: o.EpochsOpt = 10,
    max_steps: o.MaxStepsOpt = None,
    schedule: o.ScheduleOpt = "constant",
    tol: o.TolOpt = None,
    tol_rule: o.TolRuleOpt = "step",
    grad_tol: o.GradTolOpt = None,
    restore_best: o.RestoreBestOpt = False,
    patience: o.PatienceOpt = None,
    min_delta: o.MinDeltaOpt = 0.0,
    eval_every: o.EvalEveryOpt = 1,
    track: o.TrackOpt = None,
    track_every: o.TrackEveryOpt = 1,
    track_split: o.TrackSplitOpt = "train",
    track_samples: o.TrackSamplesOpt = None,
    track_seed: o.TrackSeedOpt = 0,
    restarts: o.RestartsOpt = 1,
    shard: o.ShardOpt = None,
    seed: SeedOpt = 0,
    out: o.OutOpt = Path("run"),
    name: o.NameOpt = "model",
    save_trajectory: o.SaveTrajectoryOpt = None,
    overwrite: OverwriteOpt = False,
    resume: o.ResumeOpt = False,
    resume_every: o.ResumeEveryOpt = 30.0,
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
    restart is recorded in its JSON, gets no checkpoint, and the command exits 1. While it trains, the
    run keeps OUT/NAME.resume.pt (every --resume-every seconds, at the end of an epoch); after Ctrl-C or
    a kill, the same command with --resume continues from it (removed when the run finishes).

    File names: one restart writes NAME.*; --restarts R > 1 writes NAME-r000.* ... NAME-rNNN.* (restart
    index, three digits or more) and no NAME.safetensors, so later commands take e.g.
    OUT/NAME-r000.safetensors.

    \b
    Example:
        lscape train --model mlp --depth 4 --width 48 --dataset mnist-5k --loss mse --optimizer adam --lr 1e-3 --restarts 3 --out runs/d4
        # seed 003: lambda_max during training, small vs large batch
        lscape train --model cnn --optimizer sgd --lr 0.05 --batch-size 64 --epochs 20 --track lambda_max --track-every 2 --out runs/b64
        lscape train --model cnn --optimizer sgd --lr 0.05 --batch-size 2048 --epochs 20 --track lambda_max --track-every 2 --out runs/b2048
        # killed or interrupted? the same command with --resume continues where it stopped
        lscape train --model cnn --epochs 200 --resume-every 60 --out runs/long --resume
    """  # noqa: D301 (a literal \b keeps Click from re-wrapping the examples)
    allow_overwrite(overwrite)
    from lscape_cli.core.training.engine import TrainConfig, shard_restarts
    from lscape_cli.core.training.tracking import check_split, make_spec
    from lscape_cli.core.training.train_rules import parse_schedule, parse_tol_rule

    check_choices(loss, optimizer, init)
    loss_notes: list[str] = []
    loss_spec = training_loss(loss, loss_def, loss_notes)
    from lscape_cli.storage.train_record import check_outputs
    from lscape_cli.storage.train_resume import resume_path

    chosen = parsed(shard_restarts, "--shard", restarts, shard)
    check_outputs(out, name, restarts, save_trajectory is not None, overwrite, chosen)
    cfg = TrainConfig(
        loss=loss_spec,
        optimizer=optimizer,
        lr=lr,
        momentum=momentum,
        nesterov=nesterov,
        beta1=beta1,
        beta2=beta2,
        weight_decay=weight_decay,
        batch_size=batch_size_of(batch_size),
        epochs=epochs,
        max_steps=max_steps,
        tol=tol,
        tol_rule=checked(parse_tol_rule, "--tol-rule", tol_rule),
        grad_tol=grad_tol,
        schedule=checked(parse_schedule, "--schedule", schedule),
        restore_best=restore_best,
        patience=patience,
        min_delta=min_delta,
        eval_every=eval_every,
        trajectory_every=save_trajectory,
        init=init,
        max_batch=max_batch,
    )
    model_opts = model_options(
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
        image_size=image_size,
        input_dim=input_dim,
        num_samples=num_samples,
    )
    track_spec = None
    if track is not None:
        parsed(check_split, "--track-split", track_split)
        track_spec = parsed(make_spec, "--track", track, track_every, track_split, track_samples, track_seed)
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
        user=user_inputs(model_def, model_args, False, data_file, loss_def, output),
        notes=loss_notes,
        resume=(resume, resume_every, resume_path(out, name, shard)),
    )
