"""Loss and accuracy at many points of an affine subspace ``theta + sum_k c_k d_k``.

Used by ``slice`` (lines and planes through a checkpoint) and ``connect`` (the segment between two
minima: ``theta_A + alpha (theta_B - theta_A)``). Every point is placed absolutely from ``theta`` and
its coefficients -- never by accumulating in-place steps -- and evaluated over the whole split in eval
mode, in chunks of ``max_batch`` samples weighted by sample count.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from lscape_cli.core.hvp import Params
from lscape_cli.core.objective import loss_sum

ProgressFn = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class Subspace:
    """An affine subspace of parameter space: a centre and K directions (name -> tensor dicts)."""

    model: nn.Module  # eval mode
    theta: Params
    buffers: Params
    directions: list[Params]

    def point(self, coeffs: torch.Tensor) -> Params:
        """``theta + sum_k coeffs[k] * d_k`` (coeffs: (K,))."""
        out = {n: t.clone() for n, t in self.theta.items()}
        for c, d in zip(coeffs.tolist(), self.directions, strict=True):
            for n in out:
                out[n].add_(d[n], alpha=c)
        return out


@torch.no_grad()
def evaluate_points(
    space: Subspace,
    coeffs: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    loss: str,
    max_batch: int = 4096,
    on_step: ProgressFn | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean loss and accuracy at each point; ``coeffs`` is (P, K); returns two (P,) float64 tensors.

    Reference implementation: one forward pass over the split per point.
    """
    p = coeffs.shape[0]
    losses = torch.empty(p, dtype=torch.float64)
    accs = torch.empty(p, dtype=torch.float64)
    n = y.shape[0]
    for i in range(p):
        params = space.point(coeffs[i])
        total, correct = 0.0, 0
        for start in range(0, n, max_batch):
            logits = functional_call(space.model, (params, space.buffers), (x[start : start + max_batch],))
            yb = y[start : start + max_batch]
            total += float(loss_sum(logits, yb, loss))
            correct += int((logits.argmax(-1) == yb).sum())
        losses[i], accs[i] = total / n, correct / n
        if on_step is not None:
            on_step({"estimator": "surface", "step": i + 1, "total": p})
    return losses, accs
