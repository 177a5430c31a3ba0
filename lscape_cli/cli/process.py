"""What one run of the command line shares: its argv, its exit codes and the ``Error:`` lines it printed.

Command modules import these from here, not from :mod:`lscape_cli.cli` (which imports the command
modules to register them), so the command line has no import circle.
"""

from __future__ import annotations

import contextvars
import sys

import typer

ARGV: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("lscape_argv", default=None)
EXIT_INTERRUPTED = 130
EXIT_CHECK_FAILED = 3  # a --check gate evaluated to false (documented in the README)
REPORTED: list[str] = []  # the Error lines this process printed (main() prints none after one)


def invocation() -> list[str]:
    """The argv of the running command, starting with ``lscape`` (recorded in every JSON record)."""
    argv = ARGV.get()
    return ["lscape", *(sys.argv[1:] if argv is None else argv)]


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print one ``Error:`` line on stderr and return the exit to raise."""
    REPORTED.append(message)
    print(f"Error: {message}", file=sys.stderr)
    return typer.Exit(code)
