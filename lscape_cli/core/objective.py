"""The loss as a function of parameters, with the evaluation protocol of DESIGN.md.

- ``ce``: cross-entropy, mean over samples (class labels) or over non-ignored tokens (sequences),
  optionally label-smoothed.
- ``bce``: binary cross-entropy on logits for multi-label targets, summed over labels, mean over samples.
- a user loss (``--loss-def``), see :mod:`lscape_cli.core.losses` for every loss's shape rules.
- ``mse``: seed 000's convention: squared error *summed over the outputs*, mean over samples, i.e.
  ``(1/N) sum_i ||f(x_i) - t_i||^2`` with ``t_i = onehot(y_i)`` for class labels and ``t_i = y_i`` for
  regression targets.

The task follows the labels' dtype: integer ``y`` of shape ``(N,)`` are class labels, ``(N, T)`` token
targets (classification); floating ``y`` of shape ``(N,)`` or ``(N, D)`` are regression (``mse``) or
multi-label (``bce``) targets. Accuracy is defined for classification only (token accuracy for
sequences); otherwise :func:`num_correct` is NaN ("undefined"), and the records write it as ``null``.

Whole-split values are means over all units (samples, or non-ignored tokens), computed in chunks of at
most ``max_batch`` samples whose sums are added and divided once by the split's unit count, so chunking
changes nothing beyond float rounding.

:class:`Objective` is that mean over one split as a function of a parameter dict (the model, the point
``θ``, the data, the chunk size): what the Hessian-vector products of :mod:`lscape_cli.core.linalg.hvp`
differentiate.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypedDict

import torch
from torch import nn
from torch.func import functional_call

from lscape_cli.core.attention import hessian_attention
from lscape_cli.core.losses import BUILTIN, LossDefinition, as_loss, mse_target
from lscape_cli.core.params import Params

__all__ = ["LOSSES", "Objective", "Shard", "chunked_mean", "chunked_sums", "evaluate", "loss_mean",
           "loss_sum", "mse_target", "num_correct", "num_units", "task_of"]  # fmt: skip

LOSSES = BUILTIN  # the built-in losses; a user's own comes through --loss-def (core/losses.py)


class EvalProtocol(TypedDict):
    """How a checkpoint was evaluated: a record's ``config.evaluation`` (built by ``models.evaluation``)."""

    split: str
    num_samples: int
    samples: int | None  # the first M samples only (train --track's protocol)
    mode: str  # eval or train (BatchNorm statistics, dropout)
    loss: str
    loss_source: str
    loss_definition: LossDefinition
    num_units: int
    weighting: str
    max_batch: int
    dataset: dict[str, object]  # DatasetSpec.describe(): name, sizes, shapes, normalisation, ...


def task_of(y: torch.Tensor) -> str:
    """``"regression"`` for floating targets, ``"classification"`` for integer labels or tokens."""
    return "regression" if y.is_floating_point() else "classification"


def loss_sum(logits: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
    """Sum over the units (samples, or non-ignored tokens) of the per-unit loss (core/losses.py).

    ``logits``: (N, C) with ``y`` (N,) int64 class labels or (N,) / (N, C) floating targets, or
    (N, T, V) with ``y`` (N, T) token targets.
    """
    return as_loss(loss).sum(logits, y)


def num_units(y: torch.Tensor, loss: str) -> int:
    """Units the mean runs over: samples, or non-ignored tokens for cross-entropy on sequences."""
    return int(as_loss(loss).units(y))


def num_correct(logits: torch.Tensor, y: torch.Tensor, loss: str = "ce") -> torch.Tensor:
    """Correct top-1 predictions summed over the units, float64 (``logits``: (..., *y.shape, C)).

    NaN for floating targets: accuracy is not defined there. Targets equal to the loss's
    ``ignore_index`` never count.
    """
    return as_loss(loss).correct(logits, y)


def loss_mean(logits: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
    """Mean over the units of ``y`` of the per-unit loss (a minibatch's training loss)."""
    spec = as_loss(loss)
    return spec.sum(logits, y) / spec.units(y).clamp(min=1)


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
    fn: SumsFn, x: torch.Tensor, y: torch.Tensor, max_batch: int, loss: str = "ce"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit-weighted means of ``fn(xb, yb) -> (loss_sum, num_correct)`` over chunks (see chunked_sums)."""
    total_loss, total_correct = chunked_sums(fn, x, y, max_batch)
    n = num_units(y, loss)
    return total_loss / n, total_correct / n


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
    (loss, correct) sums over ranks when this process holds a shard of ``num_samples`` units (samples,
    or non-ignored tokens) in all.
    """
    own_params: dict[str, torch.Tensor] = dict(model.named_parameters()) if params is None else params
    own_buffers: dict[str, torch.Tensor] = dict(model.named_buffers()) if buffers is None else buffers
    state = (own_params, own_buffers)

    def fn(xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = functional_call(model, state, (xb,))
        return loss_sum(logits, yb, loss).double(), num_correct(logits, yb, loss)

    sums = torch.stack(chunked_sums(fn, x, y, max_batch))
    if reduce is not None:
        sums = reduce(sums)
    n = num_units(y, loss) if num_samples is None else num_samples
    total, correct = sums.tolist()
    return total / n, correct / n


# ---------------------------------------------------------------------------------------------------------
# The whole-split objective the Hessian-vector products differentiate (:mod:`lscape_cli.core.linalg.hvp`).

_RANDOM_MODULES = (
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.modules.batchnorm._BatchNorm,
)


@dataclass(frozen=True)
class Shard:
    """The part of a data-parallel objective held by one process (torch.distributed).

    Every rank holds a disjoint slice of the split; chunk losses are divided by the global ``total`` and
    each rank's partial sums (loss, gradient, Hessian-vector products) are summed across ranks by
    ``reduce`` (an all-reduce). Random vectors come from seeded generators, identical on every rank, so
    every rank runs the same estimator on the same operator and reaches the same numbers.
    """

    total: int  # units (samples, or non-ignored tokens) over all ranks
    reduce: Callable[[torch.Tensor], torch.Tensor]  # sum over ranks


@dataclass(frozen=True, eq=False)
class Objective:
    """The whole-split loss ``L(θ) = (1/N) Σ_i ℓ(f(θ, x_i), y_i)`` as a function of a parameter dict.

    Attributes:
        model: the architecture; only its forward is used (through ``functional_call``). It must be in
            eval mode if it has dropout or BatchNorm, so that ``H`` is a fixed symmetric matrix.
        params: name -> tensor, the point ``θ`` at which derivatives are taken (never modified).
        buffers: name -> tensor, e.g. BatchNorm running statistics.
        x: inputs, ``(N, *input_shape)``.
        y: integer labels ``(N,)``, or floating regression targets ``(N,)``/``(N, D)`` (``mse``).
        loss: ``"ce"``, ``"mse"``, ``"bce"`` or a :class:`~lscape_cli.core.losses.Loss` (a user loss,
            label smoothing, ``ignore_index``); see :mod:`lscape_cli.core.losses`.
        max_batch: samples per chunk (bounds memory; does not change the result).
    """

    model: nn.Module
    params: Params
    buffers: Params
    x: torch.Tensor
    y: torch.Tensor
    loss: str = "ce"
    max_batch: int = 4096
    shard: Shard | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "loss", as_loss(self.loss))  # raises on an unknown loss
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}")
        if self.x.shape[0] != self.y.shape[0] or self.y.shape[0] == 0:
            raise ValueError(
                f"x and y must hold the same positive number of samples, got "
                f"{self.x.shape[0]} and {self.y.shape[0]}"
            )
        if self.shard is None and num_units(self.y, self.loss) == 0:
            raise ValueError("every target equals the loss's ignore_index: the mean has no units")
        random = sorted({type(m).__name__ for m in self.model.modules() if isinstance(m, _RANDOM_MODULES)})
        if self.model.training and random:
            raise ValueError(
                f"model is in train mode with {', '.join(random)}: Hessian-vector products need a "
                "deterministic loss; call model.eval() first"
            )

    @classmethod
    def from_module(
        cls,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        loss: str = "ce",
        max_batch: int = 4096,
        shard: Shard | None = None,
    ) -> Objective:
        """The objective at ``model``'s current parameters (detached; the module is not modified)."""
        params = {n: p.detach() for n, p in model.named_parameters()}
        buffers = {n: b.detach() for n, b in model.named_buffers()}
        return cls(model, params, buffers, x, y, loss, max_batch, shard)

    @property
    def num_samples(self) -> int:
        """``N``, the number of samples the mean runs over (all ranks' shards together)."""
        return self.shard.total if self.shard is not None else int(self.y.shape[0])

    @property
    def num_units(self) -> int:
        """The units the mean runs over: samples, or non-ignored tokens (all ranks' shards together)."""
        return self.shard.total if self.shard is not None else num_units(self.y, self.loss)

    def reduce(self, t: torch.Tensor) -> torch.Tensor:
        """Sum a per-shard partial sum over ranks (identity in a single process)."""
        return self.shard.reduce(t) if self.shard is not None else t

    def chunks(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``(x_c, y_c)`` slices of at most ``max_batch`` samples of this process's data."""
        for start in range(0, int(self.y.shape[0]), self.max_batch):
            yield self.x[start : start + self.max_batch], self.y[start : start + self.max_batch]

    def chunk_loss(self, params: Params, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        """A chunk's share of the mean, ``loss_sum(f(θ, x_c), y_c) / N`` (``N``: :attr:`num_units`).

        Runs under :func:`~lscape_cli.core.attention.hessian_attention` so attention layers use a
        kernel with a double backward.
        """
        with hessian_attention(xb.device):
            logits = functional_call(self.model, (params, self.buffers), (xb,))
        return loss_sum(logits, yb, self.loss) / self.num_units
