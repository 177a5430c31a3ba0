"""What `lscape train` writes per restart: the checkpoint with its metadata, the trajectory, the record.

Checkpoint metadata (``storage.checkpoint``): ``model``, ``dataset``, ``training`` (the resolved
config plus ``seed``, ``restart``, ``restarts``, ``base_seed``, ``stop_reason``, ``steps``,
``epochs_run``, ``device``, ``dtype``), ``metrics`` (final loss/accuracy per split), ``versions``.
The ``lscape.train/1`` record (schema: ``storage/schemas/train.schema.json``): ``results`` holds
``restart``, ``seed``, ``stop_reason``, ``steps``, ``epochs``, ``num_parameters``, ``final``,
``history``, ``checkpoint`` and ``trajectory`` (``{"path", "sha256", ...}`` or null).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, TypedDict

import torch

from lscape_cli import __version__
from lscape_cli.core.training import RunResult
from lscape_cli.errors import LscapeError
from lscape_cli.storage.checkpoint import CheckpointMeta, save_checkpoint, save_trajectory
from lscape_cli.storage.files import remove_on_commit, sha256_file
from lscape_cli.storage.records import (
    environment,
    make_record,
    task_of_config,
    undefined_accuracy,
    write_record,
)

TRAIN_SCHEMA = "lscape.train/1"


class TrainResults(TypedDict):
    """``results`` of a ``lscape.train/1`` record (one restart)."""

    restart: int
    seed: int
    stop_reason: str  # epochs, max_steps, tol, patience, diverged or interrupted
    steps: int
    epochs: int
    num_parameters: int
    final: dict[str, float]  # {split}_loss and {split}_accuracy, eval mode, whole split
    history: list[dict[str, Any]]  # one entry per evaluation
    checkpoint: dict[str, Any] | None  # {"path", "sha256"}; null when the restart diverged
    trajectory: dict[str, Any] | None  # {"path", "sha256", "snapshots", "epochs"} with --save-trajectory


def write_run(
    res: RunResult, stem: Path, ctx: dict[str, Any], timing: dict[str, float], command: list[str]
) -> str:
    """Write one restart's checkpoint (unless it diverged), trajectory and record; the record's text.

    ``ctx``: ``model``, ``dataset`` (descriptions), ``cfg`` (the TrainConfig), ``device``, ``dtype``,
    ``restarts``, ``base_seed``, ``num_parameters``.
    """
    training = {
        **ctx["cfg"].to_dict(),
        "seed": res.seed,
        "restart": res.restart,
        "restarts": ctx["restarts"],
        "base_seed": ctx["base_seed"],
        "stop_reason": res.stop_reason,
        "steps": res.steps,
        "epochs_run": res.epochs,
        "device": ctx["device"],
        "dtype": ctx["dtype"],
    }
    metrics: dict[str, float | None] = dict(res.final.items())
    if task_of_config(ctx) == "regression":
        metrics = undefined_accuracy(metrics)  # null, not NaN, in the header's JSON
    versions = {"lscape": __version__, "torch": torch.__version__, "python": sys.version.split()[0]}
    meta: CheckpointMeta = {
        "model": ctx["model"],
        "dataset": ctx["dataset"],
        "training": training,
        "metrics": metrics,
        "versions": versions,
    }
    ckpt_path = Path(str(stem) + ".safetensors")
    json_path = Path(str(stem) + ".train.json")
    outputs: dict[str, Any] = {"checkpoint": None, "trajectory": None}
    warnings = list(ctx.get("warnings", []))
    if res.stop_reason == "diverged":
        warnings.append(f"training diverged (non-finite loss) at step {res.steps}; no checkpoint written")
    else:
        save_checkpoint(ckpt_path, res.state, dict(meta))
        outputs["checkpoint"] = {"path": ckpt_path.name, "sha256": sha256_file(ckpt_path)}
        if res.trajectory is not None:
            traj_path = Path(str(stem) + ".trajectory.safetensors")
            save_trajectory(
                traj_path,
                res.trajectory,
                {**meta, "epochs": res.trajectory_epochs, "steps": res.trajectory_steps},
            )
            outputs["trajectory"] = {
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
        "num_parameters": ctx["num_parameters"],
        "final": res.final,
        "history": res.history,
        "checkpoint": outputs["checkpoint"],
        "trajectory": outputs["trajectory"],
    }
    config = {
        "model": ctx["model"],
        "dataset": ctx["dataset"],
        "training": ctx["cfg"].to_dict(),
        "seed": res.seed,
        "base_seed": ctx["base_seed"],
        "restarts": ctx["restarts"],
        "device": ctx["device"],
        "dtype": ctx["dtype"],
        "evaluation": {
            "mode": "eval",
            "splits": ["train", "val", "test"],
            "max_batch": ctx["cfg"].max_batch,
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
        env=environment(ctx["device"]),
    )
    return write_record(json_path, record)


def output_stems(out: Path, name: str, restarts: int) -> list[Path]:
    """File stems per restart: ``OUT/NAME`` for one run, ``OUT/NAME-r000``, ... (by restart) for many."""
    if restarts == 1:
        return [out / name]
    width = max(3, len(str(restarts - 1)))
    return [out / f"{name}-r{r:0{width}d}" for r in range(restarts)]


def check_outputs(out: Path, stems: list[Path], trajectory: bool, overwrite: bool) -> None:
    """Refuse an ``--out`` that is a file, or files that exist without ``overwrite`` (parents are created)."""
    if out.exists() and not out.is_dir():
        raise LscapeError("--out exists and is not a directory", str(out), "choose a directory path")
    suffixes = [".safetensors", ".train.json"] + ([".trajectory.safetensors"] if trajectory else [])
    clash = [str(s) + suf for s in stems for suf in suffixes if Path(str(s) + suf).exists()]
    if clash and not overwrite:
        raise LscapeError(
            "output exists",
            clash[0] + (f" and {len(clash) - 1} more" if len(clash) > 1 else ""),
            "pass --overwrite to replace, or choose another --out/--name",
        )
