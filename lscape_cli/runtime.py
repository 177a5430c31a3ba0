"""Device and dtype resolution shared by every command, and the one guard lscape puts around oneDNN."""

from __future__ import annotations

import types

import torch
from torch import nn

from lscape_cli.errors import LscapeError

DTYPES = {"float32": torch.float32, "float64": torch.float64}
ONEDNN_SAFE_CHANNELS = 8  # AVX2's float32 SIMD width: 1x1 strided convolutions with fewer input channels


def needs_onednn_guard(conv: nn.Module) -> bool:
    """Whether ``conv`` is in the class of convolutions whose oneDNN weight gradient corrupts the heap.

    With torch 2.14.1 (oneDNN 3.12) on an AVX2-only x86 CPU, the weight gradient of a 2-D convolution
    with a 1x1 kernel, a stride above 1 and fewer than 8 input channels per group writes past its
    buffer when the input or the weight is in channels-last layout: the process aborts ("corrupted
    double-linked list", "free(): invalid next size") a few calls later. Found bisecting a width-4
    ResNet with BatchNorm trained on 8x8 digits (its 4 -> 8 channel, stride-2 shortcut; the input was
    channels-last because a one-channel image batch has ambiguous strides). Measured one case per
    process, 30 backward passes each, against torch's native kernels: input channels 1-7 abort (stride
    2 and 3, any output channels, with or without the input gradient), 8, 9, 12, 15, 16 and 24 are
    correct; contiguous layout, 3x3 or 2x2 kernels, stride 1, padding 1, float64, Conv1d and
    channels-last Conv3d are correct. Capping oneDNN at AVX (``ONEDNN_MAX_CPU_ISA=AVX``) also avoids it
    (its AVX2 1x1 kernel is the faulty one), at the price of every other convolution.
    """
    return (
        isinstance(conv, nn.Conv2d)
        and tuple(conv.kernel_size) == (1, 1)
        and tuple(conv.stride) != (1, 1)
        and conv.in_channels // conv.groups < ONEDNN_SAFE_CHANNELS
    )


def _contiguous_conv_forward(self: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``Conv2d.forward`` with input and weight copied to the plain (NCHW) layout, on the CPU only."""
    weight = self.weight
    if x.device.type == "cpu":  # a fresh copy, not .contiguous(): one-channel tensors pass as both layouts
        x = x.clone(memory_format=torch.contiguous_format)
        weight = weight.clone(memory_format=torch.contiguous_format)
    out: torch.Tensor = self._conv_forward(x, weight, self.bias)
    return out


def guard_onednn(model: nn.Module) -> int:
    """Route every convolution of :func:`needs_onednn_guard`'s class through the plain layout.

    oneDNN stays on for everything else: its contiguous-layout kernel for the same shapes is correct,
    and the copies are of tensors with fewer than 8 channels. The guard is an instance attribute, so
    ``functional_call`` and ``torch.func`` transforms go through it; it changes no parameter or result.

    Returns:
        how many convolutions were guarded.
    """
    guarded = 0
    for module in model.modules():
        if needs_onednn_guard(module):
            module.forward = types.MethodType(_contiguous_conv_forward, module)
            guarded += 1
    return guarded


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
