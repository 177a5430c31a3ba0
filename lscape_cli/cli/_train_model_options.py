"""Option declarations of `lscape train`'s model (architecture and initialisation), one alias per option."""

from __future__ import annotations

from typing import Annotated

import typer

MODEL = "Model"

ModelOpt = Annotated[
    str,
    typer.Option(
        help="Architecture: mlp, cnn, resnet, linear, or torchvision:NAME (e.g. torchvision:resnet18).",
        rich_help_panel=MODEL,
    ),
]
DepthOpt = Annotated[
    int | None, typer.Option(min=1, max=1000, help="mlp: hidden layers [1].", rich_help_panel=MODEL)
]
WidthOpt = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="mlp: units per hidden layer [48]; cnn: first conv channels [32]; resnet: first stage channels [16].",
        rich_help_panel=MODEL,
    ),
]
HiddenOpt = Annotated[
    int | None, typer.Option(min=1, help="cnn: units of the FC layer [128].", rich_help_panel=MODEL)
]
ActivationOpt = Annotated[
    str | None, typer.Option(help="relu, tanh, gelu, sigmoid, leaky_relu [relu].", rich_help_panel=MODEL)
]
BiasOpt = Annotated[
    bool | None,
    typer.Option("--bias/--no-bias", help="Bias terms (mlp, cnn, linear) [on].", rich_help_panel=MODEL),
]
StagesOpt = Annotated[
    int | None, typer.Option(min=1, max=16, help="resnet: stages [2].", rich_help_panel=MODEL)
]
BlocksOpt = Annotated[
    int | None, typer.Option(min=1, max=1000, help="resnet: blocks per stage [1].", rich_help_panel=MODEL)
]
SkipOpt = Annotated[
    bool | None,
    typer.Option("--skip/--no-skip", help="resnet: residual connections [on].", rich_help_panel=MODEL),
]
BatchnormOpt = Annotated[
    bool | None,
    typer.Option("--batchnorm/--no-batchnorm", help="resnet: BatchNorm [on].", rich_help_panel=MODEL),
]
InitOpt = Annotated[
    str,
    typer.Option(help="'default' (framework) or 'normal:STD' (seed 000: normal:1).", rich_help_panel=MODEL),
]
