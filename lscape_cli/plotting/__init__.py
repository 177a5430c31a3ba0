"""Plots: the only place matplotlib is imported (Agg backend, Figure objects, no pyplot state).

One module per command (``slices``, ``connect``, ``pareto``); shared helpers here. Every figure is
written as PNG and PDF, with labelled axes, units where they exist, and a title naming its source.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def new_figure(width: float = 6.4, height: float = 4.8, **kwargs: Any) -> Any:
    """A matplotlib Figure on the Agg canvas (no global pyplot state)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    kwargs.setdefault("layout", "constrained")
    return Figure(figsize=(width, height), **kwargs)


def save(fig: Any, stem: Path, formats: tuple[str, ...] = ("png", "pdf"), dpi: int = 150) -> list[Path]:
    """Write ``stem.png`` and ``stem.pdf`` atomically; returns the paths written."""
    from lscape_cli.storage.files import atomic_path

    paths = []
    for fmt in formats:
        path = stem.with_name(f"{stem.name}.{fmt}")
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi, metadata=signature(fmt))
        paths.append(path)
    return paths


def signature(fmt: str) -> dict[str, str]:
    """Figure metadata that marks the file as lscape's (so a later run may replace it without --overwrite)."""
    from lscape_cli import __version__

    return {"Creator" if fmt == "pdf" else "Software": f"lscape {__version__} (matplotlib)"}


def level_format(levels: Sequence[float]) -> tuple[Callable[[float], str], float]:
    """Labels that tell colour-bar levels apart, and the offset they are relative to (0: none).

    The fewest significant digits (3 to 6) giving distinct labels; when even 6 repeat (a loss range of
    1e-5 around 2.29 would read "2.29" eight times), labels are differences from the lowest level.
    """
    values = [float(v) for v in levels if math.isfinite(float(v))]
    for digits in range(3, 7):
        if len({f"{v:.{digits}g}" for v in values}) == len(set(values)):
            return (lambda v, d=digits: f"{v:.{d}g}"), 0.0
    base = min(values)
    return (lambda v: f"{v - base:+.3g}"), base


def level_label(name: str, base: float) -> str:
    """A colour bar's label, naming the offset its tick labels are relative to."""
    return f"{name} − {base:.6g}" if base else name
