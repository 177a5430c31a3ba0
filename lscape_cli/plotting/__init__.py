"""Plots: the only place matplotlib is imported (Agg backend, Figure objects, no pyplot state).

One module per command (``slices``, ``connect``, ``pareto``); shared helpers here. Every figure is
written as PNG and PDF, with labelled axes, units where they exist, and a title naming its source.
"""

from __future__ import annotations

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
