"""Option declarations of `lscape train` (flags, defaults and help text), one alias per option."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lscape_cli.cli.options import BETA, NONNEGATIVE, POSITIVE, SEED_MAX, file_stem

DATA = "Data"
OPTIM = "Optimisation"
STOP = "Stopping"
OUT = "Output"
TRACK = "Tracking (curvature during training)"

DatasetOpt = Annotated[
    str,
    typer.Option(
        help="digits, mnist-5k (offline), mnist, fashion-mnist, cifar10, torchvision:CLASS (torchvision), "
        "synthetic.",
        rich_help_panel=DATA,
    ),
]
SplitSeedOpt = Annotated[
    int,
    typer.Option(min=0, max=SEED_MAX, help="Seed of the train/val/test split.", rich_help_panel=DATA),
]
TrainSizeOpt = Annotated[
    int | None,
    typer.Option(min=1, help="Training samples [all left by the split].", rich_help_panel=DATA),
]
ValSizeOpt = Annotated[
    int | None, typer.Option(min=0, help="Validation samples [dataset default].", rich_help_panel=DATA)
]
TestSizeOpt = Annotated[
    int | None, typer.Option(min=0, help="Test samples [dataset default].", rich_help_panel=DATA)
]
NormalizationOpt = Annotated[
    str, typer.Option(help="unit (pixels in [0,1]) or standard (train mean/std).", rich_help_panel=DATA)
]
ImageSizeOpt = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="--data DIR of class folders: resize the shorter side to S and centre-crop SxS [32].",
        rich_help_panel=DATA,
    ),
]
InputDimOpt = Annotated[
    int | None, typer.Option(min=1, help="synthetic: input features [20].", rich_help_panel=DATA)
]
NumSamplesOpt = Annotated[
    int | None, typer.Option(min=3, help="synthetic: samples [2000].", rich_help_panel=DATA)
]
DownloadOpt = Annotated[
    bool, typer.Option(help="Download a torchvision dataset if missing.", rich_help_panel=DATA)
]
LossOpt = Annotated[
    str,
    typer.Option(
        help="ce (mean over samples, or over non-padding tokens for (N, T) targets), mse (summed over "
        "outputs, one-hot targets; seed 000), bce (multi-label), or ce:label_smoothing=0.1.",
        rich_help_panel=OPTIM,
    ),
]
OptimizerOpt = Annotated[str, typer.Option(help="sgd, adam or adamw.", rich_help_panel=OPTIM)]
LrOpt = Annotated[
    float, typer.Option(callback=NONNEGATIVE, help="Learning rate (>= 0).", rich_help_panel=OPTIM)
]
MomentumOpt = Annotated[
    float, typer.Option(callback=BETA, help="sgd momentum, in [0, 1).", rich_help_panel=OPTIM)
]
NesterovOpt = Annotated[bool, typer.Option(help="sgd: Nesterov momentum.", rich_help_panel=OPTIM)]
Beta1Opt = Annotated[
    float, typer.Option(callback=BETA, help="adam/adamw beta1, in [0, 1).", rich_help_panel=OPTIM)
]
Beta2Opt = Annotated[
    float, typer.Option(callback=BETA, help="adam/adamw beta2, in [0, 1).", rich_help_panel=OPTIM)
]
WeightDecayOpt = Annotated[
    float,
    typer.Option(
        callback=NONNEGATIVE,
        help="L2 (sgd, adam) or decoupled (adamw) weight decay.",
        rich_help_panel=OPTIM,
    ),
]
BatchSizeOpt = Annotated[
    str, typer.Option(help="Minibatch size, or 'full' for full-batch steps.", rich_help_panel=OPTIM)
]
EpochsOpt = Annotated[
    int, typer.Option(min=1, help="Epoch budget (full batch: steps).", rich_help_panel=STOP)
]
MaxStepsOpt = Annotated[int | None, typer.Option(min=1, help="Step budget.", rich_help_panel=STOP)]
ScheduleOpt = Annotated[
    str,
    typer.Option(
        help="Learning-rate schedule: constant, step:EVERY:GAMMA (epochs), cosine, linear-warmup:STEPS+cosine.",
        rich_help_panel=OPTIM,
    ),
]
TolOpt = Annotated[
    float | None,
    typer.Option(
        callback=POSITIVE,
        help="Stop when |train loss change between epochs| < TOL (seed 000: 1e-6 with --batch-size full).",
        rich_help_panel=STOP,
    ),
]
TolRuleOpt = Annotated[
    str,
    typer.Option(
        help="--tol rule: step (|l_e - l_e-1| < TOL) or window:K (relative change of K-epoch mean loss < TOL).",
        rich_help_panel=STOP,
    ),
]
GradTolOpt = Annotated[
    float | None,
    typer.Option(
        callback=POSITIVE,
        help="Stop when the epoch's mean gradient norm < GRAD_TOL (> 0).",
        rich_help_panel=STOP,
    ),
]
RestoreBestOpt = Annotated[
    bool,
    typer.Option(
        "--restore-best",
        help="Save the best validation epoch's state, not the last.",
        rich_help_panel=STOP,
    ),
]
PatienceOpt = Annotated[
    int | None,
    typer.Option(
        min=1, help="Stop after this many evaluations without val-loss improvement.", rich_help_panel=STOP
    ),
]
MinDeltaOpt = Annotated[
    float,
    typer.Option(
        callback=NONNEGATIVE, help="Val-loss improvement that resets --patience.", rich_help_panel=STOP
    ),
]
EvalEveryOpt = Annotated[
    int,
    typer.Option(min=1, help="Evaluate all splits every N epochs (and at the end).", rich_help_panel=STOP),
]
TrackOpt = Annotated[
    str | None,
    typer.Option(
        help="Probe during training, e.g. lambda_max,top_k:3,trace,frobenius,grad_norm,sharpness:0.05,noise:0.01.",
        rich_help_panel=TRACK,
    ),
]
TrackEveryOpt = Annotated[
    int, typer.Option(min=1, help="Track every N epochs (and the first and last).", rich_help_panel=TRACK)
]
TrackSplitOpt = Annotated[str, typer.Option(help="Split to track on.", rich_help_panel=TRACK)]
TrackSamplesOpt = Annotated[
    int | None,
    typer.Option(min=1, help="Track on the first M samples of the split [all].", rich_help_panel=TRACK),
]
TrackSeedOpt = Annotated[
    int,
    typer.Option(min=0, max=SEED_MAX, help="Seed of the tracked estimators.", rich_help_panel=TRACK),
]
RestartsOpt = Annotated[
    int,
    typer.Option(
        min=1,
        help="Independent runs, seeds seed..seed+R-1, trained together; R > 1 names the files NAME-r000 ... "
        "(no NAME.safetensors).",
        rich_help_panel=OUT,
    ),
]
ShardOpt = Annotated[
    str | None,
    typer.Option(
        help="I/N: train only shard I (0-based) of N of the restarts (separate processes or array jobs).",
        rich_help_panel=OUT,
    ),
]
OutOpt = Annotated[
    Path, typer.Option(help="Output directory (created with its parents).", rich_help_panel=OUT)
]
NameOpt = Annotated[
    str,
    typer.Option(
        callback=file_stem,
        help="File stem: NAME.safetensors, or NAME-r000... with restarts.",
        rich_help_panel=OUT,
    ),
]
SaveTrajectoryOpt = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="Snapshot parameters every N epochs into NAME.trajectory.safetensors (for PCA slices).",
        rich_help_panel=OUT,
    ),
]
ResumeOpt = Annotated[
    bool,
    typer.Option(
        "--resume",
        help="Continue an interrupted or killed run from OUT/NAME.resume.pt (same options; starts from "
        "epoch 1 with a warning when there is none). Ends with the bytes an uninterrupted run writes (CPU).",
        rich_help_panel=OUT,
    ),
]
ResumeEveryOpt = Annotated[
    float,
    typer.Option(
        callback=NONNEGATIVE,
        metavar="SECONDS",
        help="Save the resume state at the end of an epoch at most this often (0: every epoch).",
        rich_help_panel=OUT,
    ),
]
