"""Which of a model's outputs is scored: ``--output NAME``.

Many models return more than one tensor: a tuple ``(logits, aux)``, a dict ``{"logits": ...}`` or an
object with attributes (Hugging Face's ``ModelOutput``). lscape scores one tensor of them:

- no name (the default): a tensor as it is; a tuple or list: its element 0; anything else is refused
  with a line naming ``--output``;
- ``--output NAME``: the dict key ``NAME``, else the attribute ``NAME``, else (a number) the element of
  that index of a tuple or list.

The choice is a forward hook on the model (:func:`select_output`), so every evaluation, gradient,
Hessian-vector product and slice sees the same tensor, and it is recorded (the model's ``output`` in
checkpoints and records).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from lscape_cli.errors import LscapeError


class OutputError(LscapeError):
    """The model's output has no tensor by the name asked for."""


def pick(out: Any, name: str | None) -> torch.Tensor:
    """The tensor ``name`` of ``out`` (module docstring), or an :class:`OutputError` naming ``--output``."""
    if name is None:
        if isinstance(out, torch.Tensor):
            return out
        if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
            return out[0]
        raise OutputError(
            f"the model returns a {type(out).__name__}{_keys(out)}, not a tensor",
            "--output",
            "name the tensor to score, e.g. --output logits",
        )
    value: Any = None
    if isinstance(out, Mapping):
        value = out.get(name)
    elif hasattr(out, name):
        value = getattr(out, name)
    elif isinstance(out, (tuple, list)) and name.lstrip("-").isdigit() and -len(out) <= int(name) < len(out):
        value = out[int(name)]
    if not isinstance(value, torch.Tensor):
        raise OutputError(
            f"the model's output ({type(out).__name__}{_keys(out)}) has no tensor {name!r}",
            "--output",
            "name one of its tensors (a dict key, an attribute or a tuple index)",
        )
    return value


def _keys(out: Any) -> str:
    if isinstance(out, Mapping):
        return f" with keys {', '.join(map(str, out))}"
    if isinstance(out, (tuple, list)):
        return f" of {len(out)}"
    return ""


def select_output(module: nn.Module, name: str | None) -> RemovableHandle:
    """Make ``module`` return :func:`pick` of its output (a forward hook; ``.remove()`` undoes it)."""

    def hook(_: nn.Module, __: Any, out: Any) -> torch.Tensor:
        return pick(out, name)

    return module.register_forward_hook(hook)
