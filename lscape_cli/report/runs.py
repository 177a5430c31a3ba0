"""Join a study's records into runs: one checkpoint, its train record, its probe records, its settings.

Records are joined by the checkpoint's sha256 (as ``lscape pareto`` does). A run's settings come from
its train record's ``config`` (the same ``model``/``dataset``/``training`` objects the checkpoint header
holds), else from the checkpoint header itself, read without loading tensors.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lscape_cli.errors import LscapeError
from lscape_cli.report.cells import Source, get
from lscape_cli.storage.study import Record, checkpoint_metadata


@dataclass
class Run:
    """One trained model and every record about it."""

    key: str  # checkpoint sha256, or the train record's path for a diverged restart
    label: str  # checkpoint path relative to the study root, less ".safetensors" and a final "/model"
    checkpoint: Path | None
    train: Record | None = None
    probes: list[Record] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)  # model, dataset, training (+ metrics) objects
    meta_record: str = ""  # where ``meta`` came from (report-relative), for sources
    meta_prefix: str = ""  # JSON pointer of ``meta`` inside that file ("/config" for a train record)

    @property
    def stale(self) -> list[str]:
        """Problems of every record of this run."""
        return [s for r in ([self.train] if self.train else []) + self.probes for s in r.stale]


def rel(path: Path, base: Path) -> str:
    """``path`` relative to ``base`` with forward slashes (how reports name files)."""
    return Path(os.path.relpath(path, base)).as_posix()


def _label(checkpoint: Path, root: Path) -> str:
    """The run's folder (and file, unless it is the default ``model``): ``sgd-high-lr``, ``d1/model-r000``."""
    name = rel(checkpoint, root)
    name = name[: -len(".safetensors")] if name.endswith(".safetensors") else name
    return name[: -len("/model")] if name.endswith("/model") else name


def join(records: list[Record], root: Path, out_dir: Path) -> list[Run]:
    """Runs from train and probe records (other kinds are reported on their own)."""
    runs: dict[str, Run] = {}
    for rec in records:
        if rec.kind == "train":
            entry = rec.data["results"].get("checkpoint")
            if entry is None:  # diverged: no checkpoint, still part of the inventory
                run = runs[str(rec.path)] = Run(str(rec.path), _label(rec.path, root), None)
            else:
                run = _run_for(runs, entry, rec.path, root)
            run.train = rec
            run.meta = rec.data["config"]
            run.meta_record, run.meta_prefix = rel(rec.path, out_dir), "/config"
        elif rec.kind == "probe":
            _run_for(runs, rec.data["inputs"]["checkpoint"], rec.path, root).probes.append(rec)
    for run in runs.values():
        if not run.meta and run.checkpoint is not None:
            run.meta = checkpoint_metadata(run.checkpoint) or {}
            run.meta_record = rel(run.checkpoint, out_dir) if run.meta else ""
    return list(runs.values())


def _run_for(runs: dict[str, Run], entry: dict[str, Any], record_path: Path, root: Path) -> Run:
    ckpt = (record_path.parent / entry["path"]).resolve()
    run = runs.get(entry["sha256"])
    if run is None:
        run = runs[entry["sha256"]] = Run(entry["sha256"], _label(ckpt, root), ckpt)
    return run


def meta_pointer(key: str, meta: dict[str, Any]) -> str | None:
    """JSON pointer into ``meta`` for a dotted key (``model.depth`` also finds ``model.config.depth``)."""
    parts = key.split(".")
    candidates = [parts]
    if parts[0] == "model" and len(parts) > 1 and parts[1] not in ("name", "config"):
        candidates.append(["model", "config", *parts[1:]])
    for cand in candidates:
        pointer = "/" + "/".join(cand)
        value = get(meta, pointer)
        if value is not None and not isinstance(value, (dict, list)):
            return pointer
    return None


def key_source(run: Run, key: str) -> Source | None:
    """The run's value for a dotted settings key, with where it came from."""
    pointer = meta_pointer(key, run.meta)
    if pointer is None:
        return None
    return Source(run.meta_record, run.meta_prefix + pointer, get(run.meta, pointer))


RUN_KEY = "run"  # --compare run: every run its own colour (runs that differ in several settings)


def check_key(runs: list[Run], key: str | None, option: str) -> None:
    """Refuse a key that no run has, listing the keys that exist."""
    if key is None or any(key_source(r, key) is not None for r in runs):
        return
    if key == RUN_KEY and option == "--compare":
        return
    known = sorted({k for r in runs for k in _flat_keys(r.meta) if not k.startswith("dataset.normalization")})
    if option == "--compare":
        known.insert(0, RUN_KEY)
    raise LscapeError(f"unknown key {key!r}", option, f"known keys: {', '.join(known)}")


def _flat_keys(meta: dict[str, Any]) -> list[str]:
    keys = []
    for section in ("model", "dataset", "training"):
        obj = meta.get(section) or {}
        for k, v in obj.items():
            if k == "config" and isinstance(v, dict):
                keys += [f"model.{c}" for c, cv in v.items() if not isinstance(cv, (dict, list))]
            elif not isinstance(v, (dict, list)):
                keys.append(f"{section}.{k}")
    return keys


def sort_key(value: Any) -> tuple[int, float, str]:
    """Orders numbers numerically, then strings, missing values last."""
    if value is None:
        return (2, 0.0, "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1, 0.0, str(value))


def natural(label: str) -> list[tuple[int, float, str]]:
    """A label's sort key reading its digits as numbers: ``mlp-32`` before ``mlp-128``."""
    return [sort_key(float(p)) if p.isdigit() else sort_key(p) for p in re.split(r"(\d+)", label) if p]


def order(runs: list[Run], compare: str | None) -> list[Run]:
    """Runs ordered by the compare key's value, then by label (numbers in it as numbers)."""

    def key(run: Run) -> tuple[tuple[int, float, str], list[tuple[int, float, str]]]:
        src = key_source(run, compare) if compare else None
        return sort_key(src.value if src else None), natural(run.label)

    return sorted(runs, key=key)
