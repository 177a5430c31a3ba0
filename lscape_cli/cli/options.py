"""Option aliases shared by every command, so a flag means one thing everywhere."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

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


def user_files(
    model_def: str | None, data_file: Path | None, model_args: str | None = None, loss_def: str | None = None
) -> list[Path | None]:
    """The files ``--model-def``/``--loss-def PATH.py:FUNC``, ``--data FILE``, ``--model-args FILE`` read.

    The output guard refuses any output onto one of them.
    """
    codes = [source.rsplit(":", 1)[0] for source in (model_def, loss_def) if source]
    args = Path(model_args) if model_args and not model_args.lstrip().startswith("{") else None
    return [*(Path(code) for code in codes if code.endswith(".py")), data_file, args]


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


if TYPE_CHECKING:
    from lscape_cli.models.user import UserInputs

DeviceOpt = Annotated[str, typer.Option("--device", help="auto (CUDA when available), cpu, cuda or cuda:N.")]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="float32 or float64.")]
SEED_MAX = 2**31 - 1  # every seed option's upper end
SeedOpt = Annotated[
    int, typer.Option("--seed", min=0, max=SEED_MAX, help="Random seed (restart r uses seed + r).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the JSON record(s) to stdout; quiet on stderr.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or table on stderr.")]
OverwriteOpt = Annotated[
    bool,
    typer.Option(
        "--overwrite",
        help="Replace existing output files whatever wrote them (without it a file that is not an lscape "
        "output of the same kind is never replaced; train replaces none).",
    ),
]
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
    str | None,
    typer.Option(
        "--loss",
        help="Override the checkpoint's loss: ce, mse, bce, or ce:label_smoothing=0.1,ignore_index=-100.",
    ),
]
LossDefOpt = Annotated[
    str | None,
    typer.Option(
        "--loss-def",
        help="Your own loss: PATH.py:FUNC or package.module:FUNC; FUNC(outputs, targets) returns the batch's "
        "mean loss (imported only when named, or recorded and --trust-model-def).",
        rich_help_panel="Your own model and data",
    ),
]
OutputOpt = Annotated[
    str | None,
    typer.Option(
        "--output",
        help="Which model output is scored: a dict key, attribute (e.g. logits) or tuple index "
        "[the tensor returned, or element 0 of a tuple].",
        rich_help_panel="Your own model and data",
    ),
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
        "or a split array), or a directory read from disk chunk by chunk: x.npy/y.npy, shards "
        "x-00000.npy/y-00000.npy ..., or image class folders.",
        rich_help_panel="Your own model and data",
    ),
]


def user_inputs(
    model_def: str | None,
    model_args: str | None,
    trust_model_def: bool,
    data: Path | None,
    loss_def: str | None = None,
    output: str | None = None,
) -> UserInputs:
    """The options above as one :class:`lscape_cli.models.user.UserInputs`."""
    from lscape_cli.models.user import UserInputs

    return UserInputs(model_def, model_args, trust_model_def, data, loss_def, output)
