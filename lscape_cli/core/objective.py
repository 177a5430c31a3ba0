"""The loss as a function of parameters, with the evaluation protocol of DESIGN.md.

- ``ce``: cross-entropy, mean over samples.
- ``mse``: seed 000's convention: squared error *summed over the outputs* against one-hot targets,
  mean over samples, i.e. ``(1/N) sum_i ||f(x_i) - onehot(y_i)||^2``.

Whole-split values are means over all samples, computed in chunks of at most ``max_batch`` samples and
weighted by chunk size, so chunking changes nothing beyond float rounding.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F  # noqa: N812

LOSSES = ("ce", "mse")


def loss_sum(logits: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
    """Sum over samples of the per-sample loss. ``logits``: (N, C); ``y``: (N,) int64."""
    if loss == "ce":
        return F.cross_entropy(logits, y, reduction="sum")
    if loss == "mse":
        target = F.one_hot(y, logits.shape[-1]).to(logits.dtype)
        return (logits - target).pow(2).sum()
    raise ValueError(f"unknown loss {loss!r}")


def loss_mean(logits: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
    """Mean over samples of the per-sample loss."""
    return loss_sum(logits, y, loss) / y.shape[0]


def chunked_mean(
    fn: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    x: torch.Tensor,
    y: torch.Tensor,
    max_batch: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample-weighted means of ``fn(xb, yb) -> (loss_sum, num_correct)`` over chunks of ``max_batch``.

    Works for any leading batch shape of the returned sums (e.g. one value per restart).
    """
    n = y.shape[0]
    total_loss: torch.Tensor | float = 0.0
    total_correct: torch.Tensor | float = 0.0
    for start in range(0, n, max_batch):
        ls, nc = fn(x[start : start + max_batch], y[start : start + max_batch])
        total_loss = total_loss + ls
        total_correct = total_correct + nc
    return torch.as_tensor(total_loss) / n, torch.as_tensor(total_correct) / n


@torch.no_grad()
def evaluate(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str, max_batch: int = 4096
) -> tuple[float, float]:
    """Mean loss and accuracy of ``model`` (in its current train/eval mode) over a whole split."""

    def fn(xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(xb)
        return loss_sum(logits, yb, loss), (logits.argmax(-1) == yb).sum()

    mean_loss, acc = chunked_mean(fn, x, y, max_batch)
    return float(mean_loss), float(acc)
