"""Option aliases shared by every command, so a flag means one thing everywhere."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer


def domain(
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    example: str = "",
) -> Callable[[float | None], float | None]:
    """An option callback refusing a number that is not finite or lies outside ``[low, high]``.

    ``low_open``/``high_open`` exclude the bound. The refusal is Typer's usage error (exit 2), naming
    the option, the allowed range and an example, e.g. ``Invalid value for '--lr': must be a finite
    number > 0, got -1.0``.
    """
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {high:g}")
    rule = "a finite number" + (" " + " and ".join(parts) if parts else "")

    def check(value: float | None) -> float | None:
        if value is None:
            return None
        ok = math.isfinite(value)
        if ok and low is not None:
            ok = value > low if low_open else value >= low
        if ok and high is not None:
            ok = value < high if high_open else value <= high
        if not ok:
            raise typer.BadParameter(
                f"must be {rule}, got {value}" + (f" (e.g. {example})" if example else "")
            )
        return value

    return check


POSITIVE = domain(0, low_open=True)
NONNEGATIVE = domain(0)
BETA = domain(0, 1, high_open=True, example="0.9")  # momentum, Adam's betas: [0, 1)

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+=-]*")


def file_stem(value: str) -> str:
    """A plain file name stem: no directory part, no ``..``, at most 120 characters."""
    if not _NAME.fullmatch(value) or ".." in value or len(value) > 120:
        raise typer.BadParameter(
            f"{value!r} is not a plain file name (letters, digits, _ . + = -; no '/', no '..'; "
            "put directories in --out)"
        )
    return value


def set_threads(value: int | None) -> int | None:
    """Apply ``--threads`` / ``$LSCAPE_THREADS`` to torch's pool (else torch follows $OMP_NUM_THREADS)."""
    if value is not None:
        import torch

        torch.set_num_threads(value)
    return value


ThreadsOpt = Annotated[
    int | None,
    typer.Option(
        "--threads",
        min=1,
        max=4096,
        envvar="LSCAPE_THREADS",
        callback=set_threads,
        help="CPU threads for torch [default: $LSCAPE_THREADS, else $OMP_NUM_THREADS, else all cores].",
    ),
]

DeviceOpt = Annotated[str, typer.Option("--device", help="auto (CUDA when available), cpu, cuda or cuda:N.")]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="float32 or float64.")]
SeedOpt = Annotated[
    int, typer.Option("--seed", min=0, max=2**31 - 1, help="Random seed (restart r uses seed + r).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the JSON record(s) to stdout; quiet on stderr.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or table on stderr.")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace existing output files.")]
SplitOpt = Annotated[str, typer.Option("--split", help="Data split to evaluate on: train, val or test.")]
MaxBatchOpt = Annotated[
    int,
    typer.Option(
        "--max-batch",
        min=1,
        max=2**31 - 1,
        help="Largest chunk of samples per forward pass (bounds memory only).",
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
