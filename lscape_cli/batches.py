"""Data given as batches: a ``DataLoader`` or any iterable of ``(inputs, targets)``, dict inputs included.

The Python API (:mod:`lscape_cli.api`) takes data as tensors, a data file, or batches. Batches are
joined once into whole-split tensors (:func:`join`), so every mean is the exact mean over all units,
whatever the batch sizes: a ragged last batch is weighted by its own units, like any chunk
(:mod:`lscape_cli.core.losses`). Inputs may be a tensor or a dict of tensors (a Hugging Face style
``model(**batch)``): a dict becomes an :class:`Inputs`, which slices like a tensor along the sample axis
and is passed to the model as keyword arguments by :func:`keyword_inputs`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from lscape_cli.errors import LscapeError


class Inputs(Mapping[str, torch.Tensor]):
    """Named input tensors with a common sample axis, sliced together (``x[a:b]``, ``x[index]``)."""

    def __init__(self, tensors: Mapping[str, torch.Tensor]) -> None:
        self.tensors = dict(tensors)
        sizes = {int(t.shape[0]) for t in self.tensors.values()}
        if len(sizes) != 1:
            raise LscapeError(
                f"the input tensors have different sample counts {sorted(sizes)}",
                "data",
                "give every input tensor the same first dimension",
            )
        self._n = sizes.pop()

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return self.tensors[key]
        return Inputs({k: t[key] for k, t in self.tensors.items()})

    def __iter__(self) -> Iterator[str]:
        return iter(self.tensors)

    def __len__(self) -> int:
        return self._n

    @property
    def shape(self) -> torch.Size:
        """``(N,)``: the sample axis (per-key shapes differ)."""
        return torch.Size([self._n])

    @property
    def device(self) -> torch.device:
        """The device of the first tensor."""
        return next(iter(self.tensors.values())).device

    def is_floating_point(self) -> bool:
        """False: named inputs are never cast to the run's dtype as a whole."""
        return False

    def element_size(self) -> int:
        """Bytes per element of the first tensor (memory estimates)."""
        return next(iter(self.tensors.values())).element_size()

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Inputs:
        """On ``device``; floating tensors in ``dtype`` (integer ids are kept)."""
        return Inputs({k: _cast(t, device, dtype) for k, t in self.tensors.items()})


def _cast(t: torch.Tensor, device: torch.device | str, dtype: torch.dtype | None) -> torch.Tensor:
    t = torch.as_tensor(t).to(device=device)
    return t.to(dtype) if dtype is not None and t.is_floating_point() else t


def is_batches(data: Any) -> bool:
    """Whether ``data`` is an iterable of batches rather than an ``(x, y)`` pair, dict of splits or path.

    A list or tuple is batches when every element is an ``(inputs, targets)`` pair itself.
    """
    if isinstance(data, (tuple, list)):
        return bool(data) and all(isinstance(b, (tuple, list)) and len(b) == 2 for b in data)
    if isinstance(data, (dict, str, bytes, torch.Tensor)) or hasattr(data, "__fspath__"):
        return False
    return isinstance(data, Iterable)


def join(batches: Iterable[Any], device: torch.device, dtype: torch.dtype) -> tuple[Any, torch.Tensor]:
    """All batches as one ``(x, y)``: tensors concatenated along the sample axis (dict inputs per key)."""
    xs: list[Any] = []
    ys: list[torch.Tensor] = []
    for i, batch in enumerate(batches):
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
            raise LscapeError(
                f"batch {i} is a {type(batch).__name__}, not an (inputs, targets) pair",
                "data",
                "yield (inputs, targets) from the loader (a collate_fn can build the pair)",
            )
        xs.append(batch[0])
        ys.append(torch.as_tensor(batch[1]))
    if not xs:
        raise LscapeError("the loader yielded no batch", "data", "give a loader over a non-empty dataset")
    y = torch.cat(ys).to(device)
    if y.is_floating_point():
        y = y.to(dtype)
    if isinstance(xs[0], Mapping):
        keys = list(xs[0])
        return Inputs({k: torch.cat([torch.as_tensor(b[k]) for b in xs]) for k in keys}).to(device, dtype), y
    return _cast(torch.cat([torch.as_tensor(b) for b in xs]), device, dtype), y


def keyword_inputs(model: nn.Module) -> RemovableHandle:
    """A forward pre-hook: ``model(Inputs)`` runs as ``model(**inputs)`` (``.remove()`` undoes it)."""

    def hook(_: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any] | None:
        if len(args) == 1 and isinstance(args[0], Inputs):
            return (), {**kwargs, **args[0].tensors}
        return None

    return model.register_forward_pre_hook(hook, with_kwargs=True)
