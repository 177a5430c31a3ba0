"""Attention kernels for second derivatives.

``torch.nn.functional.scaled_dot_product_attention`` (used by ``nn.MultiheadAttention``,
``nn.TransformerEncoderLayer`` and most hand-written transformers) dispatches to fused kernels whose
backward has no derivative of its own: on CPU the flash kernel fails a double backward with
"derivative for aten::_scaled_dot_product_flash_attention_for_cpu_backward is not implemented", and
the CUDA flash and memory-efficient kernels are in the same case. Hessian and curvature products
therefore run the model's forward under :func:`hessian_attention`, which selects the math backend
(``torch.nn.attention.sdpa_kernel``): attention composed of ordinary matrix products and a softmax,
every one twice differentiable, on every device. Its values equal the fused kernels' up to rounding.

The same block turns off the "fast path" of ``nn.TransformerEncoderLayer`` and ``nn.MultiheadAttention``
(``torch.backends.mha``): inside ``torch.func`` transforms the parameters do not look as if they
required gradients, so those modules take their fused inference kernel, whose forward-mode derivative
is wrong. Measured on a 2-head ``TransformerEncoderLayer``: ``jvp(jacrev(·))`` products differed from
the double backward and from finite differences by 2.9-25 in the Hessian's entries (the matrix was not
even symmetric); with the fast path off they agree to 1e-14. Training's vmap over restarts
(:mod:`lscape_cli.core.training.stacked`) runs under it too: the fused kernels have no batching rule, so torch
would fall back to a slow per-restart loop and warn. Other loss evaluations (slices, connect) keep
torch's own choices.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

BACKEND = "math"  # recorded as hvp.attention_backend
WHY = "the only scaled_dot_product_attention backend with a double backward (torch.nn.attention.sdpa_kernel)"


@contextlib.contextmanager
def hessian_attention(device: torch.device | str) -> Iterator[None]:
    """Run the block with the math attention backend, whatever the device (module docstring)."""
    del device  # the fused kernels of every device lack a double backward
    from torch.nn.attention import SDPBackend, sdpa_kernel

    fast = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)


def describe() -> dict[str, str]:
    """The record's ``attention`` entry."""
    return {"backend": BACKEND, "why": WHY}
