"""Collect a study's runs from probe/train records and the checkpoints they point to.

A *run* is one checkpoint: its configuration (model, dataset, training), its final metrics (from the
train record, else the checkpoint's metadata) and its probe scalars, joined by the checkpoint's sha256.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lscape_cli.errors import LscapeError
from lscape_cli.storage.checkpoint import read_metadata
from lscape_cli.storage.files import check_input, sha256_file

PROBE = "lscape.probe/1"
TRAIN = "lscape.train/1"


@dataclass
class Run:
    """One checkpoint's configuration and metrics."""

    sha256: str
    checkpoint: Path
    config: dict[str, Any] = field(default_factory=dict)  # flat: "model.depth", "training.lr", ...
    metrics: dict[str, float | None] = field(default_factory=dict)  # "train_loss", "frobenius", ...
    sources: dict[str, str] = field(default_factory=dict)  # metric -> file it came from
    conflicts: dict[str, list[str]] = field(default_factory=dict)  # metric -> probe records that disagree


def find_records(paths: list[Path]) -> list[Path]:
    """The given JSON files, plus every ``*.probe.json`` / ``*.train.json`` under given directories."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted(p.rglob("*.probe.json")) + sorted(p.rglob("*.train.json"))
            out += [check_input(f, "record") for f in found]
        else:
            out.append(check_input(p, "record"))
    if not out:
        raise LscapeError(
            "no probe or train records found",
            " ".join(map(str, paths)),
            "run `lscape probe CKPT` first, or point at the directory holding the *.probe.json files",
        )
    return out


def _flat_config(meta: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    model = meta.get("model") or {}
    flat["model.name"] = model.get("name")
    for k, v in (model.get("config") or {}).items():
        flat[f"model.{k}"] = v
    for section in ("dataset", "training"):
        for k, v in (meta.get(section) or {}).items():
            if not isinstance(v, dict):
                flat[f"{section}.{k}"] = v
    return flat


def _probe_scalars(results: dict[str, Any]) -> dict[str, float | None]:
    if "batches" in results:
        return {k: v["mean"] for k, v in results["batches"]["summary"].items()}
    out: dict[str, float | None] = {}
    for key, value in results.items():
        if isinstance(value, dict) and "estimate" in value:
            out[key] = value["estimate"]
    if "top_k" in results:
        out.update({f"lambda_{i + 1}": v for i, v in enumerate(results["top_k"]["eigenvalues"])})
    if "loss" in results:
        out["probe_loss"] = results["loss"]["value"]
    return out


def _read(path: Path) -> dict[str, Any]:
    """A probe or train record, checked against its JSON Schema (errors name the file and key)."""
    from lscape_cli.storage.jsonio import check_schema, read_json

    data = read_json(path, "record")
    schema = data.get("schema") if isinstance(data, dict) else None
    if schema not in (PROBE, TRAIN):
        raise LscapeError(
            f"expected a {PROBE} or {TRAIN} record, found {str(schema)[:60]!r}",
            str(path),
            "pass probe/train JSON files or the directories that hold them",
        )
    check_schema(data, "probe.schema.json" if schema == PROBE else "train.schema.json", path)
    return dict(data)


def collect(paths: list[Path]) -> list[Run]:
    """Join every record by checkpoint sha256 into runs (probe scalars + final metrics + config)."""
    runs: dict[str, Run] = {}
    for path in find_records(paths):
        rec = _read(path)
        entry = rec["inputs"]["checkpoint"] if rec["schema"] == PROBE else rec["results"].get("checkpoint")
        if entry is None:  # a diverged restart has no checkpoint
            continue
        run = runs.setdefault(entry["sha256"], Run(entry["sha256"], (path.parent / entry["path"]).resolve()))
        if rec["schema"] == PROBE:
            if rec["config"]["evaluation"]["split"] != "train":
                prefix = rec["config"]["evaluation"]["split"] + "_"
                scalars = {prefix + k: v for k, v in _probe_scalars(rec["results"]).items()}
            else:
                scalars = _probe_scalars(rec["results"])
        else:
            run.config.update(_flat_config(rec["config"]))
            run.config["training.stop_reason"] = rec["results"]["stop_reason"]
            scalars = dict(rec["results"]["final"])
        if rec["schema"] == PROBE:
            _note_conflicts(run, scalars, path)
        run.metrics.update(scalars)
        run.sources.update({k: str(path) for k in scalars})
    for run in runs.values():
        _fill_from_checkpoint(run)
    return sorted(runs.values(), key=lambda r: str(r.checkpoint))


def _note_conflicts(run: Run, scalars: dict[str, float | None], path: Path) -> None:
    """Remember metrics that two probe records of one checkpoint give with different values.

    Two probes of one checkpoint with other settings (a batch size, a sharpness radius) may both give
    ``lambda_max``; the last record read would silently win. Such a metric is refused where it is used
    (:func:`lscape_cli.core.pareto.study`), naming the records; metrics nobody asks for do not matter.
    """
    for key, value in scalars.items():
        old = run.sources.get(key)
        if old is not None and old.endswith(".probe.json") and run.metrics.get(key) != value:
            run.conflicts.setdefault(key, [old]).append(str(path))


def _fill_from_checkpoint(run: Run) -> None:
    """Configuration and final metrics from the checkpoint header when no train record gave them."""
    if run.checkpoint.exists() and sha256_file(run.checkpoint) != run.sha256:
        raise LscapeError(
            "checkpoint changed since its records were written (sha256 differs)",
            str(run.checkpoint),
            "re-run `lscape probe` (and `lscape train`) for it, or restore the original file",
        )
    if run.config and "train_loss" in run.metrics:
        return
    if not run.checkpoint.exists():
        raise LscapeError(
            "checkpoint named by a record is missing",
            str(run.checkpoint),
            "keep records beside their checkpoints, or pass the train records too",
        )
    meta = read_metadata(run.checkpoint)
    if not run.config:
        run.config.update(_flat_config(meta))
    for k, v in (meta.get("metrics") or {}).items():
        if k not in run.metrics:
            run.metrics[k] = v
            run.sources[k] = str(run.checkpoint)
