"""Atomic writes, hashing, and the output guard every command runs under.

The guard (:func:`output_transaction`) makes a command's outputs all-or-nothing:

- every writer goes through :func:`atomic_path`; inside a transaction the bytes land in a hidden
  temporary file beside the final name and the rename waits until :meth:`Transaction.commit`, so a run
  that fails (or is interrupted, or killed) leaves every previous file byte-identical and no partial
  file under a final name; the files of one run (checkpoint + record + plots) appear together;
- every file a command reads is registered (:func:`check_input`), and an output that is the same file
  as an input is refused before anything is replaced;
- directories an output needs are created (``mkdir -p``) and removed again if the run fails.

Files that must survive a failure on purpose (slice's partial grids for ``--resume``) are written
under :func:`immediate`.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import hashlib
import json
import os
import shutil
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from lscape_cli.errors import LscapeError


@dataclass
class Transaction:
    """The staged outputs, the inputs read, and the directories created by one command."""

    staged: dict[Path, Path] = field(default_factory=dict)  # final path -> temporary file or folder
    removals: list[Path] = field(default_factory=list)  # stale files to delete on commit
    inputs: list[Path] = field(default_factory=list)
    created_dirs: list[Path] = field(default_factory=list)
    overwrite: bool = False  # --overwrite: existing files are replaced whatever wrote them

    def commit(self) -> None:
        """Rename every staged file onto its final name, then delete the stale files."""
        for final, tmp in self.staged.items():
            _swap_in(tmp, final)
        self.staged.clear()
        self.created_dirs.clear()
        for path in self.removals:
            path.unlink(missing_ok=True)
            _sweep_stale(path)  # a killed run may have left its half-written copy beside it

    def abort(self) -> None:
        """Delete every temporary file and every directory this command created (when empty)."""
        for tmp in self.staged.values():
            _remove(tmp)
        self.staged.clear()
        for d in reversed(self.created_dirs):
            with contextlib.suppress(OSError):
                d.rmdir()


def _swap_in(tmp: Path, final: Path) -> None:
    """Rename ``tmp`` onto ``final``; a folder replaces the old folder (moved aside, then deleted)."""
    if not tmp.is_dir():
        os.replace(tmp, final)
        return
    old = None
    if final.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old.", dir=final.parent))
        os.replace(final, old / final.name)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


_ACTIVE: contextvars.ContextVar[Transaction | None] = contextvars.ContextVar("lscape_tx", default=None)


@contextlib.contextmanager
def output_transaction() -> Iterator[Transaction]:
    """Run a command's writes as one transaction; the caller commits (see ``cli.funnel``)."""
    tx = Transaction()
    token = _ACTIVE.set(tx)
    try:
        yield tx
    finally:
        _ACTIVE.reset(token)
        tx.abort()  # after a commit nothing is staged; this only cleans up after a failure


@contextlib.contextmanager
def immediate() -> Iterator[None]:
    """Writes in this block are renamed at once, outside any transaction (resume files)."""
    token = _ACTIVE.set(None)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def allow_overwrite(flag: bool) -> None:
    """``--overwrite``: this command may replace files lscape did not write (see :func:`written_kind`)."""
    tx = _ACTIVE.get()
    if tx is not None:
        tx.overwrite = flag


def staged(path: Path) -> Path:
    """Where the bytes of ``path`` are now: its staged temporary file, else ``path`` itself."""
    tx = _ACTIVE.get()
    return tx.staged.get(_key(path), path) if tx is not None else path


def remove_on_commit(path: Path) -> None:
    """Delete a stale output when the command succeeds (at once outside a transaction)."""
    tx = _ACTIVE.get()
    if tx is None:
        path.unlink(missing_ok=True)
        _sweep_stale(path)
    else:
        tx.removals.append(path)


def _key(path: Path) -> Path:
    return Path(os.path.abspath(path))


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes (of the staged bytes for an output not yet committed)."""
    h = hashlib.sha256()
    with open(staged(path), "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_input(path: Path, what: str = "input file") -> Path:
    """An existing regular file, or a one-line error naming it; remembered as an input of the command."""
    if not path.exists():
        from lscape_cli.storage.run_names import sibling_hint

        hint = sibling_hint(path)
        if hint is not None:
            raise LscapeError(f"no such {what}", str(path), hint)
        raise LscapeError(f"{what} not found", str(path), "check the path")
    if not path.is_file():
        raise LscapeError(f"{what} is not a file", str(path), "pass a file, not a directory")
    tx = _ACTIVE.get()
    if tx is not None:
        tx.inputs.append(path)
    return path


def same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file (through links too)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def refuse_overlap(outputs: list[Path], inputs: list[Path | None], option: str = "--out") -> None:
    """Refuse an output on or inside an input, or two outputs on one path (before any work is done)."""
    for i, out in enumerate(outputs):
        for other in outputs[i + 1 :]:
            if _key(out) == _key(other) or (out.exists() and other.exists() and same_file(out, other)):
                raise LscapeError(
                    "two outputs of this run are on one path",
                    f"{out} and {other}",
                    "give each output its own path (e.g. --out and --save-eigenvectors)",
                )
    for out in outputs:
        for inp in inputs:
            if inp is None or not inp.exists():
                continue
            inside = inp.is_file() and any(same_file(p, inp) for p in [out, *out.parents] if p.exists())
            if same_file(out, inp) or inside:
                raise LscapeError(
                    "output would overwrite an input",
                    f"{option} {out} is the input {inp}",
                    f"choose another {option}",
                )


def make_dirs(directory: Path) -> None:
    """``mkdir -p``; inside a transaction the directories made are removed again if the command fails."""
    missing = []
    d = Path(os.path.abspath(directory))
    while not d.exists():
        missing.append(d)
        d = d.parent
    if not d.is_dir():
        raise LscapeError("output path runs through a file", str(d), "choose another --out")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LscapeError(
            f"cannot create the output directory ({exc.strerror})", str(directory), "choose another --out"
        ) from exc
    tx = _ACTIVE.get()
    if tx is not None:
        tx.created_dirs += reversed(missing)


def _refuse_input(path: Path, tx: Transaction) -> None:
    for inp in tx.inputs:
        if path.exists() and same_file(path, inp):
            raise LscapeError(
                "output would overwrite an input", f"{path} is read by this command", "choose another --out"
            )


def _sweep_stale(path: Path) -> None:
    """Remove the temporary files of ``path`` left by a killed process (``.NAME.PID.*.tmp``, PID gone)."""
    for tmp in path.parent.glob(f".{glob_escape(path.name)}.*.tmp"):
        pid = tmp.name[len(path.name) + 2 :].split(".")[0]
        if pid.isdigit() and not _alive(int(pid)):
            with contextlib.suppress(OSError):
                tmp.unlink()


def glob_escape(name: str) -> str:
    """``name`` with glob metacharacters escaped."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it becomes ``path`` only once everything succeeded.

    Outside a transaction the rename follows the block; inside one it waits for the commit. An
    exception or Ctrl-C inside the block removes the temporary file, so a reader never sees a
    half-written output and an existing file is never clobbered by a failed write.
    """
    tx = _ACTIVE.get()
    if tx is not None:
        _refuse_input(path, tx)
    make_dirs(path.parent if str(path.parent) else Path("."))
    _sweep_stale(path)
    try:
        fd, tmp = tempfile.mkstemp(
            prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent or "."
        )
    except OSError as exc:
        raise write_error(exc, path) from exc
    os.close(fd)
    try:
        with _naming_write_errors(path, Path(tmp)):
            yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; outputs get ordinary permissions
        if tx is None:
            os.replace(tmp, path)
        else:
            _check_replace(path, Path(tmp), tx)
            old = tx.staged.pop(_key(path), None)
            if old is not None:
                old.unlink(missing_ok=True)  # written twice in one run: the later bytes win
            tx.staged[_key(path)] = Path(tmp)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; it replaces the folder ``path`` on success.

    Inside a transaction the swap waits for the commit, like :func:`atomic_path`.
    """
    tx = _ACTIVE.get()
    if path.exists() and not path.is_dir():
        raise LscapeError(
            "a file is in the way of an output folder", str(path), "move it or choose another --out"
        )
    make_dirs(path.parent if str(path.parent) else Path("."))
    try:
        fresh = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent))
    except OSError as exc:
        raise write_error(exc, path) from exc
    try:
        with _naming_write_errors(path, fresh):
            yield fresh
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(fresh, 0o777 & ~umask)
        if tx is None:
            _swap_in(fresh, path)
        else:
            if path.is_dir() and not tx.overwrite:
                _check_folder(path)
            old = tx.staged.pop(_key(path), None)
            if old is not None:
                _remove(old)
            tx.staged[_key(path)] = fresh
    except BaseException:
        _remove(fresh)
        raise


def write_error(exc: OSError, path: Path) -> LscapeError:
    """One line for a failed write, naming the file being written (the OS names only its temporary)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return LscapeError(
            f"disk full ({exc.strerror})",
            str(path),
            "free space or write to another --out; nothing was replaced",
        )
    return LscapeError(
        f"cannot write the output ({exc.strerror or type(exc).__name__})",
        str(path),
        "check the directory's permissions and free space, or choose another --out",
    )


@contextlib.contextmanager
def _naming_write_errors(path: Path, tmp: Path) -> Iterator[None]:
    """An ``OSError`` writing ``tmp`` (no file named, or ``tmp`` or a file inside it) names ``path``."""
    try:
        yield
    except OSError as exc:
        name = str(exc.filename or "")
        if name and not name.startswith(str(tmp)):
            raise  # another file's failure (an input), reported as it is
        raise write_error(exc, path) from exc


def _check_replace(path: Path, tmp: Path, tx: Transaction) -> None:
    """Refuse two different outputs of one run on one path, and replacing a file lscape did not write.

    An existing file is replaced without ``--overwrite`` only when it is an lscape output of the kind
    being written (a probe record by a probe record, a figure by a figure, ...).
    """
    new = written_kind(tmp)
    earlier = tx.staged.get(_key(path))
    if earlier is not None and written_kind(earlier) != new:
        raise LscapeError(
            "two outputs of this run are on one path",
            str(path),
            "give each output its own path (e.g. --out and --save-eigenvectors)",
        )
    if earlier is not None or tx.overwrite or not path.exists() or path.is_dir():
        return
    old = written_kind(path)
    if old != new:
        what = "is not an lscape output" if old is None else f"holds another kind of lscape file ({old})"
        raise LscapeError(
            f"output file exists and {what}",
            str(path),
            "pass --overwrite to replace it, or choose another --out",
        )


def refuse_foreign(outputs: dict[Path, str]) -> None:
    """Before any work: refuse an existing output that is not the lscape kind about to be written there.

    The same check as at the write (:func:`_check_replace`), early for commands whose work is long or
    leaves files on purpose when it fails (slice's partial grids).
    """
    tx = _ACTIVE.get()
    if tx is not None and tx.overwrite:
        return
    for path, kind in outputs.items():
        if path.is_file() and written_kind(path) != kind:
            old = written_kind(path)
            what = "is not an lscape output" if old is None else f"holds another kind of lscape file ({old})"
            raise LscapeError(
                f"output file exists and {what}",
                str(path),
                "pass --overwrite to replace it, or choose another --out",
            )


def _check_folder(path: Path) -> None:
    """An output folder is replaced only when it holds lscape outputs (and the CSV tables beside them)."""
    for entry in sorted(path.iterdir()):
        if entry.is_file() and (entry.suffix == ".csv" or written_kind(entry) is not None):
            continue
        raise LscapeError(
            "output folder holds files lscape did not write",
            str(entry),
            "pass --overwrite to replace the folder, or choose another --out",
        )


SIGNATURE = b"written by lscape"  # in every HTML page, Markdown file and LaTeX table lscape writes
FIGURE_SIGNATURE = b"lscape"  # PNG/PDF metadata (Software / Creator) of lscape's figures


def written_kind(path: Path) -> str | None:
    """What lscape output ``path`` holds, or None when lscape did not write it.

    A JSON record or a safetensors file: its schema without the version (``lscape.probe``); a figure:
    ``png``/``pdf`` with lscape's metadata; a page or table: ``text`` when it carries :data:`SIGNATURE`;
    a resume state: ``lscape.train-resume``.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(9)
            if head[:8] == b"\x89PNG\r\n\x1a\n" or head[:4] == b"%PDF":
                data = fh.read(64 << 20)
                return ("png" if head[:4] != b"%PDF" else "pdf") if FIGURE_SIGNATURE in data else None
            if head[:2] == b"PK":
                return "lscape.train-resume" if b"lscape.train-resume/" in fh.read(64 << 20) else None
            if head.lstrip()[:1] == b"{":
                return _schema_family(json.loads(head + fh.read(256 << 20)).get("schema"))
            if len(head) == 9 and head[8:9] == b"{":
                (n,) = struct.unpack("<Q", head[:8])
                meta = json.loads(head[8:] + fh.read(n - 1)).get("__metadata__") if n < 100 << 20 else None
                return _schema_family(meta.get("lscape_schema") if isinstance(meta, dict) else None)
            text = head + fh.read(64 << 20)
    except (OSError, ValueError, AttributeError, struct.error):
        return None
    return "text" if SIGNATURE in text else None


def _schema_family(schema: object) -> str | None:
    return schema.split("/")[0] if isinstance(schema, str) and schema.startswith("lscape.") else None
