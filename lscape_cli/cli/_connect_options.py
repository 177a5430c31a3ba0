"""Option declarations of `lscape connect` (flags, defaults and help text), one alias per option."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lscape_cli.cli.options import POSITIVE

PATHS = "Paths"
CURVE = "Curve fitting"
DATA = "Data and output"

CheckpointAArg = Annotated[Path, typer.Argument(help="First minimum (A, alpha = 0).")]
CheckpointBArg = Annotated[Path, typer.Argument(help="Second minimum (B, alpha = 1), same model and data.")]
PointsOpt = Annotated[
    int, typer.Option(min=2, help="Points along each path, both ends included.", rich_help_panel=PATHS)
]
AlignOpt = Annotated[
    str,
    typer.Option(
        help="none, or weights: permute B's hidden units onto A by weight matching (Git Re-Basin) and "
        "add the linear path to the aligned B (registry models; your own models' structure is derived by "
        "tracing, or refused).",
        rich_help_panel=PATHS,
    ),
]
AlignItersOpt = Annotated[
    int, typer.Option(min=1, help="Most weight-matching sweeps over all layers.", rich_help_panel=PATHS)
]
CurveOpt = Annotated[
    str,
    typer.Option(
        help="none, bezier or polychain: train the bend of a curve from A to B (to the aligned B with "
        "--align weights) minimising the expected loss over t (Garipov et al. 2018).",
        rich_help_panel=CURVE,
    ),
]
CurveEpochsOpt = Annotated[
    int, typer.Option(min=1, help="Epochs over the training split.", rich_help_panel=CURVE)
]
CurveLrOpt = Annotated[
    float, typer.Option(callback=POSITIVE, help="Learning rate of the bend.", rich_help_panel=CURVE)
]
CurveOptimizerOpt = Annotated[str, typer.Option(help="adam or sgd (momentum 0.9).", rich_help_panel=CURVE)]
CurveBatchSizeOpt = Annotated[
    int, typer.Option(min=1, help="Minibatch size (one t drawn per minibatch).", rich_help_panel=CURVE)
]
ResetBnOpt = Annotated[
    bool,
    typer.Option(
        "--reset-bn",
        help="Re-estimate BatchNorm statistics at every point of the linear paths (curves always do); "
        "default: interpolate the ends' statistics.",
        rich_help_panel=PATHS,
    ),
]
BnBatchSizeOpt = Annotated[
    int, typer.Option(min=2, help="Chunk size for BatchNorm re-estimation.", rich_help_panel=PATHS)
]
PlotOpt = Annotated[
    bool, typer.Option("--plot/--no-plot", help="Write OUT.png and OUT.pdf.", rich_help_panel=DATA)
]
OutOpt = Annotated[
    Path | None, typer.Option(help="Output JSON [A--B.connect.json beside A].", rich_help_panel=DATA)
]
