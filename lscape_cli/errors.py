"""The one exception type the CLI turns into an `Error: ...` line."""

from __future__ import annotations


class LscapeError(Exception):
    """A failure the user can fix: says what went wrong, where, and how to fix it.

    Args:
        what: what is wrong, e.g. "not a safetensors file".
        where: the file, option or value concerned.
        fix: what the user can do about it.
    """

    keep_outputs = False  # True: the files written before this error stand (see cli.funnel)
    exit_code = 1  # the command's exit code

    def __init__(self, what: str, where: str | None = None, fix: str | None = None) -> None:
        self.what = what
        self.where = where
        self.fix = fix
        super().__init__(self.line())

    def line(self) -> str:
        """One line: `what: where (fix)`."""
        text = self.what
        if self.where:
            text += f": {self.where}"
        if self.fix:
            text += f" ({self.fix})"
        return text


class DivergedError(LscapeError):
    """Training produced a non-finite loss (files for the finite restarts are still written)."""

    def __init__(self, what: str, where: str, fix: str, keep_outputs: bool) -> None:
        super().__init__(what, where, fix)
        self.keep_outputs = keep_outputs


class UserInterrupt(LscapeError):
    """Ctrl-C (``KeyboardInterrupt``) while the user's code ran: one line naming it, exit code 130."""

    exit_code = 130
