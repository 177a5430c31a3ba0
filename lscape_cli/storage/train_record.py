"""What `lscape train` writes per restart: the checkpoint with its metadata, the trajectory, the record.

Checkpoint metadata (``storage.checkpoint``): ``model``, ``dataset``, ``training`` (the resolved
config plus ``seed``, ``restart``, ``restarts``, ``base_seed``, ``stop_reason``, ``steps``,
``epochs_run``, ``best_epoch``, ``device``, ``dtype``), ``metrics`` (final loss/accuracy per split),
``versions``.
The ``lscape.train/1`` record (schema: ``storage/schemas/train.schema.json``): ``results`` holds
``restart``, ``seed``, ``stop_reason``, ``steps``, ``epochs``, ``num_parameters``, ``final``,
``history``, ``checkpoint`` and ``trajectory`` (``{"path", "sha256", ...}`` or null), and:

- ``stopped_on_budget``: true when the restart stopped because its epoch or step budget ran out
  (``stop_reason`` ``epochs`` or ``max_steps``), not on a convergence rule, patience or divergence.
- ``best_epoch``: with ``--restore-best``, the epoch whose state the checkpoint holds; else null.
- ``tracking`` (null without ``--track``): ``wall_time_s`` (probing all restarts of this process),
  ``share_of_training`` (that over the training wall time, which includes it), ``restart_wall_time_s``
  (this restart's share), ``num_matvecs`` (Hessian-vector products spent on this restart) and
  ``epochs`` (the tracked epochs). ``config.tracking`` holds the tracking protocol
  (:meth:`lscape_cli.core.training.tracking.Tracker.describe`), each tracked ``history`` entry a ``tracked``
  dict (quantity -> what ``lscape probe`` writes under ``results.<quantity>``) and ``tracking_cost``.

While it trains, the run keeps ``OUT/NAME.resume.pt`` (:mod:`lscape_cli.storage.train_resume`) for
``--resume``; it is removed when these files are committed. ``config.resume`` says whether ``--resume``
was given and after which epoch the run continued (null: it ran from the start); the checkpoint and
trajectory bytes are those of an uninterrupted run.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict, cast

import torch

from lscape_cli import __version__
from lscape_cli.core.training.engine import HistoryEntry, RunResult, TrainConfig, TrainConfigDescription
from lscape_cli.core.training.tracking import TrackingConfig
from lscape_cli.errors import LscapeError
from lscape_cli.storage.checkpoint import CheckpointMeta, ModelMeta, save_checkpoint, save_trajectory
from lscape_cli.storage.files import remove_on_commit, sha256_file
from lscape_cli.storage.records import (
    Envelope,
    environment,
    make_record,
    task_of_config,
    undefined_accuracy,
    write_record,
)
from lscape_cli.storage.run_names import restart_width

TRAIN_SCHEMA = "lscape.train/1"
BUDGET_REASONS = ("epochs", "max_steps")


@dataclass
class TrainContext:
    """What every restart's files say about the run beside its own result (built by ``lscape train``)."""

    model: dict[str, object]  # ModelSpec.to_dict()
    dataset: dict[str, object]  # Splits.describe()
    cfg: TrainConfig
    device: str
    dtype: str
    restarts: int
    base_seed: int
    num_parameters: int
    warnings: list[str]
    tracking: TrackingConfig | None  # the --track protocol
    tracking_s: float = 0.0  # seconds all restarts of this process spent tracked
    resume: ResumeInfo | None = None


class ResumeInfo(TypedDict):
    """``config.resume``: whether --resume was given and after which epoch the run continued."""

    requested: bool
    from_epoch: int | None


class TrackingSummary(TypedDict):
    """``results.tracking`` of one restart (module docstring)."""

    wall_time_s: float
    share_of_training: float | None
    restart_wall_time_s: float
    num_matvecs: int
    epochs: list[int]


class FileEntry(TypedDict):
    """A file a restart wrote, by name, with its sha256."""

    path: str
    sha256: str


class TrajectoryEntry(FileEntry):
    """``results.trajectory``: the trajectory file and its snapshots."""

    snapshots: int
    epochs: list[int]


class TrainRecordConfig(TypedDict):
    """``config`` of a ``lscape.train/1`` record."""

    model: dict[str, object]
    dataset: dict[str, object]
    training: TrainConfigDescription
    seed: int
    base_seed: int
    restarts: int
    device: str
    dtype: str
    tracking: TrackingConfig | None
    resume: ResumeInfo | None
    evaluation: dict[str, object]  # mode, splits, max_batch, weighting


def tracking_summary(res: RunResult, tracking_s: float, train_s: float) -> TrackingSummary | None:
    """``results.tracking`` of one restart (None when nothing was tracked)."""
    tracked = [e for e in res.history if "tracked" in e]
    if not tracked:
        return None
    return {
        "wall_time_s": tracking_s,
        "share_of_training": tracking_s / train_s if train_s > 0 else None,
        "restart_wall_time_s": res.tracking_s,
        "num_matvecs": sum(int(e["tracking_cost"]["num_matvecs"]) for e in tracked),
        "epochs": [e["epoch"] for e in tracked],
    }


class TrainResults(TypedDict):
    """``results`` of a ``lscape.train/1`` record (one restart)."""

    restart: int
    seed: int
    stop_reason: str  # epochs, max_steps, tol, tol_window, grad_tol, patience, diverged or interrupted
    steps: int
    epochs: int
    num_parameters: int
    final: dict[str, float]  # {split}_loss and {split}_accuracy, eval mode, whole split
    history: list[HistoryEntry]  # one entry per evaluation or tracked epoch (``tracked`` there)
    checkpoint: FileEntry | None  # null when the restart diverged
    trajectory: TrajectoryEntry | None  # with --save-trajectory
    stopped_on_budget: bool  # stopped on epochs/max_steps, not on a convergence rule
    best_epoch: int | None  # with --restore-best: the epoch whose state the checkpoint holds
    tracking: TrackingSummary | None  # with --track (module docstring)


class TrainRecord(Envelope):
    """A ``lscape.train/1`` record (one restart)."""

    config: TrainRecordConfig
    results: TrainResults


def write_run(
    res: RunResult, stem: Path, ctx: TrainContext, timing: dict[str, float], command: list[str]
) -> str:
    """Write one restart's checkpoint (unless it diverged), trajectory and record; the record's text.

    ``ctx``: ``model``, ``dataset`` (descriptions), ``cfg`` (the TrainConfig), ``device``, ``dtype``,
    ``restarts``, ``base_seed``, ``num_parameters``, ``tracking`` (the protocol or None),
    ``tracking_s`` (seconds all restarts of the run spent tracked), ``resume`` (``requested``,
    ``from_epoch``: the epoch a ``--resume`` continued after, or null).
    """
    training = {
        **ctx.cfg.describe(),
        "seed": res.seed,
        "restart": res.restart,
        "restarts": ctx.restarts,
        "base_seed": ctx.base_seed,
        "stop_reason": res.stop_reason,
        "steps": res.steps,
        "epochs_run": res.epochs,
        "best_epoch": res.best_epoch,
        "device": ctx.device,
        "dtype": ctx.dtype,
    }
    metrics: dict[str, float | None] = dict(res.final.items())
    if task_of_config({"dataset": ctx.dataset}) == "regression":
        metrics = undefined_accuracy(metrics)  # null, not NaN, in the header's JSON
    versions = {"lscape": __version__, "torch": torch.__version__, "python": sys.version.split()[0]}
    meta: CheckpointMeta = {
        "model": cast(ModelMeta, ctx.model),
        "dataset": ctx.dataset,
        "training": training,
        "metrics": metrics,
        "versions": versions,
    }
    ckpt_path = Path(str(stem) + ".safetensors")
    json_path = Path(str(stem) + ".train.json")
    checkpoint: FileEntry | None = None
    trajectory: TrajectoryEntry | None = None
    warnings = list(ctx.warnings)
    if res.stop_reason == "diverged":
        warnings.append(f"training diverged (non-finite loss) at step {res.steps}; no checkpoint written")
    else:
        save_checkpoint(ckpt_path, res.state, dict(meta))
        checkpoint = {"path": ckpt_path.name, "sha256": sha256_file(ckpt_path)}
        if res.trajectory is not None:
            traj_path = Path(str(stem) + ".trajectory.safetensors")
            save_trajectory(
                traj_path,
                res.trajectory,
                {**meta, "epochs": res.trajectory_epochs, "steps": res.trajectory_steps},
            )
            trajectory = {
                "path": traj_path.name,
                "sha256": sha256_file(traj_path),
                "snapshots": len(res.trajectory_epochs),
                "epochs": res.trajectory_epochs,
            }
        else:
            remove_on_commit(Path(str(stem) + ".trajectory.safetensors"))  # stale, from an overwritten run
    if res.stop_reason == "interrupted":
        warnings.append("training was interrupted (Ctrl-C); the checkpoint holds the state reached")
    results: TrainResults = {
        "restart": res.restart,
        "seed": res.seed,
        "stop_reason": res.stop_reason,
        "steps": res.steps,
        "epochs": res.epochs,
        "num_parameters": ctx.num_parameters,
        "final": res.final,
        "history": res.history,
        "checkpoint": checkpoint,
        "trajectory": trajectory,
        "stopped_on_budget": res.stop_reason in BUDGET_REASONS,
        "best_epoch": res.best_epoch,
        "tracking": tracking_summary(res, ctx.tracking_s, timing["train"]),
    }
    config: TrainRecordConfig = {
        "model": ctx.model,
        "dataset": ctx.dataset,
        "training": ctx.cfg.describe(),
        "seed": res.seed,
        "base_seed": ctx.base_seed,
        "restarts": ctx.restarts,
        "device": ctx.device,
        "dtype": ctx.dtype,
        "tracking": ctx.tracking,
        "resume": ctx.resume,
        "evaluation": {
            "mode": "eval",
            "splits": ["train", "val", "test"],
            "max_batch": ctx.cfg.max_batch,
            "weighting": "mean over samples",
        },
    }
    record = make_record(
        TRAIN_SCHEMA,
        out_path=json_path,
        command=command,
        inputs={},
        config=config,
        results=dict(results),
        timing_s=timing,
        warnings=warnings,
        env=environment(ctx.device),
    )
    return write_record(json_path, record)


def check_outputs(
    out: Path,
    name: str,
    restarts: int,
    trajectory: bool,
    overwrite: bool,
    chosen: Sequence[int] | None = None,
) -> None:
    """Refuse an ``--out`` that is a file, or files that exist without ``overwrite`` (parents are created).

    ``chosen`` limits the check to the restarts this process writes (``--shard``); None means all.
    """
    if out.exists() and not out.is_dir():
        raise LscapeError("--out exists and is not a directory", str(out), "choose a directory path")
    suffixes = [".safetensors", ".train.json"] + ([".trajectory.safetensors"] if trajectory else [])
    clash = _existing_outputs(out, name, restarts, suffixes, chosen)
    if clash and not overwrite:
        raise LscapeError(
            "output exists",
            clash[0] + (f" and {len(clash) - 1} more" if len(clash) > 1 else ""),
            "pass --overwrite to replace, or choose another --out/--name",
        )


def _existing_outputs(
    out: Path, name: str, restarts: int, suffixes: list[str], chosen: Sequence[int] | None
) -> list[str]:
    """Files in OUT this run would write, from one listing of OUT (not one lookup per restart)."""
    if not out.is_dir():
        return []
    width = restart_width(restarts)
    pattern = re.compile(re.escape(name) + r"-r(\d+)")
    clash = []
    for path in sorted(out.iterdir()):
        for suffix in suffixes:
            if not path.name.endswith(suffix):
                continue
            stem = path.name[: -len(suffix)]
            match = pattern.fullmatch(stem)
            index = int(match[1]) if match is not None and len(match[1]) == width else None
            mine = index is not None and index < restarts and (chosen is None or index in chosen)
            if stem == name if restarts == 1 else mine:
                clash.append(str(path))
    return clash
