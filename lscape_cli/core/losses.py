"""Loss functions: the built-ins, the user's own, and how targets of each shape are weighted.

A loss is a :class:`Loss`, a ``str`` whose value is its spelling on the command line and in records
(``"ce"``, ``"ce:label_smoothing=0.1"``, ``"mse"``, ``"bce"``, ``"user:my_loss.py:loss"``), carrying
the settings and, for a user loss, the callable. Being a string, a loss compares, hashes and
serialises by its spelling; plain strings (``"ce"``) are accepted everywhere through :func:`as_loss`.

Target rules (the model's output ``z`` against the targets ``y``):

- class labels: ``y`` ``(N,)`` integers, ``z`` ``(N, C)``; one unit per sample.
- token sequences: ``y`` ``(N, T)`` integers, ``z`` ``(N, T, V)``; one unit per token whose target is
  not ``ignore_index`` (default -100, the padding value). Cross-entropy only.
- regression targets (``mse``): floating ``y`` ``(N,)`` or ``(N, D)``; one unit per sample.
- multi-label targets (``bce``): floating ``y`` ``(N, C)`` in ``[0, 1]``, ``z`` ``(N, C)`` logits;
  binary cross-entropy summed over the ``C`` labels, one unit per sample.
- a user loss ``FUNC(outputs, targets) -> scalar``: the mean loss of the batch it is given, taken as a
  mean over its samples (one unit per sample, whatever the shapes).

Every whole-split value is ``(Σ_chunks sum_c) / (Σ_chunks units_c)``: a chunk contributes the sum of its
units' losses (for a user loss, its mean times its sample count), and the division happens once, by the
split's unit count, so chunking and batching never change the result beyond rounding. Accuracy is the
fraction of units whose argmax hits the target (token accuracy for sequences); NaN for floating targets.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypedDict

import torch
import torch.nn.functional as F  # noqa: N812

from lscape_cli.errors import LscapeError

BUILTIN = ("ce", "mse", "bce")
IGNORE_INDEX = -100
_SETTINGS = {"label_smoothing": float, "ignore_index": int}

LossFn = Callable[[Any, torch.Tensor], torch.Tensor]


class LossOrigin(TypedDict):
    """A user loss's provenance: its ``PATH.py:FUNC`` (or ``module:name``), file and the file's sha256."""

    source: str
    file: str | None
    sha256: str | None


class _LossUnits(TypedDict):
    name: str
    kind: str
    units: str
    reduction: str


class LossDefinition(_LossUnits, total=False):
    """:meth:`Loss.describe`: a record's ``loss_definition`` (``ce`` settings, a user loss's provenance)."""

    label_smoothing: float
    ignore_index: int
    definition: LossOrigin


class Loss(str):
    """A loss function with its settings; the string value is its spelling (module docstring).

    Attributes:
        kind: ``"ce"``, ``"mse"``, ``"bce"`` or ``"user"``.
        label_smoothing: cross-entropy only: the smoothing ``ε`` of ``torch.nn.functional.cross_entropy``.
        ignore_index: integer targets equal to it are left out (padding tokens).
        fn: a user loss's callable (None for built-ins).
        origin: a user loss's provenance for records (source, file, sha256); None for built-ins.
    """

    kind: str
    label_smoothing: float
    ignore_index: int
    fn: LossFn | None
    origin: LossOrigin | None

    def __new__(
        cls,
        kind: str = "ce",
        *,
        label_smoothing: float = 0.0,
        ignore_index: int = IGNORE_INDEX,
        fn: LossFn | None = None,
        source: str | None = None,
        origin: LossOrigin | None = None,
    ) -> Loss:
        """Build and check a loss; ``source`` names a user loss (its ``PATH.py:FUNC``)."""
        if kind not in (*BUILTIN, "user"):
            raise ValueError(f"unknown loss {kind!r}: expected one of {', '.join(BUILTIN)} or a --loss-def")
        if kind == "user" and (fn is None or not source):
            raise ValueError("a user loss needs its callable and its source")
        if not (0.0 <= label_smoothing < 1.0) or (label_smoothing and kind != "ce"):
            raise ValueError(f"label_smoothing must lie in [0, 1) and only with ce, got {label_smoothing}")
        parts = []
        if label_smoothing:
            parts.append(f"label_smoothing={label_smoothing:g}")
        if ignore_index != IGNORE_INDEX:
            parts.append(f"ignore_index={ignore_index}")
        text = f"user:{source}" if kind == "user" else kind + (":" + ",".join(parts) if parts else "")
        self = super().__new__(cls, text)
        self.kind, self.label_smoothing, self.ignore_index = kind, float(label_smoothing), int(ignore_index)
        self.fn, self.origin = fn, origin
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Loss:
        return self  # immutable (dataclasses.asdict deep-copies config values)

    def __copy__(self) -> Loss:
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return (str, (str(self),))  # pickles as its spelling (a user loss is re-imported by name)

    # ----------------------------------------------------------------------------------- the maths

    def units(self, y: torch.Tensor) -> torch.Tensor:
        """Units the mean runs over in ``y``: non-ignored integer targets for ``ce``, samples otherwise."""
        if self.kind == "ce" and not y.is_floating_point():
            return (y != self.ignore_index).sum()
        return torch.tensor(int(y.shape[0]), device=y.device)

    def sum(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # noqa: A003 - the loss's sum
        """Sum over the units of ``(z, y)`` of the per-unit loss (module docstring's shape rules)."""
        if self.kind == "user":
            return self._user_sum(z, y)
        check_shapes(self, z, y)
        if self.kind == "ce":
            return F.cross_entropy(
                z.reshape(-1, z.shape[-1]),
                y.reshape(-1),
                ignore_index=self.ignore_index,
                label_smoothing=self.label_smoothing,
                reduction="sum",
            )
        if self.kind == "bce":
            return F.binary_cross_entropy_with_logits(z, y.to(z.dtype), reduction="sum")
        return (z - mse_target(y, z.shape[-1], z.dtype)).pow(2).sum()

    def _user_sum(self, z: Any, y: torch.Tensor) -> torch.Tensor:
        assert self.fn is not None
        try:
            value = self.fn(z, y)
        except Exception as exc:  # noqa: BLE001 - user code: any failure is one line
            raise LossValueError(
                f"the loss {self[5:]} raised {type(exc).__name__}: {exc}",
                "--loss-def",
                "fix the function: FUNC(outputs, targets) -> the batch's mean loss",
            ) from exc
        if not isinstance(value, torch.Tensor) or value.dim() != 0:
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise LossValueError(
                f"the loss {self[5:]} returned {got}, not a scalar tensor",
                "--loss-def",
                "return the batch's mean loss as a 0-dim tensor (e.g. .mean())",
            )
        return value * int(y.shape[0])

    def correct(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Units whose top-1 prediction hits the target, summed over ``y``'s axes, float64.

        ``z``: ``(..., *y.shape, C)`` (leading axes, e.g. one per restart, are kept). NaN where accuracy
        is not defined (floating targets, or outputs that do not carry one score row per target).
        """
        if y.is_floating_point():  # (..., N, D) outputs: one value per leading index
            return torch.full(z.shape[:-2], math.nan, dtype=torch.float64, device=z.device)
        lead = z.shape[: max(z.dim() - y.dim() - 1, 0)]
        if z.dim() < y.dim() + 1 or z.shape[len(lead) : -1] != y.shape:
            return torch.full(lead, math.nan, dtype=torch.float64, device=z.device)
        hit = (z.argmax(-1) == y) & (y != self.ignore_index)
        return hit.flatten(len(lead)).sum(-1).double()

    def describe(self) -> LossDefinition:
        """The record's ``loss_definition``: what is summed, what is a unit, the settings."""
        units = {
            "ce": "non-ignored targets (samples for (N,) labels, tokens for (N, T) sequences)",
            "user": "samples (the loss's value on a batch is taken as its mean over the batch's samples)",
        }.get(self.kind, "samples")
        out: LossDefinition = {
            "name": str(self),
            "kind": self.kind,
            "units": units,
            "reduction": "sum over units / number of units in the split (chunks and batches weighted by "
            "their units)",
        }
        if self.kind == "ce":
            out.update({"label_smoothing": self.label_smoothing, "ignore_index": self.ignore_index})
        if self.origin is not None:
            out["definition"] = LossOrigin(**self.origin)  # a copy
        return out


class LossValueError(LscapeError):
    """A user loss failed or returned something other than a scalar tensor."""


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


def check_shapes(loss: Loss, z: torch.Tensor, y: torch.Tensor) -> None:
    """Refuse outputs and targets that fit none of the module docstring's rules for this loss."""
    if loss.kind == "user":
        return
    if loss.kind == "ce":
        if y.is_floating_point():
            raise ValueError("cross-entropy takes integer class labels; regression targets need loss='mse'")
        if y.dim() not in (1, 2) or tuple(z.shape[:-1]) != tuple(y.shape):
            raise ValueError(
                f"outputs {tuple(z.shape)} do not fit targets {tuple(y.shape)}: cross-entropy takes (N, C) "
                "scores with (N,) labels or (N, T, V) scores with (N, T) token targets"
            )
        return
    if loss.kind == "bce" and (not y.is_floating_point() or tuple(z.shape) != tuple(y.shape)):
        raise ValueError(
            f"binary cross-entropy takes floating multi-label targets shaped like the outputs; got "
            f"outputs {tuple(z.shape)} and targets {tuple(y.shape)} ({y.dtype})"
        )
    if loss.kind == "mse" and (z.dim() != 2 or y.dim() not in (1, 2)):
        raise ValueError(
            f"mse takes (N, C) outputs with (N,) labels or (N,)/(N, D) targets; got outputs "
            f"{tuple(z.shape)} and targets {tuple(y.shape)}"
        )


def parse(text: str) -> Loss:
    """A built-in loss from its spelling ``KIND[:key=value,...]``, e.g. ``ce:label_smoothing=0.1``."""
    if isinstance(text, Loss):
        return text
    kind, _, rest = str(text).partition(":")
    if kind == "user":
        raise ValueError(f"{text!r} is a user loss: its code is only imported when named with --loss-def")
    settings: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq or key.strip() not in _SETTINGS:
            raise ValueError(f"unknown loss setting {item!r} in {text!r}: expected {', '.join(_SETTINGS)}")
        try:
            settings[key.strip()] = _SETTINGS[key.strip()](value)
        except ValueError as exc:
            raise ValueError(f"invalid value {value!r} for {key.strip()} in {text!r}") from exc
    return Loss(kind, **settings)


def as_loss(loss: str) -> Loss:
    """``loss`` as a :class:`Loss` (a :class:`Loss` is returned as is; a plain string is parsed)."""
    return loss if isinstance(loss, Loss) else parse(loss)


def target_kind(y: torch.Tensor) -> str:
    """``"labels"`` (N,), ``"tokens"`` (N, T) integers, or ``"targets"`` (floating)."""
    if y.is_floating_point():
        return "targets"
    return "tokens" if y.dim() == 2 else "labels"
