"""Option parsing the evaluating commands share: number lists and default output paths.

Opening the checkpoint itself is :func:`lscape_cli.models.evaluation.load_for_eval`.
"""

from __future__ import annotations

import math
from pathlib import Path

from lscape_cli.errors import LscapeError


def parse_floats(text: str | None, option: str) -> tuple[float, ...]:
    """``"0.01,0.05"`` -> ``(0.01, 0.05)``; every value positive."""
    if not text:
        return ()
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise LscapeError(
            f"invalid number list {text!r}", option, "give comma-separated numbers, e.g. 0.01,0.05"
        ) from exc
    if not values or not all(math.isfinite(v) and v > 0 for v in values):
        raise LscapeError(
            f"values must be finite and positive: {text!r}", option, "give positive numbers, e.g. 0.01,0.05"
        )
    return values


def default_output(checkpoint: Path, suffix: str) -> Path:
    """``x.safetensors`` -> ``x.<suffix>`` beside it."""
    name = checkpoint.name
    stem = name[: -len(".safetensors")] if name.endswith(".safetensors") else checkpoint.stem
    return checkpoint.with_name(f"{stem}.{suffix}")
