"""Device and dtype resolution shared by every command."""

from __future__ import annotations

import os

import torch

from lscape_cli.errors import LscapeError

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def safe_cpu_kernels() -> None:
    """Use torch's native CPU convolutions instead of oneDNN's, unless ``LSCAPE_ONEDNN=1``.

    With torch 2.14.1 on an AVX2-only x86 CPU (no AVX-512), oneDNN's convolution backward corrupts the
    heap for small channel counts (a width-4 ResNet with BatchNorm, one thread: "corrupted double-linked
    list", the process aborts); capping oneDNN at AVX or disabling it avoids it. A measurement tool must
    not crash or compute on corrupted memory, so lscape gives up oneDNN's speed on CPU (measured: the same
    user time for SimpleCNN-16, about 20% more for a width-8 ResNet, one epoch on 2,000 MNIST images).
    """
    if os.environ.get("LSCAPE_ONEDNN") != "1":
        torch.backends.mkldnn.enabled = False  # type: ignore[assignment]


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cpu``; ``cuda`` or ``cuda:N``."""
    safe_cpu_kernels()
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
