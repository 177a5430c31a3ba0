"""Rebuilding the module a checkpoint or trajectory file describes, and loading its tensors strictly.

:mod:`lscape_cli.storage.checkpoint` reads the file (tensors and metadata); this module turns the
metadata's model description back into a module under the trust rule (DESIGN.md "Models and data
from the user"): registry models and torchvision builders looked up by name rebuild with no flag; a
``user`` model only imports code when the user names its source again (``--model-def``) or accepts the
recorded one (``--trust-model-def``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import cast

import torch

from lscape_cli.errors import LscapeError
from lscape_cli.models.registry import ModelSpec, build
from lscape_cli.models.user import (
    USER_KINDS,
    UserInputs,
    UserModelConfig,
    build_user,
    kind_of,
    make_config,
    parse_kwargs,
    parse_source,
)
from lscape_cli.storage.checkpoint import (
    Checkpoint,
    check_model_entry,
    load_any,
    load_checkpoint,
    load_trajectory,
)
from lscape_cli.storage.trajectory import Snapshots, read_snapshots


@dataclass
class LoadedModel:
    """A checkpoint rebuilt into its module (eval mode, on the requested device/dtype)."""

    module: torch.nn.Module
    checkpoint: Checkpoint
    spec: ModelSpec
    warnings: list[str] = field(default_factory=list)  # e.g. the model's file changed since training


def load_model(
    path: Path,
    model_config: Path | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    user: UserInputs | None = None,
) -> LoadedModel:
    """Rebuild the module a checkpoint describes and load its tensors strictly.

    A checkpoint of a user model (``"name": "user"``) only imports code when ``user`` names the source
    again (``model_def``) or accepts the recorded one (``trust_model_def``).

    Args:
        path: the .safetensors file.
        model_config: JSON describing the model when the file has no lscape metadata.
        device: where the module goes.
        dtype: floating dtype of parameters and buffers.
        user: the user-model options (``--model-def``, ``--model-args``, ``--trust-model-def``).
    """
    user = user if isinstance(user, UserInputs) else UserInputs()
    if user.model_def is not None and model_config is not None:
        raise LscapeError(
            "--model-def and --model-config both describe the model", str(path), "pass only one of them"
        )
    if user.model_def is not None:
        ckpt = load_any(path)
        spec, module, notes = from_source(ckpt, user)
    else:
        ckpt = load_checkpoint(path, model_config)
        spec, module, notes = _from_metadata(ckpt, model_config, user)
    load_state_strict(module, ckpt.state, str(path))
    module.to(device=device, dtype=dtype).eval()
    return LoadedModel(module=module, checkpoint=ckpt, spec=spec, warnings=notes)


def load_snapshot_model(
    path: Path,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    user: UserInputs | None = None,
) -> tuple[LoadedModel, Snapshots]:
    """The module a trajectory describes, holding its last snapshot, and all the snapshots.

    The description is built under the trust rule (:func:`build_described`): a user model needs
    ``--model-def`` or ``--trust-model-def`` (``user``), as for a checkpoint. A trajectory holds no
    buffers, so a model with some (BatchNorm) is refused.
    """
    traj = load_trajectory(path)
    check_model_entry(dict(traj.meta), str(path))
    notes: list[str] = []
    if user is not None and user.model_def:
        spec, module, notes = from_source(traj, user)
    else:
        spec = ModelSpec.from_dict(dict(traj.meta["model"]), where=f"{path} (model description)")
        module = build_described(spec, path, user, notes)
    if any(True for _ in module.buffers()):
        raise LscapeError(
            "the trajectory holds no buffers (e.g. BatchNorm statistics) but this model has some",
            str(path),
            "probe the checkpoints themselves",
        )
    snaps = read_snapshots(traj)
    last = snaps.state(len(snaps.epochs) - 1)
    load_state_strict(module, last, str(path))
    module.to(device=device, dtype=dtype).eval()
    return LoadedModel(module, Checkpoint(path, last, traj.meta), spec, notes), snaps


def load_state_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """Copy ``state`` into ``module``; missing, unexpected or mis-shaped tensors are one error naming them."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    misshaped = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append("missing " + ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else ""))
    if unexpected:
        problems.append("unexpected " + ", ".join(unexpected[:5]) + (" ..." if len(unexpected) > 5 else ""))
    if misshaped:
        problems.append("mis-shaped (file vs model) " + "; ".join(misshaped[:5]))
    if problems:
        raise LscapeError(
            "checkpoint tensors do not match the model: " + " | ".join(problems),
            where,
            "check that the metadata or --model-config describes this file's model",
        )
    module.load_state_dict(state, strict=True)


def _user_config(spec: ModelSpec) -> UserModelConfig:
    """The config of a ``user``/``torchvision`` spec (:meth:`ModelSpec.from_dict` always makes it one)."""
    return cast(UserModelConfig, spec.config)


def _recorded(ckpt: Checkpoint) -> UserModelConfig | None:
    """The recorded user-model config, if the checkpoint's model is one."""
    model = ckpt.meta.get("model")
    if isinstance(model, dict) and model.get("name") in USER_KINDS:
        return _user_config(ModelSpec.from_dict(dict(model), where=str(ckpt.path)))
    return None


def from_source(ckpt: Checkpoint, user: UserInputs) -> tuple[ModelSpec, torch.nn.Module, list[str]]:
    """Build the model the user names (``--model-def``), with the recorded kwargs unless given."""
    recorded = _recorded(ckpt)
    args = user.model_args
    kwargs = parse_kwargs(args) if args else dict(getattr(recorded, "kwargs", {}) or {})
    cfg = make_config(str(user.model_def), kwargs)
    notes: list[str] = []
    if recorded is not None:
        old = recorded.sha256
        if old and cfg.sha256 and old != cfg.sha256:
            notes.append(
                f"{cfg.file} differs from the file the checkpoint was trained from "
                f"(sha256 {old[:12]}... recorded, {cfg.sha256[:12]}... now)"
            )
        cfg = replace(cfg, input_shape=recorded.input_shape, num_classes=recorded.num_classes)
    cfg = replace(cfg, output=user.output or getattr(recorded, "output", None))
    module = build_user(cfg, notes)
    return ModelSpec(kind_of(cfg), cfg), module, notes


def _from_metadata(
    ckpt: Checkpoint, model_config: Path | None, user: UserInputs
) -> tuple[ModelSpec, torch.nn.Module, list[str]]:
    path = ckpt.path
    if "model" not in ckpt.meta:
        raise LscapeError(
            "checkpoint metadata has no 'model' entry", str(path), "pass --model-config spec.json"
        )
    where = f"{model_config or path} (model description)"
    check_model_entry(dict(ckpt.meta), str(model_config or path))
    spec = ModelSpec.from_dict(dict(ckpt.meta["model"]), where=where)
    notes: list[str] = []
    args = user.model_args
    if args and spec.name in USER_KINDS:
        spec = ModelSpec(spec.name, replace(_user_config(spec), kwargs=parse_kwargs(args)))
    if user.output and spec.name in USER_KINDS:
        spec = ModelSpec(spec.name, replace(_user_config(spec), output=user.output))
    return spec, build_described(spec, model_config or path, user, notes), notes


def build_described(
    spec: ModelSpec, path: Path, user: UserInputs | None, notes: list[str]
) -> torch.nn.Module:
    """Build a model description read from a file, under the trust rule.

    Registry models and torchvision builders (looked up by name inside torchvision) build freely; a
    ``user`` description (which :meth:`ModelSpec.from_dict` also makes of any description naming a file
    or an import path) is only imported with ``--trust-model-def``.
    """
    if spec.name == "torchvision":
        return build_user(_user_config(spec), notes, where=f"{path} (model description)")
    if spec.name != "user":
        return build(spec)
    cfg = _user_config(spec)
    if not (user is not None and user.trust_model_def):
        code = cfg.source + _other_file(cfg)
        raise LscapeError(
            f"{path} describes a model built by user code {code}; reading a file never imports code",
            None,
            f"pass --model-def {cfg.source} to load it, or --trust-model-def to import the recorded source",
        )
    return build_user(cfg, notes)


def _other_file(cfg: UserModelConfig) -> str:
    """`` (file F)`` when the recorded file is not the one the source names (it is what would be imported)."""
    src = parse_source(cfg.source)
    if src.kind != "file" or not cfg.file or Path(src.target).resolve() == Path(cfg.file).resolve():
        return ""
    return f" (file {cfg.file})"
