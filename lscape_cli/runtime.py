"""Device and dtype resolution shared by every command."""

from __future__ import annotations

import torch

from lscape_cli.errors import LscapeError

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cpu``; ``cuda`` or ``cuda:N``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise LscapeError(f"unknown device {name!r}", "--device", "use auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LscapeError(
            "CUDA is not available on this machine", f"--device {name}", "use --device cpu or auto"
        )
    if device.type not in ("cpu", "cuda"):
        raise LscapeError(f"unsupported device {name!r}", "--device", "use auto, cpu, cuda or cuda:N")
    return device


def resolve_dtype(name: str) -> torch.dtype:
    """``float32`` (default) or ``float64``."""
    if name not in DTYPES:
        raise LscapeError(f"unknown dtype {name!r}", "--dtype", "use float32 or float64")
    return DTYPES[name]
