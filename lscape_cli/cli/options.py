"""Option aliases shared by every command, so a flag means one thing everywhere."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

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
