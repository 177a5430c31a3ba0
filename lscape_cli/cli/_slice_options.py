"""Option declarations of `lscape slice` (flags, defaults and help text), one alias per option."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lscape_cli.cli.options import POSITIVE

AXES = "Directions"
GRID = "Grid"
DATA = "Data and speed"
OUT = "Output"

CheckpointArg = Annotated[Path, typer.Argument(help="A .safetensors checkpoint (the centre of the slice).")]
DimsOpt = Annotated[int, typer.Option(min=1, max=2, help="1 (lines) or 2 (a plane).", rich_help_panel=GRID)]
RangeOpt = Annotated[
    float | None,
    typer.Option(
        "--range",
        callback=POSITIVE,
        help="Coefficients run over [-RANGE, RANGE] (seed 001: 1.5) [1; with --pca: 1.2 x the trajectory's reach].",
        rich_help_panel=GRID,
    ),
]
StepsOpt = Annotated[
    int,
    typer.Option(min=2, help="Grid points per axis (odd: the centre is on the grid).", rich_help_panel=GRID),
]
CountOpt = Annotated[
    int,
    typer.Option(min=1, help="With --dims 1: N independent directions (seed 001: 10).", rich_help_panel=GRID),
]
TowardOpt = Annotated[
    Path | None,
    typer.Option(
        help="First direction = OTHER.safetensors - CKPT (coefficient 1 reaches OTHER).",
        rich_help_panel=AXES,
    ),
]
PcaOpt = Annotated[
    Path | None,
    typer.Option(
        help="Principal directions of a TRAJECTORY.safetensors (with the trajectory overlaid).",
        rich_help_panel=AXES,
    ),
]
EigenOpt = Annotated[
    bool,
    typer.Option("--eigen", help="Top Hessian eigenvectors (Lanczos, as in probe).", rich_help_panel=AXES),
]
DirectionsOpt = Annotated[
    Path | None,
    typer.Option(help="Reuse the directions of a *.slice.directions.safetensors file.", rich_help_panel=AXES),
]
NormOpt = Annotated[
    str,
    typer.Option(
        help="Random directions: filter (Li et al. 2018), layer, unit (length 1; seed 003) or none.",
        rich_help_panel=AXES,
    ),
]
BiasOpt = Annotated[
    str,
    typer.Option(help="Random directions on biases/BatchNorm: zero, filter or keep.", rich_help_panel=AXES),
]
OrthogonalizeOpt = Annotated[
    bool, typer.Option(help="Gram-Schmidt the directions after normalising them.", rich_help_panel=AXES)
]
EigenTolOpt = Annotated[
    float,
    typer.Option(callback=POSITIVE, help="--eigen: relative Ritz-residual tolerance.", rich_help_panel=AXES),
]
MemoryBudgetOpt = Annotated[
    int,
    typer.Option(min=1, help="MiB for cached first-layer outputs and batched points.", rich_help_panel=DATA),
]
StrategyOpt = Annotated[
    str,
    typer.Option(
        help="Points one by one (loop), vmapped (vmap) or auto (loop on CPU, timed elsewhere).",
        rich_help_panel=DATA,
    ),
]
BasinThresholdOpt = Annotated[
    float,
    typer.Option(
        callback=POSITIVE, help="Basin width/area: where L - L(centre) <= this.", rich_help_panel=OUT
    ),
]
FitRadiusOpt = Annotated[
    float | None,
    typer.Option(
        callback=POSITIVE,
        help="Parabola fit within this distance of the centre [0.1 * range].",
        rich_help_panel=OUT,
    ),
]
ResumeOpt = Annotated[
    bool,
    typer.Option(
        "--resume", help="Continue the partial grid left by an interrupted run.", rich_help_panel=OUT
    ),
]
PlotOpt = Annotated[bool, typer.Option(help="Write PNG and PDF plots.", rich_help_panel=OUT)]
ZscaleOpt = Annotated[
    str, typer.Option(help="Loss axis of 2-D plots: auto, linear or log.", rich_help_panel=OUT)
]
OutOpt = Annotated[
    Path | None,
    typer.Option(help="Output JSON [CKPT.slice.json]; the other files sit beside it.", rich_help_panel=OUT),
]
