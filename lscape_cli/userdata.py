"""Data from the user's own tensor file: ``--data FILE`` (``.safetensors``, ``.npz`` or ``.pt``).

The file holds ``x`` (inputs, ``(N, ...)``; signed integers are token ids, kept as int64) and ``y``:
integer class labels ``(N,)`` (classification), integer token targets ``(N, T)`` (sequences: the model
returns ``(N, T, V)`` scores and targets equal to -100 are padding, left out of the mean), or floating
targets ``(N,)`` or ``(N, D)`` (regression with ``--loss mse``, multi-label with ``--loss bce``).
Optionally it holds its own splits: ``x_val``/``y_val`` and/or ``x_test``/``y_test``, or a ``split``
array of ``(N,)`` integers (0 train, 1 validation, 2 test). Without explicit splits the validation and
test samples are held out of ``x`` by ``split_seed`` (10% each unless sizes are given), as for the
registry datasets.

Reading never runs code: ``.npz`` is read with ``allow_pickle=False``, ``.pt`` with
``torch.load(weights_only=True)``, safetensors as tensors only. Inputs are used as stored (no
rescaling; ``--normalization standard`` standardises with the training split's statistics). Every
array is checked (names, shapes, label range, finite values, one task across splits) with one clear
error.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from lscape_cli.errors import LscapeError

IGNORE_INDEX = -100  # padding in (N, T) token targets (lscape_cli.core.losses.IGNORE_INDEX)

SUFFIXES = (".safetensors", ".npz", ".pt", ".pth")
PAIRS = (("x", "y"), ("x_val", "y_val"), ("x_test", "y_test"))


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of the file, as numpy (no code runs while reading)."""
    from lscape_cli.storage.files import check_input

    check_input(path, "data file")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise LscapeError(
            f"unknown data file type {suffix or '(none)'!r}",
            str(path),
            "give a .safetensors, .npz or .pt file, or a directory (x.npy and y.npy, .npy shards, "
            "or class folders of images)",
        )
    try:
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                return {k: np.asarray(data[k]) for k in data.files}
        if suffix == ".safetensors":
            from safetensors.numpy import load_file

            return dict(load_file(str(path)))
        return _read_torch(path)
    except LscapeError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged file of any kind is one line
        raise LscapeError(
            f"cannot read the data file ({type(exc).__name__}: {exc})",
            str(path),
            "write it with numpy.savez, safetensors or torch.save of a dict of tensors",
        ) from exc


def _read_torch(path: Path) -> dict[str, np.ndarray]:
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only load failed" not in str(exc).lower():
            raise
        raise LscapeError(
            "the .pt file holds objects other than tensors and plain containers; refused: loading it "
            "could run code",
            str(path),
            "save a dict of tensors, torch.save({'x': x, 'y': y}, path), or use .npz or .safetensors",
        ) from None
    if not isinstance(obj, dict):
        raise LscapeError(
            f"the .pt file holds a {type(obj).__name__}, not a dict of tensors",
            str(path),
            "torch.save({'x': x, 'y': y}, path)",
        )
    return {str(k): v.numpy() if isinstance(v, torch.Tensor) else np.asarray(v) for k, v in obj.items()}


def _check_finite(name: str, arr: np.ndarray, path: Path) -> None:
    if np.issubdtype(arr.dtype, np.floating):
        bad = ~np.isfinite(arr)
        if bad.any():
            first = int(np.argwhere(bad.reshape(arr.shape[0], -1))[0][0]) if arr.ndim else 0
            raise LscapeError(
                f"{name} holds {int(bad.sum())} NaN/inf value(s), the first in sample {first}",
                str(path),
                "remove or impute those samples",
            )


def _check_pair(name_x: str, name_y: str, data: dict[str, np.ndarray], path: Path) -> None:
    x, y = data[name_x], data[name_y]
    if x.ndim and x.shape[0] == 0:
        raise LscapeError(
            f"{name_x} holds no samples (shape {x.shape})", str(path), "store at least one sample"
        )
    if x.ndim < 2:
        raise LscapeError(
            f"{name_x} has shape {x.shape}; inputs need a sample axis and at least one feature axis",
            str(path),
            "store x as (N, features...) e.g. (N, 20) or (N, C, H, W)",
        )
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise LscapeError(f"{name_x} has dtype {x.dtype}", str(path), "store inputs as numbers")
    _check_finite(name_x, x, path)
    if np.issubdtype(y.dtype, np.floating):
        if y.ndim not in (1, 2) or y.shape[0] != x.shape[0]:
            raise LscapeError(
                f"{name_y} has shape {y.shape} but {name_x} has {x.shape[0]} samples",
                str(path),
                f"store regression targets {name_y} as ({x.shape[0]},) or ({x.shape[0]}, D)",
            )
        _check_finite(name_y, y, path)
        return
    if y.ndim not in (1, 2) or y.shape[0] != x.shape[0]:
        raise LscapeError(
            f"{name_y} has shape {y.shape} but {name_x} has {x.shape[0]} samples",
            str(path),
            f"store {name_y} as ({x.shape[0]},) class labels or ({x.shape[0]}, T) token targets",
        )
    if not np.issubdtype(y.dtype, np.integer):
        raise LscapeError(
            f"{name_y} has dtype {y.dtype}",
            str(path),
            f"store {name_y} as integer class labels 0..C-1, or as floats for regression (--loss mse)",
        )
    kept = y[y != IGNORE_INDEX] if y.ndim == 2 else y
    if kept.size and kept.min() < 0:
        raise LscapeError(
            f"{name_y} has negative labels",
            str(path),
            f"use labels 0..C-1 ({IGNORE_INDEX} marks padding in (N, T) token targets)",
        )


def task(y: np.ndarray) -> str:
    """``"regression"`` for floating targets, ``"classification"`` for integer labels."""
    return "regression" if np.issubdtype(y.dtype, np.floating) else "classification"


def num_outputs(splits: dict[str, tuple[np.ndarray, np.ndarray]]) -> int:
    """Model outputs the data asks for: classes ``1 + max label``, or the regression target size ``D``."""
    ys = [y for _, y in splits.values()]
    if task(ys[0]) == "regression":
        return 1 if ys[0].ndim == 1 else int(ys[0].shape[1])
    return 1 + max(int(y.max()) for y in ys if y.size)  # padding (-100) is below every label


def _check_same_task(name: str, y: np.ndarray, y_train: np.ndarray, path: Path) -> None:
    """Every split holds the same kind of label (and, for regression, the same target size)."""
    if (
        task(y) != task(y_train)
        or (y.ndim != y_train.ndim)
        or (task(y) == "regression" and y.shape[1:] != y_train.shape[1:])
    ):
        raise LscapeError(
            f"{name} has dtype {y.dtype} and shape {y.shape} but y has {y_train.dtype} and {y_train.shape}",
            str(path),
            "store every split's labels alike: integers for classes, floats of one shape for regression",
        )


def validate(data: dict[str, np.ndarray], path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Check the arrays and return the explicit splits: ``{"train"|"val"|"test": (x, y)}``.

    Without explicit splits only ``"train"`` is returned (the caller holds samples out of it).
    """
    if "x" not in data or "y" not in data:
        raise LscapeError(
            f"the data file needs arrays 'x' and 'y' (found: {', '.join(sorted(data)) or 'none'})",
            str(path),
            "save them as x (inputs) and y (labels), e.g. numpy.savez(path, x=x, y=y)",
        )
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for (nx, ny), split in zip(PAIRS, ("train", "val", "test"), strict=True):
        if (nx in data) != (ny in data):
            missing = ny if nx in data else nx
            raise LscapeError(f"{missing} is missing", str(path), f"store {nx} and {ny} together")
        if nx in data:
            _check_pair(nx, ny, data, path)
            if data[nx].shape[1:] != data["x"].shape[1:]:
                raise LscapeError(
                    f"{nx} samples have shape {data[nx].shape[1:]} but x's have {data['x'].shape[1:]}",
                    str(path),
                    "store every split with the same sample shape",
                )
            _check_same_task(ny, data[ny], data["y"], path)
            out[split] = (data[nx], data[ny])
    if "split" in data:
        if len(out) > 1:
            raise LscapeError(
                "the data file has both a 'split' array and x_val/x_test", str(path), "keep one of the two"
            )
        out = _by_index(data, path)
    return out


def _by_index(data: dict[str, np.ndarray], path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    split = data["split"]
    x, y = data["x"], data["y"]
    if split.shape != (x.shape[0],) or not np.issubdtype(split.dtype, np.integer):
        raise LscapeError(
            f"'split' has shape {split.shape} and dtype {split.dtype}",
            str(path),
            f"store split as ({x.shape[0]},) integers: 0 train, 1 validation, 2 test",
        )
    if not np.isin(split, (0, 1, 2)).all():
        raise LscapeError(
            "'split' holds values other than 0, 1, 2", str(path), "0 train, 1 validation, 2 test"
        )
    return {s: (x[split == k], y[split == k]) for k, s in enumerate(("train", "val", "test"))}
