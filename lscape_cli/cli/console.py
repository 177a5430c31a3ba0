"""Human output goes to stderr; stdout is reserved for --json."""

from __future__ import annotations

from rich.console import Console

err = Console(stderr=True, highlight=False)


def emit_json(text: str) -> None:
    """Write machine-readable output to stdout (nothing else ever goes there)."""
    import sys

    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()
