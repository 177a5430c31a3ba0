"""Option aliases shared by every command, so a flag means one thing everywhere."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from lscape_cli.usermodel import UserInputs

DeviceOpt = Annotated[str, typer.Option("--device", help="auto (CUDA when available), cpu, cuda or cuda:N.")]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="float32 or float64.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed (restart r uses seed + r).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the JSON record(s) to stdout; quiet on stderr.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or table on stderr.")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace existing output files.")]
SplitOpt = Annotated[str, typer.Option("--split", help="Data split to evaluate on: train, val or test.")]
MaxBatchOpt = Annotated[
    int,
    typer.Option(
        "--max-batch", min=1, help="Largest chunk of samples per forward pass (bounds memory only)."
    ),
]
ModelConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--model-config", help="JSON describing the model of a plain safetensors file (see docs/formats.md)."
    ),
]
DataRootOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-root",
        help="Where datasets are cached/downloaded [default: $LSCAPE_DATA or ~/.cache/lscape/data].",
    ),
]


def data_root(value: Path | None) -> Path:
    """The data directory: the option, else $LSCAPE_DATA, else the user cache."""
    if value is not None:
        return value
    env = os.environ.get("LSCAPE_DATA")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lscape" / "data"


ModeOpt = Annotated[
    str, typer.Option("--mode", help="eval (BatchNorm running statistics; default) or train.")
]
LossOverrideOpt = Annotated[
    str | None, typer.Option("--loss", help="Override the checkpoint's loss (ce, mse).")
]
DatasetOverrideOpt = Annotated[
    str | None, typer.Option("--dataset", help="Override the checkpoint's dataset.")
]
ModelDefOpt = Annotated[
    str | None,
    typer.Option(
        "--model-def",
        help="Your own model: PATH.py:FUNC, package.module:FUNC or torchvision:NAME; FUNC(**--model-args) "
        "returns the nn.Module.",
        rich_help_panel="Your own model and data",
    ),
]
ModelArgsOpt = Annotated[
    str | None,
    typer.Option(
        "--model-args",
        help="Keyword arguments of --model-def's FUNC: a JSON object or a .json file [recorded ones].",
        rich_help_panel="Your own model and data",
    ),
]
TrustModelDefOpt = Annotated[
    bool,
    typer.Option(
        "--trust-model-def",
        help="Import the model code a checkpoint records (instead of naming it again with --model-def).",
        rich_help_panel="Your own model and data",
    ),
]
DataFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--data",
        help="Your own data: a .safetensors, .npz or .pt file with x, y (optional x_val/y_val, x_test/y_test "
        "or a split array).",
        rich_help_panel="Your own model and data",
    ),
]


def user_inputs(
    model_def: str | None, model_args: str | None, trust_model_def: bool, data: Path | None
) -> UserInputs:
    """The four options above as one :class:`lscape_cli.usermodel.UserInputs`."""
    from lscape_cli.usermodel import UserInputs

    return UserInputs(model_def, model_args, trust_model_def, data)
