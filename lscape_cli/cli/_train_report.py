"""What `lscape train` shows on stderr: the progress bar while it trains and the summary table."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from lscape_cli.cli.console import err

if TYPE_CHECKING:
    from lscape_cli.core.progress import ProgressEvent


class Progress:
    """A rich progress bar on stderr (a no-op when quiet); yields the engine's on_epoch callback."""

    def __init__(self, quiet: bool, epochs: int, restarts: int) -> None:
        self.quiet, self.epochs, self.restarts = quiet, epochs, restarts
        self.bar: Any = None

    def __enter__(self) -> Any:
        if self.quiet:
            return None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(
            TextColumn("train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=err,
            transient=True,
        )
        self.bar.start()
        task = self.bar.add_task("", total=self.epochs)

        def on_epoch(info: ProgressEvent) -> None:
            losses = [v for v in info["train_loss"] if v == v]
            desc = f"active {info['active']}/{self.restarts}  loss {min(losses):.4g}" if losses else ""
            self.bar.update(task, completed=info["epoch"], description=desc)

        return on_epoch

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


def print_summary(results: list[Any], stems: list[Path], task: str = "classification") -> None:
    """One row per restart; the last metric is test accuracy, or test loss for regression data."""
    from rich.table import Table

    regression = task == "regression"
    table = Table(title="lscape train", show_lines=False)
    last = "test loss" if regression else "test acc"
    for col in ("run", "seed", "stop", "epochs", "steps", "train loss", "val loss", last, "file"):
        table.add_column(col)
    for res, stem in zip(results, stems, strict=True):
        f = res.final
        table.add_row(
            str(res.restart),
            str(res.seed),
            res.stop_reason,
            str(res.epochs) + (f" (kept {res.best_epoch})" if res.best_epoch is not None else ""),
            str(res.steps),
            f"{f.get('train_loss', float('nan')):.4g}",
            f"{f.get('val_loss', float('nan')):.4g}",
            f"{f.get('test_loss', float('nan')):.4g}"
            if regression
            else f"{f.get('test_accuracy', float('nan')):.4f}",
            "-" if res.stop_reason == "diverged" else f"{stem.name}.safetensors",
        )
    err.print(table)
