"""What `lscape connect` shows: the table of barriers on stderr and the plot beside the record."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from lscape_cli.cli.console import err

if TYPE_CHECKING:
    from lscape_cli.core.connectivity.paths import ConnectResults
    from lscape_cli.storage.connect_record import ConnectRecord


def plot_stem(out_path: Path) -> Path:
    """The record's path without .json: the plots' stem."""
    name = out_path.name
    return out_path.with_name(name[: -len(".json")] if name.endswith(".json") else name)


def plot_path(record: ConnectRecord, out_path: Path, a: Path, b: Path) -> dict[str, str]:
    """Plot the paths beside the record; the written files by format."""
    from lscape_cli.plotting.connect import plot_connect
    from lscape_cli.storage.connect_record import checkpoint_stem

    written = plot_connect(record, plot_stem(out_path), f"{checkpoint_stem(a)} → {checkpoint_stem(b)}")
    return {p.suffix.lstrip("."): p.name for p in written}


def print_table(results: ConnectResults, out_path: Path) -> None:
    """The barriers of every path and split, one row each."""
    from rich.table import Table

    table = Table(
        title=f"lscape connect -> {out_path}",
        caption="barriers: max - mean of ends (relative), chord, max - max of ends",
    )
    error = "error" in results["linear"]["barriers"]["train"]  # no error rate for regression data
    cols = ["path", "split", "loss max-mean", "rel.", "chord", "max-max"] + (
        ["error max-mean"] if error else []
    )
    for col in cols:
        table.add_column(col, justify="left" if col in ("path", "split") else "right")
    keys: tuple[Literal["linear", "aligned", "curve"], ...] = ("linear", "aligned", "curve")
    for key in keys:
        path = results.get(key)
        if not path:
            continue
        for split in ("train", "test"):
            lb = path["barriers"][split]["loss"]
            rel = lb["max_minus_mean_ends"]["relative"]
            row = [
                path["path"] if key == "curve" else key,
                split,
                f"{lb['max_minus_mean_ends']['value']:.4g}",
                "n/a" if rel is None else f"{rel:.3g}",
                f"{lb['chord']['value']:.4g}",
                f"{lb['max_minus_max_ends']['value']:.4g}",
            ]
            if error:
                row.append(f"{path['barriers'][split]['error']['max_minus_mean_ends']['value']:.4g}")
            table.add_row(*row)
    err.print(table)
