"""Validation and assembly of `lscape train`'s options into the engine's configuration."""

from __future__ import annotations

import math
from typing import Any

from lscape_cli.cli.options import SEED_MAX
from lscape_cli.errors import LscapeError


def batch_size_of(value: str) -> int | None:
    """--batch-size as a count, ``None`` for 'full'."""
    if value == "full":
        return None
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise LscapeError(
            f"invalid batch size {value!r}", "--batch-size", "give a positive integer or 'full'"
        )
    return n


def model_options(**opts: Any) -> dict[str, Any]:
    """The registry-model options that were given."""
    return {k: v for k, v in opts.items() if v is not None}


def parsed(fn: Any, option: str, *args: Any) -> Any:
    """``fn(*args)``, its ValueError as the one-line error about ``option``."""
    try:
        return fn(*args)
    except ValueError as exc:
        raise LscapeError(str(exc), option, f"see lscape train --help for {option}") from exc


def checked(parse: Any, option: str, text: str) -> str:
    """``text`` once ``parse`` accepts it (the config keeps the text, the engine parses it again)."""
    parsed(parse, option, text)
    return text


def valid_init(init: str) -> bool:
    """Whether ``init`` is 'normal:STD' with a positive finite STD."""
    kind, _, arg = init.partition(":")
    try:
        return kind == "normal" and math.isfinite(float(arg)) and float(arg) > 0
    except ValueError:
        return False


def check_choices(loss: str, optimizer: str, init: str) -> None:
    """Refuse an unknown --loss or --optimizer and a malformed --init."""
    from lscape_cli.core.training.engine import OPTIMIZERS
    from lscape_cli.models.losses import parse_loss

    parse_loss(loss)
    if optimizer not in OPTIMIZERS:
        raise LscapeError(
            f"unknown optimizer {optimizer!r}", "--optimizer", f"choose one of: {', '.join(OPTIMIZERS)}"
        )
    if init != "default" and not valid_init(init):
        raise LscapeError(f"invalid init {init!r}", "--init", "use 'default' or 'normal:STD', e.g. normal:1")


def training_loss(loss: str, loss_def: str | None, notes: list[str]) -> Any:
    """The training loss: ``--loss-def``'s function, else ``--loss`` (the default ``ce`` yields to it)."""
    from lscape_cli.models.losses import load, parse_loss

    if loss_def is None:
        return parse_loss(loss)
    if loss != "ce":
        raise LscapeError("--loss and --loss-def both name the loss", f"{loss} vs {loss_def}", "pass one")
    return load(loss_def, notes)


def check_restart_seeds(seed: int, restarts: int) -> None:
    """Restart r trains with seed + r: the last one must still be a seed ``--seed`` accepts."""
    last, lowest = seed + restarts - 1, SEED_MAX - restarts + 1
    if last > SEED_MAX:
        raise LscapeError(
            f"--seed {seed} with --restarts {restarts} gives restart seeds up to {last}, above {SEED_MAX}",
            "--seed",
            f"use --seed {lowest} or lower, so each restart can be re-run alone"
            if lowest >= 0
            else "train fewer restarts",
        )
