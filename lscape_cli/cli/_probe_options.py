"""Option declarations of `lscape probe` (flags, defaults and help text), one alias per option."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lscape_cli.cli.options import POSITIVE, domain

CURV = "Curvature"
FLAT = "Flatness"
DATA = "Data and budget"

CheckpointArg = Annotated[Path, typer.Argument(help="A .safetensors checkpoint.")]
LambdaMaxOpt = Annotated[
    bool, typer.Option("--lambda-max", help="Largest Hessian eigenvalue (Lanczos).", rich_help_panel=CURV)
]
TopKOpt = Annotated[
    int,
    typer.Option("--top-k", min=0, help="The K largest eigenvalues (seed 001: 3).", rich_help_panel=CURV),
]
LambdaMinOpt = Annotated[
    bool,
    typer.Option("--lambda-min", help="Smallest eigenvalue and condition number.", rich_help_panel=CURV),
]
TraceOpt = Annotated[bool, typer.Option("--trace", help="tr(H) with standard error.", rich_help_panel=CURV)]
FrobeniusOpt = Annotated[
    bool, typer.Option("--frobenius", help="||H||_F (same products as --trace).", rich_help_panel=CURV)
]
TraceMethodOpt = Annotated[
    str,
    typer.Option(
        help="krylov-hutch++ (Lanczos-deflated, 2/3 of the products), hutch++ or hutchinson.",
        rich_help_panel=CURV,
    ),
]
MatvecsOpt = Annotated[
    int,
    typer.Option(
        min=3, help="Hessian-vector products for trace/Frobenius (seed 000: 45).", rich_help_panel=CURV
    ),
]
DensityOpt = Annotated[
    bool,
    typer.Option("--density", help="Spectral density (SLQ) and effective rank.", rich_help_panel=CURV),
]
DensityRunsOpt = Annotated[int, typer.Option(min=1, help="SLQ runs.", rich_help_panel=CURV)]
DensityStepsOpt = Annotated[int, typer.Option(min=2, help="Lanczos steps per SLQ run.", rich_help_panel=CURV)]
GradNormOpt = Annotated[
    bool, typer.Option("--grad-norm", help="||grad L|| over the split.", rich_help_panel=CURV)
]
TolOpt = Annotated[
    float,
    typer.Option(
        callback=POSITIVE,
        help="Relative tolerance on each eigenvalue's error bound (or residual, see --stop).",
        rich_help_panel=CURV,
    ),
]
MaxIterOpt = Annotated[
    int,
    typer.Option(
        min=2, help="Most Lanczos steps (power iterations with --eig-method power).", rich_help_panel=CURV
    ),
]
StopOpt = Annotated[
    str,
    typer.Option(
        help="Eigenvalue stop: bound (error bound min(r, r^2/gap) <= tol*|lambda|) or residual (r itself).",
        rich_help_panel=CURV,
    ),
]
CurvatureOpt = Annotated[
    str,
    typer.Option(
        help="Matrix of every spectral quantity: hessian, ggn (generalised Gauss-Newton = exact Fisher), "
        "fisher (Monte-Carlo, labels sampled from the model) or empirical-fisher (per-sample gradients).",
        rich_help_panel=CURV,
    ),
]
FisherSamplesOpt = Annotated[
    int, typer.Option(min=1, help="--curvature fisher: labels drawn per input.", rich_help_panel=CURV)
]
ParamsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--params",
        metavar="REGEX",
        help="Restrict spectral quantities to the parameters whose names fully match (repeatable), "
        "e.g. 'hidden\\.0\\..*'.",
        rich_help_panel=CURV,
    ),
]
PerLayerOpt = Annotated[
    bool,
    typer.Option(
        "--per-layer", help="Also each module's block, one run each (a table).", rich_help_panel=CURV
    ),
]
SaveEigenvectorsOpt = Annotated[
    Path | None,
    typer.Option(
        metavar="FILE",
        help="Write the top-k eigenvectors as a direction file for lscape slice --directions.",
        rich_help_panel=CURV,
    ),
]
EigMethodOpt = Annotated[
    str,
    typer.Option(
        help="lambda_max by lanczos, or power iteration (seed 002; stopped on its residual, at most "
        "--max-iter products; not with --top-k > 1 or --lambda-min).",
        rich_help_panel=CURV,
    ),
]
HvpOpt = Annotated[
    str,
    typer.Option(
        help="HVP strategy: auto (CPU: double_backward; else measure), measure (time all on this model and "
        "device, use the fastest), double_backward, fwd_rev, vmap.",
        rich_help_panel=CURV,
    ),
]
MemoryBudgetOpt = Annotated[
    float | None,
    typer.Option(
        metavar="MIB",
        callback=POSITIVE,
        help="Memory for kept gradient graphs (also bounds a chunk) [default: 2048; CUDA: half the free memory].",
        rich_help_panel=DATA,
    ),
]
RetainChunksOpt = Annotated[
    int | None,
    typer.Option(
        min=0,
        help="Chunk graphs double_backward keeps between products; 0: least memory, every chunk recomputed "
        "[default: as many as fit --memory-budget].",
        rich_help_panel=DATA,
    ),
]
SharpnessOpt = Annotated[
    str | None,
    typer.Option(
        help="Comma-separated radii EPS: random-direction sharpness S_max/S_mean (seed 003).",
        rich_help_panel=FLAT,
    ),
]
SharpnessKindOpt = Annotated[
    str,
    typer.Option(
        help="l2 (||delta||=eps), filter (filter-normalised, eps relative) or adaptive (|theta|-scaled).",
        rich_help_panel=FLAT,
    ),
]
DirectionsOpt = Annotated[
    int, typer.Option(min=1, help="Random directions per radius.", rich_help_panel=FLAT)
]
AscentStepsOpt = Annotated[
    int,
    typer.Option(
        min=0,
        help="Worst-case sharpness by N steps of projected gradient ascent (SAM-style; 0: skip).",
        rich_help_panel=FLAT,
    ),
]
BiasOpt = Annotated[
    str,
    typer.Option(help="Filter-normalised directions on biases/BN: zero, filter, keep.", rich_help_panel=FLAT),
]
NoiseOpt = Annotated[
    str | None,
    typer.Option(
        help="Comma-separated sigmas: loss/accuracy under weight noise (seed 004).", rich_help_panel=FLAT
    ),
]
NoiseSamplesOpt = Annotated[int, typer.Option(min=2, help="Noise draws per sigma.", rich_help_panel=FLAT)]
MagnitudeAwareOpt = Annotated[
    bool, typer.Option(help="Noise scaled by |theta| (also for --pac-bayes).", rich_help_panel=FLAT)
]
PacBayesOpt = Annotated[
    bool,
    typer.Option(
        "--pac-bayes",
        help="Largest sigma keeping the error rise under the target (Jiang et al. 2020).",
        rich_help_panel=FLAT,
    ),
]
PacBayesTargetOpt = Annotated[
    float, typer.Option(callback=POSITIVE, help="Allowed rise for --pac-bayes.", rich_help_panel=FLAT)
]
PacBayesMetricOpt = Annotated[str, typer.Option(help="error or loss.", rich_help_panel=FLAT)]
PacBayesDeltaOpt = Annotated[
    float,
    typer.Option(
        callback=domain(0, 1, low_open=True, high_open=True, example="0.05"),
        help="The --pac-bayes bound holds with probability 1 - delta.",
        rich_help_panel=FLAT,
    ),
]
StabilityOpt = Annotated[
    bool, typer.Option("--stability", help="eta * lambda_max against 2 (seed 004).", rich_help_panel=FLAT)
]
NumBatchesOpt = Annotated[
    int,
    typer.Option(min=1, help="Repeat on N disjoint batches; report mean/std/min/max.", rich_help_panel=DATA),
]
BatchSizeOpt = Annotated[
    int | None, typer.Option(min=1, help="Samples per batch with --num-batches.", rich_help_panel=DATA)
]
SamplesOpt = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="Use only the first M samples of the split (as lscape train --track-samples).",
        rich_help_panel=DATA,
    ),
]
SnapshotOpt = Annotated[
    str | None,
    typer.Option(
        help="CHECKPOINT is a trajectory file: probe every snapshot (all) or those of the listed epochs.",
        rich_help_panel=DATA,
    ),
]
CheckOpt = Annotated[
    list[str] | None,
    typer.Option(help="CI gate, e.g. 'lambda_max < 200' (repeatable); a failed check exits 3."),
]
OutOpt = Annotated[Path | None, typer.Option(help="Output JSON [CKPT.probe.json].")]
