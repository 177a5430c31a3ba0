"""The one progress callback of the library: every long computation reports through it.

A core function that runs for a while takes ``on_step: ProgressFn | None`` and calls it with a small
dict of what it has done so far (e.g. ``{"iteration": 12, "residual": 3e-5}``); the command turns that
into a status line. The library itself never prints.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

ProgressFn = Callable[[dict[str, Any]], None]
