"""Human output goes to stderr; stdout is reserved for --json."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rich.console import Console

if TYPE_CHECKING:
    from lscape_cli.core.progress import ProgressEvent


def _stderr_console() -> Console:
    """Rich on stderr; when stderr is not a terminal (logs, CI) tables get room for every full value."""
    import sys

    wide = not (hasattr(sys.stderr, "isatty") and sys.stderr.isatty())
    return Console(stderr=True, highlight=False, width=1000 if wide else None)


err = _stderr_console()


_PENDING: list[str] = []


def warn(text: str) -> None:
    """A ``Warning:`` line for stderr, printed once the command succeeded (a failure prints only its error)."""
    _PENDING.append(text)


def flush_warnings(show: bool) -> None:
    """Print (``show``) or drop the pending warnings."""
    import sys

    for text in _PENDING if show else []:
        print(f"Warning: {text}", file=sys.stderr)
    _PENDING.clear()


def emit_json(text: str) -> None:
    """Write a JSON record to stdout as one line (JSON Lines; files keep ``indent=2``).

    Nothing else ever goes to stdout, so ``--json`` output of several records streams line by line.
    """
    import json
    import sys

    sys.stdout.write(json.dumps(json.loads(text), allow_nan=False, ensure_ascii=False) + "\n")
    sys.stdout.flush()


class StatusLine:
    """A one-line spinner on stderr fed by the core's ``on_step`` callbacks (a no-op when quiet).

    Use as ``with StatusLine(quiet, "probe") as on_step: core_call(..., on_step=on_step)``.
    """

    def __init__(self, quiet: bool, label: str) -> None:
        self.quiet, self.label = quiet, label
        self.status: Any = None

    def __enter__(self) -> Callable[[ProgressEvent], None] | None:
        if self.quiet:
            return None
        self.status = err.status(f"{self.label}: starting")
        self.status.start()

        def on_step(info: ProgressEvent) -> None:
            text = ", ".join(
                f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                for k, v in info.items()
                if not isinstance(v, (list, dict))
            )
            self.status.update(f"{self.label}: {text}")

        return on_step

    def __exit__(self, *exc: object) -> None:
        if self.status is not None:
            self.status.stop()
