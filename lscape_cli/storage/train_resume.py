"""The resume state of `lscape train`: ``OUT/NAME.resume.pt`` (``OUT/NAME.shard-I-of-N.resume.pt`` per shard).

While a run trains it keeps its :class:`~lscape_cli.core.training.engine.TrainState` here at the end of an
epoch, at most every ``--resume-every`` seconds, written at once (outside the command's output
transaction) and atomically, so a run killed at any moment leaves the previous state or the new one.
``--resume`` continues from it when its key (everything that fixes the numbers: the resolved training
config, model, dataset, seeds, tracking protocol, device, dtype) matches the run's, field by field. The
file goes away when the run's outputs are committed.

Format (``torch.save``; read with ``torch.load(weights_only=True)``): ``{"schema":
"lscape.train-resume/1", "key": JSON text, "state": TrainState's fields}``. Not a ``.safetensors``
file, so no glob for checkpoints picks it up.
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypedDict, cast

import torch

from lscape_cli.core.training.engine import TrainState
from lscape_cli.errors import LscapeError
from lscape_cli.storage.files import atomic_path, immediate, remove_on_commit
from lscape_cli.storage.records import JSONValue
from lscape_cli.storage.train_record import TrainContext

RESUME_SCHEMA = "lscape.train-resume/1"


def resume_path(out: Path, name: str, shard: str | None) -> Path:
    """``OUT/NAME.resume.pt``, or ``OUT/NAME.shard-I-of-N.resume.pt`` for ``--shard I/N``."""
    if shard is None:
        return out / f"{name}.resume.pt"
    i, _, n = shard.partition("/")
    return out / f"{name}.shard-{i}-of-{n}.resume.pt"


ResumeKey = dict[str, JSONValue]  # flattened settings: "training.lr", "dataset.sizes", ..., "seeds"


class _ResumeData(TypedDict, total=False):
    """What the file holds (``torch.save``); each part is checked as it is read."""

    schema: str
    key: str  # the ResumeKey as JSON text
    state: object  # TrainState's fields


def resume_key(context: TrainContext, seeds: list[int]) -> ResumeKey:
    """Everything that fixes a run's numbers, one level flattened (``training.lr``, ``dataset.sizes``).

    ``context``: the run's (its ``cfg``, ``model``, ``dataset``, ``tracking``, ``device``, ``dtype``,
    ``restarts``, ``base_seed``); ``seeds``: the seeds this process trains.
    """
    parts = {
        "training": context.cfg.to_dict(),
        "model": context.model,
        "dataset": context.dataset,
        "tracking": context.tracking,
    }
    key: dict[str, object] = {
        f"{part}.{k}": v for part, d in parts.items() if d is not None for k, v in d.items()
    }
    key.update(
        tracking=context.tracking is not None,
        device=context.device,
        dtype=context.dtype,
        restarts=context.restarts,
        base_seed=context.base_seed,
        seeds=seeds,
    )
    return cast(ResumeKey, json.loads(_text(key)))  # the JSON form a saved key comes back in


class ResumeFile:
    """A run's :class:`~lscape_cli.core.training.engine.ResumeStore` on disk (see the module docstring)."""

    def __init__(self, path: Path, key: ResumeKey, requested: bool, every_s: float) -> None:
        self.path, self.key, self.requested, self.every_s = path, key, requested, every_s
        self.last_save = time.monotonic()
        self.epoch: int | None = None  # the epoch of the state kept or continued from
        self.resumed_from: int | None = None  # the epoch this run continued after
        self.resumed_s = 0.0  # training seconds spent before this run continued

    def load(self) -> TrainState | None:
        """The matching state (``--resume`` and a file), else None; a mismatch is an error."""
        if not (self.requested and self.path.exists()):
            return None  # without --resume a stale file is ignored, replaced by the first save
        data = _read(self.path)
        saved = _saved_key(data, self.path)
        diff = sorted(k for k in {*saved, *self.key} if _text(saved.get(k)) != _text(self.key.get(k)))
        if diff:
            raise LscapeError(
                f"resume state was made with other settings ({', '.join(diff)} differ)",
                str(self.path),
                "re-run with the original options, or without --resume to start over",
            )
        state = _state(data, self.path)
        self.epoch = self.resumed_from = state.epoch
        self.resumed_s = state.elapsed_s
        return state

    def damaged(self, exc: Exception) -> Exception:
        """One line naming the file when its state does not fit the run."""
        return _damaged(
            self.path, f"{type(exc).__name__}: {str(exc).splitlines()[0][:80] if str(exc) else ''}"
        )

    def due(self) -> bool:
        """Whether ``every_s`` seconds have passed since the start or the last save."""
        return time.monotonic() - self.last_save >= self.every_s

    def save(self, state: TrainState) -> None:
        """Replace the file with ``state``, at once and atomically."""
        payload = {
            "schema": RESUME_SCHEMA,
            "key": json.dumps(self.key, sort_keys=True),
            "state": state.to_dict(),
        }
        with _sigint_deferred():  # a Ctrl-C cannot land between the rename and the note of the epoch
            with immediate(), atomic_path(self.path) as tmp:
                torch.save(payload, tmp)
            self.last_save, self.epoch = time.monotonic(), state.epoch

    def remove_on_commit(self) -> None:
        """Delete the file once the run's outputs are committed."""
        remove_on_commit(self.path)


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Hold SIGINT until the block is done (main thread, POSIX); it is delivered on exit."""
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _text(value: Any) -> str:
    return json.dumps(value, sort_keys=True)  # NaN equals NaN here


def _read(path: Path) -> _ResumeData:
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same one-line error
        raise LscapeError(
            f"cannot read the resume state ({type(exc).__name__})",
            str(path),
            "delete it and run without --resume to start over",
        ) from exc
    if not isinstance(data, dict) or data.get("schema") != RESUME_SCHEMA:
        raise LscapeError(
            f"not a {RESUME_SCHEMA} file", str(path), "delete it and run without --resume to start over"
        )
    return cast(_ResumeData, data)


def _damaged(path: Path, what: str) -> LscapeError:
    return LscapeError(
        f"damaged resume state ({what})", str(path), "delete it and run without --resume to start over"
    )


def _saved_key(data: _ResumeData, path: Path) -> ResumeKey:
    """The settings key the state was saved under (a JSON object)."""
    try:
        saved = json.loads(data["key"])
    except (KeyError, TypeError, ValueError) as exc:
        raise _damaged(path, f"its 'key' is missing or not JSON: {type(exc).__name__}") from None
    if not isinstance(saved, dict):
        raise _damaged(path, "its 'key' is not a JSON object")
    return cast(ResumeKey, saved)


def _state(data: _ResumeData, path: Path) -> TrainState:
    """The saved training state, its fields checked by constructing it."""
    fields = data.get("state")
    if not isinstance(fields, dict):
        raise _damaged(path, "its 'state' is not a dict")
    try:
        state = TrainState(**fields)
    except (TypeError, ValueError) as exc:
        raise _damaged(path, f"its 'state' does not fit this lscape: {str(exc)[:80]}") from None
    if not isinstance(state.epoch, int) or not isinstance(state.elapsed_s, int | float):
        raise _damaged(path, "its 'state' has no integer epoch and elapsed time")
    return state
