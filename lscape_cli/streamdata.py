"""Data that need not fit in memory: ``--data DIR``, read chunk by chunk from disk.

``DIR`` is one of two layouts (decided by whether it holds any ``.npy`` file):

- **Arrays** (``format`` ``npy`` or ``npy-shards``): ``x.npy`` and ``y.npy``, or shards ``x-00000.npy``,
  ``x-00001.npy``, ... with ``y-00000.npy``, ``y-00001.npy``, ... (five digits, numbered from 0 without
  gaps; shard ``k`` of ``x`` and of ``y`` hold the same samples; the split is their concatenation).
  Optional splits of their own, in either form: ``x_val``/``y_val``, ``x_test``/``y_test``, or
  ``split.npy`` ((N,) integers: 0 train, 1 validation, 2 test), exactly as for a tensor file
  (:mod:`lscape_cli.userdata`). Inputs keep their stored values (cast to float32, float64 kept); labels
  are integers (classes) or floats (regression targets, ``--loss mse``).
- **Image folder** (``format`` ``image-folder``, torchvision's ``ImageFolder`` layout): one folder per
  class, ``DIR/CLASS/*.png`` (any depth below the class folder; extensions as ImageFolder's); labels
  are the class folders in sorted order. With subfolders named only ``train``/``val``/``test`` (``train``
  among them), each is such a folder and is that split. Transform, recorded in the dataset
  description: decode, convert to RGB, resize the shorter side to ``image_size`` (bilinear, Pillow),
  centre-crop ``image_size`` x ``image_size``, scale to [0, 1], channels first ``(3, S, S)``.

Only labels are read into memory; inputs are read on demand, a chunk at a time (a ``.npy`` file is
mapped for the length of one read and unmapped after it), so the process holds a few chunks whatever
the size of the data, and the OS page cache serves repeated passes. Non-finite inputs are refused when a chunk
holding them is read.

A directory's identity is a cheap ``fingerprint`` (:func:`fingerprint`) rather than a full sha256.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lscape_cli.core.samples import RowSource
from lscape_cli.errors import LscapeError

DEFAULT_IMAGE_SIZE = 32
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
FINGERPRINT_METHOD = "sha256 over (relative path, size, first and last 64 KiB) of every file, in path order"
_EDGE = 1 << 16  # bytes of each end of a file that the fingerprint reads
_MAP_ROWS = 128  # rows gathered per mapping of a .npy file (scattered rows: ~64 KiB mapped each)
_SPLIT_NAMES = {"train": "", "val": "_val", "test": "_test"}


@dataclass(frozen=True)
class Part:
    """One split of the directory: where its inputs are, and its labels in memory."""

    source: RowSource
    y: np.ndarray  # (N,) int64 labels or (N,) / (N, D) float64 targets
    rows: np.ndarray  # (N,) rows of ``source`` in split order


@dataclass(frozen=True)
class Directory:
    """A ``--data DIR`` opened: its splits, what it is, and the files it reads."""

    format: str  # "npy", "npy-shards" or "image-folder"
    parts: dict[str, Part]  # "train" always; "val"/"test" when the directory has its own
    num_classes: int  # classes, or the regression target size D
    files: list[Path]
    transform: dict[str, object] | None = None  # image folder: how a file becomes a sample
    classes: list[str] = field(default_factory=list)  # image folder: label -> class folder


def open_dir(path: Path, image_size: int | None = None) -> Directory:
    """Open ``--data DIR`` (layout from its files), checking everything short of reading the inputs."""
    if not path.is_dir():
        raise LscapeError("data directory not found", str(path), "check the path")
    if any(p.suffix == ".npy" for p in path.iterdir()):
        if image_size is not None:
            raise LscapeError(
                "--image-size applies to image folders", str(path), "drop it for a directory of arrays"
            )
        return _open_arrays(path)
    return _open_images(path, DEFAULT_IMAGE_SIZE if image_size is None else image_size)


# ------------------------------------------------------------------------------------------------ arrays


@dataclass(frozen=True)
class _Npy:
    """One ``.npy`` file's header: its rows start at ``offset``, C order."""

    path: Path
    shape: tuple[int, ...]
    dtype: np.dtype
    offset: int

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize


def _header(path: Path) -> _Npy:
    """Shape, dtype and data offset of a ``.npy`` file, with one error line for anything unusable."""
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            read = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, fortran, dtype = read(fh)
            offset = fh.tell()
    except (OSError, ValueError) as exc:
        raise LscapeError(f"not a .npy array ({exc})", str(path), "write it with numpy.save") from exc
    if dtype.hasobject or len(shape) == 0:
        raise LscapeError(f"holds {dtype} {shape}", str(path), "store a numeric array with a sample axis")
    if fortran and len(shape) > 1:
        raise LscapeError(
            "is Fortran-ordered", str(path), "save it C-ordered: numpy.save(path, numpy.ascontiguousarray(a))"
        )
    need = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if path.stat().st_size < need:
        raise LscapeError(
            f"is truncated ({path.stat().st_size} of {need} bytes)", str(path), "write it again"
        )
    return _Npy(path, tuple(int(s) for s in shape), dtype, offset)


class NpyRows:
    """The rows of one or more ``.npy`` files (shards, concatenated), read a chunk at a time."""

    def __init__(self, parts: list[_Npy]) -> None:
        self.parts = parts
        self.ends = np.cumsum([p.shape[0] for p in parts])
        self._out = np.float64 if parts[0].dtype == np.float64 else np.float32

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one sample."""
        return self.parts[0].shape[1:]

    def __len__(self) -> int:
        return int(self.ends[-1])

    def read(self, rows: np.ndarray) -> np.ndarray:
        """Rows ``rows`` (any order), float32 (float64 when stored so)."""
        out = np.empty((len(rows), *self.sample_shape), dtype=self._out)
        order = np.argsort(rows, kind="stable")
        ordered = rows[order]
        shard = np.searchsorted(self.ends, ordered, side="right")
        for k in np.unique(shard):
            sel = shard == k
            start = int(self.ends[k] - self.parts[k].shape[0])
            self._read_part(self.parts[k], ordered[sel] - start, out, order[sel])
        return out

    def _read_part(self, part: _Npy, local: np.ndarray, out: np.ndarray, where: np.ndarray) -> None:
        """Sorted rows ``local`` of one file into ``out[where]``.

        The file is mapped for :data:`_MAP_ROWS` rows at a time and unmapped after them: numpy gathers
        the rows in C (six times less CPU than one ``os.pread`` per scattered row), and the pages mapped
        at once (the kernel maps ~64 KiB around each faulting row) stay at a few MiB whatever the file's
        size; nothing stays mapped between reads.
        """
        for start in range(0, len(local), _MAP_ROWS):
            try:
                mapped = np.memmap(
                    part.path, dtype=part.dtype, mode="r", offset=part.offset, shape=part.shape
                )
            except (OSError, ValueError) as exc:
                raise LscapeError(f"cannot be read ({exc})", str(part.path), "write it again") from exc
            try:
                out[where[start : start + _MAP_ROWS]] = mapped[local[start : start + _MAP_ROWS]]
            finally:
                del mapped  # unmaps the file
        if np.issubdtype(part.dtype, np.floating) and not np.isfinite(out[where]).all():
            bad = int(local[int(np.flatnonzero(~np.isfinite(out[where].reshape(len(where), -1)).all(1))[0])])
            raise LscapeError(
                f"holds NaN/inf values, the first in sample {bad}",
                str(part.path),
                "remove or impute those samples",
            )


def _files(path: Path, stem: str) -> list[Path]:
    """``stem.npy``, or the shards ``stem-00000.npy`` ... (numbered from 0, no gaps); [] when none."""
    single = path / f"{stem}.npy"
    pattern = re.compile(rf"{re.escape(stem)}-(\d{{5}})\.npy")
    shards = sorted(p for p in path.iterdir() if pattern.fullmatch(p.name))
    if single.exists() and shards:
        raise LscapeError(
            f"both {single.name} and shards {shards[0].name}... are present", str(path), "keep one of the two"
        )
    for k, p in enumerate(shards):
        if p.name != f"{stem}-{k:05d}.npy":
            raise LscapeError(
                f"shard {stem}-{k:05d}.npy is missing",
                str(path),
                "number the shards 00000, 00001, ... without gaps",
            )
    return [single] if single.exists() else shards


def _labels_of(files: list[Path], xs: list[_Npy]) -> np.ndarray:
    """The labels of shards ``files`` (one per input shard), checked against the inputs."""
    parts = []
    for f, x in zip(files, xs, strict=True):
        try:
            y = np.load(f, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise LscapeError(f"not a .npy array ({exc})", str(f), "write it with numpy.save") from exc
        _check_labels(y, f, x)
        parts.append(y)
    kinds = {(p.dtype.kind, p.shape[1:]) for p in parts}
    if len(kinds) > 1:
        raise LscapeError(
            "the label shards differ in dtype or shape", str(files[-1]), "store every shard alike"
        )
    y = np.concatenate(parts)
    return y.astype(np.float64 if np.issubdtype(y.dtype, np.floating) else np.int64, copy=False)


def _check_labels(y: np.ndarray, f: Path, x: _Npy) -> None:
    n = x.shape[0]
    if np.issubdtype(y.dtype, np.floating):
        if y.ndim not in (1, 2) or y.shape[0] != n:
            raise LscapeError(
                f"holds {y.shape} targets but {x.path.name} holds {n} samples",
                str(f),
                f"store ({n},) or ({n}, D)",
            )
        if not np.isfinite(y).all():
            raise LscapeError("holds NaN/inf targets", str(f), "remove or impute those samples")
        return
    if not np.issubdtype(y.dtype, np.integer):
        raise LscapeError(
            f"has dtype {y.dtype}",
            str(f),
            "store integer class labels 0..C-1, or floats for regression (--loss mse)",
        )
    if y.shape != (n,):
        raise LscapeError(
            f"holds {y.shape} labels but {x.path.name} holds {n} samples",
            str(f),
            f"store ({n},) class labels",
        )
    if y.size and y.min() < 0:
        raise LscapeError("holds negative labels", str(f), "use labels 0..C-1")


def _inputs(files: list[Path]) -> list[_Npy]:
    xs = [_header(f) for f in files]
    for x in xs:
        if len(x.shape) < 2:
            raise LscapeError(
                f"holds shape {x.shape}; inputs need a sample axis and at least one feature axis",
                str(x.path),
                "store x as (N, features...) e.g. (N, 20) or (N, C, H, W)",
            )
        if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
            raise LscapeError(f"has dtype {x.dtype}", str(x.path), "store inputs as numbers")
        if (x.shape[1:], x.dtype) != (xs[0].shape[1:], xs[0].dtype):
            raise LscapeError(
                f"holds {x.dtype} samples of shape {x.shape[1:]} but {xs[0].path.name} holds "
                f"{xs[0].dtype} {xs[0].shape[1:]}",
                str(x.path),
                "store every shard and split with one sample shape and dtype",
            )
    return xs


def _open_arrays(path: Path) -> Directory:
    parts: dict[str, Part] = {}
    used: list[Path] = []
    for split, suffix in _SPLIT_NAMES.items():
        xf, yf = _files(path, f"x{suffix}"), _files(path, f"y{suffix}")
        if not xf and not yf:
            if split == "train":
                raise LscapeError(
                    "no x.npy/y.npy (or shards x-00000.npy/y-00000.npy) in the data directory",
                    str(path),
                    "save inputs as x.npy and labels as y.npy, e.g. numpy.save(DIR/'x.npy', x)",
                )
            continue
        if len(xf) != len(yf):
            missing = _counterpart(xf, yf, suffix)
            raise LscapeError(
                f"{missing} is missing", str(path / missing), "store inputs and labels together"
            )
        xs = _inputs(xf)
        y = _labels_of(yf, xs)
        parts[split] = Part(NpyRows(xs), y, np.arange(len(y)))
        used += xf + yf
    _check_alike(parts, path)
    if (path / "split.npy").exists():
        parts = _by_index(parts, path / "split.npy")
        used.append(path / "split.npy")
    if sum(len(p.y) for p in parts.values()) == 0:
        raise LscapeError("the data directory holds no samples", str(path), "store at least one sample")
    ys = [p.y for p in parts.values()]
    fmt = "npy" if all(f.name.count("-") == 0 for f in used) else "npy-shards"
    return Directory(fmt, parts, _num_outputs(ys), sorted(used))


def _counterpart(xf: list[Path], yf: list[Path], suffix: str) -> str:
    """The name of the first input or label file that has no partner, e.g. ``y-00003.npy``."""
    longer, stem, other = (
        (xf, f"x{suffix}", f"y{suffix}") if len(xf) > len(yf) else (yf, f"y{suffix}", f"x{suffix}")
    )
    return other + longer[min(len(xf), len(yf))].name[len(stem) :]


def _check_alike(parts: dict[str, Part], path: Path) -> None:
    """Every split has the train split's sample shape and the same kind of labels."""
    base = parts["train"]
    for split, p in parts.items():
        if p.source.sample_shape != base.source.sample_shape:
            raise LscapeError(
                f"{split} samples have shape {p.source.sample_shape} but train's have "
                f"{base.source.sample_shape}",
                str(path),
                "store every split with the same sample shape",
            )
        if (p.y.dtype.kind, p.y.shape[1:]) != (base.y.dtype.kind, base.y.shape[1:]):
            raise LscapeError(
                f"{split} labels are {p.y.dtype} {p.y.shape} but train's are {base.y.dtype} {base.y.shape}",
                str(path),
                "store every split's labels alike: integers for classes, floats of one shape for regression",
            )


def _by_index(parts: dict[str, Part], where: Path) -> dict[str, Part]:
    """Splits from ``split.npy``: rows 0 train, 1 validation, 2 test, of the train arrays."""
    if len(parts) > 1:
        raise LscapeError("the data directory has both split.npy and x_val/x_test", str(where), "keep one")
    train = parts["train"]
    try:
        split = np.load(where, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise LscapeError(f"not a .npy array ({exc})", str(where), "write it with numpy.save") from exc
    n = len(train.y)
    if (
        split.shape != (n,)
        or not np.issubdtype(split.dtype, np.integer)
        or not np.isin(split, (0, 1, 2)).all()
    ):
        raise LscapeError(
            f"holds {split.dtype} {split.shape}",
            str(where),
            f"store ({n},) integers: 0 train, 1 validation, 2 test",
        )
    out = {}
    for k, name in enumerate(("train", "val", "test")):
        rows = np.flatnonzero(split == k)
        out[name] = Part(train.source, train.y[rows], rows)
    return out


def _num_outputs(ys: list[np.ndarray]) -> int:
    if np.issubdtype(ys[0].dtype, np.floating):
        return 1 if ys[0].ndim == 1 else int(ys[0].shape[1])
    return 1 + max(int(y.max()) for y in ys if y.size)


# ------------------------------------------------------------------------------------------------ images


class ImageRows:
    """Image files decoded on demand into ``(3, S, S)`` float32 samples in [0, 1]."""

    def __init__(self, files: list[Path], size: int) -> None:
        self.files, self.size = files, size

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """``(3, S, S)``."""
        return (3, self.size, self.size)

    def __len__(self) -> int:
        return len(self.files)

    def read(self, rows: np.ndarray) -> np.ndarray:
        """Images ``rows`` (any order) as one ``(n, 3, S, S)`` float32 array."""
        out = np.empty((len(rows), *self.sample_shape), dtype=np.float32)
        for i, r in enumerate(rows.tolist()):  # one decode per file: images have no batch reader
            out[i] = _image(self.files[r], self.size)
        return out


def _image(path: Path, size: int) -> np.ndarray:
    """Decode, RGB, shorter side to ``size`` (bilinear), centre crop, [0, 1], channels first."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB")
    except (OSError, ValueError) as exc:
        raise LscapeError(f"cannot read the image ({exc})", str(path), "remove or replace the file") from exc
    w, h = rgb.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    rgb = rgb.resize((nw, nh), Image.Resampling.BILINEAR)
    left, top = (nw - size) // 2, (nh - size) // 2
    pixels = np.asarray(rgb.crop((left, top, left + size, top + size)), dtype=np.uint8)
    sample: np.ndarray = pixels.transpose(2, 0, 1).astype(np.float32) / 255.0
    return sample


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def _class_folders(root: Path) -> list[Path]:
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    if not folders:
        raise LscapeError(
            "no class folders (and no .npy arrays) in the data directory",
            str(root),
            "lay images out as DIR/CLASS/IMAGE.png, or save arrays as DIR/x.npy and DIR/y.npy",
        )
    return folders


def _open_images(path: Path, size: int) -> Directory:
    if size < 1:
        raise LscapeError(f"image size {size}", "--image-size", "give a positive number of pixels")
    top = _class_folders(path)
    names = {p.name for p in top}
    roots = (
        {s: path / s for s in _SPLIT_NAMES if s in names}
        if names <= set(_SPLIT_NAMES) and "train" in names
        else {}
    )
    roots = roots or {"train": path}
    classes = [p.name for p in _class_folders(roots["train"])]
    parts, files = {}, []
    for split, root in roots.items():
        found: list[Path] = []
        labels: list[int] = []
        for folder in _class_folders(root):
            if folder.name not in classes:
                raise LscapeError(
                    f"class folder {folder.name!r} is not among train's",
                    str(folder),
                    "use train's class folders",
                )
            images = _images_in(folder)
            found += images
            labels += [classes.index(folder.name)] * len(images)
        if not found:
            raise LscapeError(
                "no images in the class folders",
                str(root),
                f"put image files ({', '.join(IMAGE_EXTENSIONS)}) in DIR/CLASS/",
            )
        parts[split] = Part(ImageRows(found, size), np.asarray(labels, dtype=np.int64), np.arange(len(found)))
        files += found
    transform: dict[str, object] = {
        "decode": "Pillow, converted to RGB",
        "resize": f"shorter side to {size} px, bilinear",
        "crop": f"centre {size}x{size}",
        "scale": "[0, 1] (pixel / 255)",
        "layout": "(3, H, W)",
    }
    return Directory("image-folder", parts, len(classes), files, transform, classes)


# ------------------------------------------------------------------------------------------------ identity


def fingerprint(files: list[Path], root: Path) -> str:
    """A cheap identity of a directory's data (see :data:`FINGERPRINT_METHOD`): hex sha256.

    Constant work per file whatever its size, so a 100 GB directory is fingerprinted in the time of a
    few reads; a change to the middle of a large file that keeps its size goes unnoticed.
    """
    h = hashlib.sha256()
    for f in sorted(files):
        size = f.stat().st_size
        h.update(f"{f.relative_to(root).as_posix()}\0{size}\0".encode())
        with open(f, "rb") as fh:
            h.update(fh.read(_EDGE))
            if size > _EDGE:
                fh.seek(max(_EDGE, size - _EDGE))
                h.update(fh.read(_EDGE))
    return h.hexdigest()
