"""The loss as a function of parameters, with the evaluation protocol of DESIGN.md.

- ``ce``: cross-entropy, mean over samples.
- ``mse``: seed 000's convention: squared error *summed over the outputs*, mean over samples, i.e.
  ``(1/N) sum_i ||f(x_i) - t_i||^2`` with ``t_i = onehot(y_i)`` for class labels and ``t_i = y_i`` for
  regression targets.

The task follows the labels' dtype: integer ``y`` of shape ``(N,)`` are class labels (classification);
floating ``y`` of shape ``(N,)`` or ``(N, D)`` are regression targets, which only ``mse`` fits. Accuracy
is defined for classification only; for regression :func:`num_correct` is NaN ("undefined"), and the
records write it as ``null``.

Whole-split values are means over all samples, computed in chunks of at most ``max_batch`` samples and
weighted by chunk size, so chunking changes nothing beyond float rounding.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F  # noqa: N812
from torch.func import functional_call

LOSSES = ("ce", "mse")


def task_of(y: torch.Tensor) -> str:
    """``"regression"`` for floating targets, ``"classification"`` for integer class labels."""
    return "regression" if y.is_floating_point() else "classification"


def mse_target(y: torch.Tensor, num_outputs: int, dtype: torch.dtype) -> torch.Tensor:
    """The MSE target of labels ``y``: one-hot ``(N, C)`` for class labels, ``y`` as ``(N, D)`` otherwise.

    A ``(N,)`` regression target is one output per sample, ``(N, 1)``; the shape is never broadcast.
    """
    if not y.is_floating_point():
        return F.one_hot(y, num_outputs).to(dtype)
    target = y.unsqueeze(-1) if y.dim() == 1 else y
    if target.shape[-1] != num_outputs:
        raise ValueError(f"regression targets have {target.shape[-1]} outputs, the model {num_outputs}")
    return target.to(dtype)


def loss_sum(logits: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
    """Sum over samples of the per-sample loss.

    ``logits``: (N, C); ``y``: (N,) int64 class labels, or (N,) / (N, C) floating regression targets
    (``mse`` only).
    """
    if loss == "ce":
        if y.is_floating_point():
            raise ValueError("cross-entropy takes integer class labels; regression targets need loss='mse'")
        return F.cross_entropy(logits, y, reduction="sum")
    if loss == "mse":
        return (logits - mse_target(y, logits.shape[-1], logits.dtype)).pow(2).sum()
    raise ValueError(f"unknown loss {loss!r}")


def num_correct(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Correct top-1 predictions, summed over the sample axis (the last of ``logits`` but one), float64.

    ``logits``: (..., N, C). NaN for regression targets: accuracy is not defined there.
    """
    if y.is_floating_point():
        return torch.full(logits.shape[:-2], math.nan, dtype=torch.float64, device=logits.device)
    return (logits.argmax(-1) == y).sum(-1).double()


def loss_mean(logits: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
    """Mean over samples of the per-sample loss."""
    return loss_sum(logits, y, loss) / y.shape[0]


SumsFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def chunked_sums(
    fn: SumsFn, x: torch.Tensor, y: torch.Tensor, max_batch: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sums of ``fn(xb, yb) -> (loss_sum, num_correct)`` over chunks of at most ``max_batch`` samples.

    The sums accumulate in the dtype ``fn`` returns, chunk after chunk in order; any leading batch shape
    works (e.g. one value per restart). The one chunk loop of every whole-split evaluation.
    """
    total_loss: torch.Tensor | float = 0.0
    total_correct: torch.Tensor | float = 0.0
    for start in range(0, y.shape[0], max_batch):
        ls, nc = fn(x[start : start + max_batch], y[start : start + max_batch])
        total_loss = total_loss + ls
        total_correct = total_correct + nc
    return torch.as_tensor(total_loss), torch.as_tensor(total_correct)


def chunked_mean(
    fn: SumsFn, x: torch.Tensor, y: torch.Tensor, max_batch: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample-weighted means of ``fn(xb, yb) -> (loss_sum, num_correct)`` over chunks (see chunked_sums)."""
    total_loss, total_correct = chunked_sums(fn, x, y, max_batch)
    return total_loss / y.shape[0], total_correct / y.shape[0]


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss: str,
    max_batch: int = 4096,
    *,
    params: dict[str, torch.Tensor] | None = None,
    buffers: dict[str, torch.Tensor] | None = None,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
    num_samples: int | None = None,
) -> tuple[float, float]:
    """Mean loss and accuracy over a whole split, at ``params``/``buffers`` (default: the module's own).

    The accuracy is NaN for regression targets (see :func:`num_correct`).

    The model runs in its current train/eval mode. Chunk sums accumulate in float64 and are divided by
    the sample count once, so chunking changes nothing beyond float rounding. ``reduce`` adds the
    (loss, correct) sums over ranks when this process holds a shard of ``num_samples`` samples.
    """
    own_params: dict[str, torch.Tensor] = dict(model.named_parameters()) if params is None else params
    own_buffers: dict[str, torch.Tensor] = dict(model.named_buffers()) if buffers is None else buffers
    state = (own_params, own_buffers)

    def fn(xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = functional_call(model, state, (xb,))
        return loss_sum(logits, yb, loss).double(), num_correct(logits, yb)

    sums = torch.stack(chunked_sums(fn, x, y, max_batch))
    if reduce is not None:
        sums = reduce(sums)
    n = int(y.shape[0]) if num_samples is None else num_samples
    total, correct = sums.tolist()
    return total / n, correct / n
