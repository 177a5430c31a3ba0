"""Atomic writes, hashing and output-path checks shared by every writer."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from lscape_cli.errors import LscapeError


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_input(path: Path, what: str = "input file") -> Path:
    """An existing regular file, or a one-line error naming it."""
    if not path.exists():
        raise LscapeError(f"{what} not found", str(path), "check the path")
    if not path.is_file():
        raise LscapeError(f"{what} is not a file", str(path), "pass a file, not a directory")
    return path


def check_output(path: Path, overwrite: bool) -> Path:
    """Refuse an output whose directory is missing, or that exists unless ``overwrite``."""
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise LscapeError(
            "output directory does not exist", str(parent), "create it first or choose another --out"
        )
    if path.exists() and not overwrite:
        raise LscapeError(
            "output exists", str(path), "pass --overwrite to replace it or choose another --out"
        )
    return path


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only if the block succeeds.

    An exception or Ctrl-C inside the block removes the temporary file, so a reader never sees a
    half-written output and an existing file is never clobbered by a failed write.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; outputs get ordinary permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
