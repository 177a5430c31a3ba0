"""The inputs of a split: a tensor in memory, or samples streamed from disk chunk by chunk.

Every consumer (objective, surface, connectivity, training, tracking) reads a split's inputs ``x`` the
same way: ``len(x)`` / ``x.shape[0]`` samples of shape ``x.shape[1:]``, ``x.dtype`` and ``x.device`` of the
chunks, and a chunk read by indexing, ``x[start:stop]`` (a slice) or ``x[idx]`` (an index tensor of any
shape, e.g. ``(R, B)`` minibatches per restart), which returns a tensor on ``x.device``. A
``torch.Tensor`` satisfies this (:class:`SampleArray`) as it is, so the in-memory path is unchanged;
:class:`StreamedSamples` satisfies it by reading only the rows asked for from a :class:`RowSource`
(``.npy`` shards, an image folder: :mod:`lscape_cli.streamdata`). A chunk of a streamed split holds the
same numbers, element for element, as the same slice of the split loaded into memory, so chunk sums
weighted by sample count are the same too.

Labels ``y`` always live in memory (8 bytes a sample): only inputs stream.
"""

from __future__ import annotations

from typing import Protocol, overload

import numpy as np
import torch


class SampleArray(Protocol):
    """What consumers use of a split's inputs (a ``torch.Tensor`` satisfies it)."""

    @property
    def shape(self) -> tuple[int, ...]:
        """``(N, *input_shape)``."""
        ...

    @property
    def dtype(self) -> torch.dtype:
        """The chunks' dtype."""
        ...

    @property
    def device(self) -> torch.device:
        """Where the chunks live."""
        ...

    def __len__(self) -> int: ...

    def __getitem__(self, key: slice | torch.Tensor) -> torch.Tensor: ...


class RowSource(Protocol):
    """Samples on disk, read by global row number (no caching: the OS page cache does that)."""

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one sample as read."""
        ...

    def __len__(self) -> int: ...

    def read(self, rows: np.ndarray) -> np.ndarray:
        """Samples ``rows`` (any order, repeats allowed) as one float32/float64 array, in that order."""
        ...


Norm = tuple[np.ndarray, np.ndarray]  # (mean, std), broadcastable against a (n, *sample_shape) chunk


class StreamedSamples:
    """A split's inputs read from a :class:`RowSource` on demand (see the module docstring).

    Args:
        source: where the rows are.
        index: the split's rows of ``source`` in split order, ``(N,)`` int64.
        device: where chunks go.
        dtype: the chunks' floating dtype.
        norm: ``(mean, std)`` applied as ``(x - mean) / std`` in the source's dtype (standardisation),
            or None.
    """

    def __init__(
        self,
        source: RowSource,
        index: np.ndarray,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        norm: Norm | None = None,
    ) -> None:
        self.source, self.index, self.norm = source, np.asarray(index, dtype=np.int64), norm
        self._device, self._dtype = torch.device(device), dtype

    @property
    def shape(self) -> torch.Size:
        """``(N, *input_shape)``."""
        return torch.Size((len(self.index), *self.source.sample_shape))

    @property
    def dtype(self) -> torch.dtype:
        """The chunks' dtype."""
        return self._dtype

    @property
    def device(self) -> torch.device:
        """Where the chunks live."""
        return self._device

    @property
    def ndim(self) -> int:
        """Axes of the whole split, as for a tensor."""
        return 1 + len(self.source.sample_shape)

    def dim(self) -> int:
        """Axes of the whole split, as for a tensor."""
        return self.ndim

    def __len__(self) -> int:
        return len(self.index)

    def element_size(self) -> int:
        """Bytes per element of a chunk."""
        return torch.empty((), dtype=self._dtype).element_size()

    def is_floating_point(self) -> bool:
        """Inputs are always floating."""
        return True

    def to(
        self,
        target: torch.dtype | torch.device | str | None = None,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> StreamedSamples:
        """The same samples read as another dtype and/or onto another device (``x.to(torch.float64)``)."""
        if isinstance(target, torch.dtype):
            dtype = target
        elif target is not None:
            device = target
        return StreamedSamples(
            self.source,
            self.index,
            self._device if device is None else device,
            self._dtype if dtype is None else dtype,
            self.norm,
        )

    def subset(self, rows: np.ndarray | slice) -> StreamedSamples:
        """Samples ``rows`` of this split, still on disk."""
        return StreamedSamples(self.source, self.index[rows], self._device, self._dtype, self.norm)

    def __getitem__(self, key: slice | int | torch.Tensor | np.ndarray) -> torch.Tensor:
        if isinstance(key, slice):
            rows, shape = self.index[key], None
        else:
            pos = key.detach().cpu().numpy() if isinstance(key, torch.Tensor) else np.asarray(key)
            rows, shape = self.index[pos.reshape(-1)], pos.shape
        data = self.source.read(rows)
        if self.norm is not None:
            data = (data - self.norm[0]) / self.norm[1]
        out = torch.from_numpy(np.ascontiguousarray(data)).to(device=self._device, dtype=self._dtype)
        return out if shape is None else out.reshape(*shape, *self.source.sample_shape)


Inputs = torch.Tensor | StreamedSamples  # a split's inputs


@overload
def span(x: torch.Tensor, start: int | None, stop: int | None) -> torch.Tensor: ...
@overload
def span(x: StreamedSamples, start: int | None, stop: int | None) -> StreamedSamples: ...
@overload
def span(x: Inputs, start: int | None, stop: int | None) -> Inputs: ...
def span(x: Inputs, start: int | None, stop: int | None) -> Inputs:
    """Samples ``start:stop`` kept as they are: on disk when ``x`` streams, else a view of the tensor.

    Where a consumer keeps a part of a split for later passes (a rank's shard, the first M samples),
    this keeps a streamed split streaming; ``x[start:stop]`` would read it into memory.
    """
    return x.subset(slice(start, stop)) if isinstance(x, StreamedSamples) else x[start:stop]


def streams(x: object) -> bool:
    """Whether ``x`` reads its samples from disk."""
    return isinstance(x, StreamedSamples)
