"""The Typer application: one module per command, errors funnelled into one `Error:` line.

Exit codes: 0 ok; 1 bad input or runtime failure (one line ``Error: what: where (fix)``, no traceback
unless ``LSCAPE_DEBUG=1``); 2 usage error (Typer); 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import errno
import functools
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import typer
import typer.core

from lscape_cli import __version__
from lscape_cli.cli.process import ARGV, EXIT_CHECK_FAILED, EXIT_INTERRUPTED, REPORTED, fail, invocation
from lscape_cli.errors import LscapeError

F = TypeVar("F", bound=Callable[..., Any])


class _Group(typer.core.TyperGroup):
    """Remembers the arguments of this invocation (in-process calls do not go through sys.argv)."""

    def main(self, args: Sequence[str] | None = None, *rest: Any, **kwargs: Any) -> Any:
        token = ARGV.set(list(sys.argv[1:] if args is None else args))
        try:
            return super().main(args, *rest, **kwargs)
        finally:
            ARGV.reset(token)


app = typer.Typer(
    name="lscape",
    cls=_Group,
    help="Measure the loss-landscape geometry of trained networks from saved safetensors checkpoints.\n\n"
    "Example:  lscape train --model mlp --depth 4 --dataset mnist-5k --out runs/mlp",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def funnel(fn: F) -> F:
    """Run a command under the output guard; turn every failure into one line and an exit code.

    The command's files are committed (renamed onto their final names, all together) when it returns,
    exits 0 or 3 (a failed ``--check`` keeps its record), or raises an error that says its outputs stand
    (``keep_outputs``); any other failure leaves every previous file byte-identical. LSCAPE_DEBUG=1
    re-raises.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return _guarded(fn, args, kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except LscapeError as exc:
            if os.environ.get("LSCAPE_DEBUG") == "1":
                raise
            raise fail(exc.line(), exc.exit_code) from None
        except KeyboardInterrupt:
            raise fail("interrupted; no output file was written or changed", EXIT_INTERRUPTED) from None
        except Exception as exc:  # noqa: BLE001 - the funnel: one line, traceback on request
            if os.environ.get("LSCAPE_DEBUG") == "1":
                raise
            raise fail(_unexpected(exc)) from None

    return wrapper  # type: ignore[return-value]


def _guarded(fn: Callable[..., Any], args: Any, kwargs: Any) -> Any:
    """Call the command inside one output transaction, committing it when its outputs stand."""
    from lscape_cli.cli.console import flush_warnings
    from lscape_cli.storage.files import output_transaction

    with output_transaction() as tx:
        try:
            value = fn(*args, **kwargs)
        except typer.Exit as exc:
            if exc.exit_code in (0, EXIT_CHECK_FAILED):
                tx.commit()
            flush_warnings(show=exc.exit_code in (0, EXIT_CHECK_FAILED))
            raise
        except BaseException as exc:
            if isinstance(exc, LscapeError) and exc.keep_outputs:
                tx.commit()  # e.g. the restarts that did not diverge
            flush_warnings(show=False)
            raise
        tx.commit()
        flush_warnings(show=True)
        return value


def _unexpected(exc: BaseException) -> str:
    """The line for a failure no check caught: what happened, and how to get the details."""
    command = " ".join(invocation()[:2])
    if is_out_of_memory(exc):
        return (
            f"out of memory: {command} ({_first_line(exc)[:80]}) (lower the sizes or budgets of this "
            "command, e.g. --max-batch, --points, --steps, or give it more memory)"
        )
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        from pathlib import Path

        from lscape_cli.storage.files import write_error  # one wording for a full disk

        return write_error(exc, Path(exc.filename or command)).line()
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.strerror or type(exc).__name__}: {exc.filename} (check the path and its permissions)"
    return f"{type(exc).__name__}: {_first_line(exc)} (set LSCAPE_DEBUG=1 for the traceback)"


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is a ``MemoryError`` or an allocator's ``RuntimeError``.

    CPU: "can't allocate memory" (``DefaultCPUAllocator``); CUDA: ``torch.OutOfMemoryError``, "out of memory".
    """
    if isinstance(exc, MemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(
        key in text for key in ("out of memory", "can't allocate memory", "defaultcpuallocator")
    )


def _first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's text (torch's C++ errors append stack frames)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _version(value: bool) -> None:
    if value:
        print(f"lscape {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version."
    ),
) -> None:
    """Measure the loss-landscape geometry of trained networks from saved safetensors checkpoints."""


def _register() -> None:
    from lscape_cli.cli import info, probe, train
    from lscape_cli.cli import slice as slice_cmd

    app.command("train")(funnel(train.train))
    app.command("probe")(funnel(probe.probe))
    app.command("info")(funnel(info.info))
    app.command("slice")(funnel(slice_cmd.slice_))
    from lscape_cli.cli import connect

    app.command("connect")(funnel(connect.connect))
    from lscape_cli.cli import pareto

    app.command("pareto")(funnel(pareto.pareto))
    from lscape_cli.cli import report

    app.command("report")(funnel(report.report))


_register()


def main() -> None:
    """Console-script entry point.

    An interrupt that reaches this far (Ctrl-C before a command's funnel runs, or a second one while a
    first is being reported) still ends with exit code 130 and at most one ``Error:`` line, never with
    Python's own death by SIGINT (exit status -2 to the caller) and a traceback.
    """
    try:
        app()
    except KeyboardInterrupt:
        if not REPORTED:
            print("Error: interrupted; no output file was written or changed", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
