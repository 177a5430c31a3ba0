"""A checkpoint opened for evaluation: what every evaluating command (probe, slice, connect) does first.

:func:`load_for_eval` rebuilds the model (:mod:`lscape_cli.models.loading`), the data split it is
evaluated on (:mod:`lscape_cli.datasets`) and the loss (:mod:`lscape_cli.models.losses`), checks the
model on that data, and writes down the evaluation protocol every record carries (``config.protocol``
in docs/formats.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch

from lscape_cli import datasets
from lscape_cli.core.losses import Loss
from lscape_cli.core.objective import EvalProtocol
from lscape_cli.errors import LscapeError
from lscape_cli.models.loading import LoadedModel, load_model, load_snapshot_model
from lscape_cli.models.registry import ModelSpec
from lscape_cli.models.user import USER_KINDS, UserInputs, UserModelConfig, check_on_data
from lscape_cli.storage.checkpoint import CheckpointMeta
from lscape_cli.storage.trajectory import Snapshots


@dataclass
class EvalSetup:
    """A loaded checkpoint, the split it is evaluated on, and the evaluation protocol."""

    loaded: LoadedModel
    splits: datasets.Splits
    # (N, ...) inputs of the chosen split: a tensor, or a StreamedSamples that reads rows from disk through
    # the tensor interface the core engines use (shape, dtype, device, row slices)
    x: torch.Tensor
    y: torch.Tensor  # (N,) labels, (N, T) tokens, or (N,) / (N, D) regression targets
    loss: Loss
    split: str
    device: torch.device
    dtype: torch.dtype
    protocol: EvalProtocol  # the record's config.evaluation (docs/formats.md)
    warnings: list[str] = field(default_factory=list)  # for the record (e.g. a changed model or data file)
    snapshots: Snapshots | None = None  # when the input is a trajectory file


def load_for_eval(
    checkpoint: Path,
    *,
    model_config: Path | None,
    split: str,
    device_name: str,
    dtype_name: str,
    root: Path,
    dataset: str | None = None,
    loss: str | None = None,
    mode: str = "eval",
    max_batch: int = 4096,
    samples: int | None = None,
    trajectory: bool = False,
    user: UserInputs | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> EvalSetup:
    """Rebuild model + data from the checkpoint's metadata (``dataset``/``loss`` override it).

    ``samples``: keep only the first M samples of the split (the protocol of ``lscape train --track``).
    ``trajectory``: the input is a trajectory file; the module holds its last snapshot.
    ``user`` names the user's model (``--model-def``) and data file (``--data``).
    ``on_warning`` is told, as it happens, a warning the user should see at once (evaluating a file
    without training metadata with the default loss); every warning also goes into ``warnings``.
    """
    from lscape_cli.runtime import resolve_device, resolve_dtype

    if split not in datasets.SPLITS:
        raise LscapeError(f"unknown split {split!r}", "--split", "use train, val or test")
    if mode not in ("eval", "train"):
        raise LscapeError(f"unknown mode {mode!r}", "--mode", "use eval or train")
    device, dtype = resolve_device(device_name), resolve_dtype(dtype_name)
    snapshots = None
    if trajectory:
        loaded, snapshots = load_snapshot_model(checkpoint, device=device, dtype=dtype, user=user)
    else:
        loaded = load_model(checkpoint, model_config, device=device, dtype=dtype, user=user)
    meta = loaded.checkpoint.meta
    dmeta = _dataset_meta(dict(meta.get("dataset") or {}), dataset, getattr(user, "data", None))
    if not dmeta:
        raise LscapeError(
            "no dataset described for this checkpoint",
            str(checkpoint),
            "pass --data FILE or --dataset NAME (or a 'dataset' entry in --model-config)",
        )
    splits = datasets.load(
        datasets.DatasetSpec.from_dict(dmeta, str(model_config or checkpoint)),
        root,
        device=device,
        dtype=dtype,
    )
    warnings = list(loaded.warnings)
    if dmeta.get("sha256") and dmeta["sha256"] != splits.spec.sha256:
        warnings.append(f"data file {dmeta.get('path')} changed since the checkpoint was written (sha256)")
    if dmeta.get("fingerprint") and dmeta["fingerprint"] != splits.spec.fingerprint:
        warnings.append(
            f"data directory {dmeta.get('path')} changed since the checkpoint was written (fingerprint)"
        )
    resolved, loss_source, loss_warnings = _resolve_loss(loss, meta, checkpoint, user, on_warning)
    warnings += loss_warnings
    splits.check_loss(resolved)
    _fill_user_shapes(loaded, splits)
    expected = tuple(getattr(loaded.spec.config, "input_shape", None) or splits.input_shape)
    if tuple(splits.input_shape) != expected:
        raise LscapeError(
            f"dataset {splits.spec.name!r} gives inputs {tuple(splits.input_shape)} but the model "
            f"expects {expected}",
            str(checkpoint),
            "evaluate on the dataset the model was trained on",
        )
    sample = splits.x[split] if len(splits.x[split]) else splits.x["train"]  # an empty split checks nothing
    steps = tuple(splits.y["train"].shape[1:]) if splits.task != "regression" else ()
    check_on_data(
        loaded.module, sample[:2], splits.num_classes, resolved, str(checkpoint), True, splits.task, steps
    )
    if mode == "train":
        loaded.module.train()
    x, y = splits.x[split], splits.y[split]
    if samples is not None:
        from lscape_cli.core.samples import span

        x, y = span(x, None, samples), y[:samples]
    protocol = _protocol(split, y, samples, mode, resolved, loss_source, max_batch, splits)
    inputs = cast(torch.Tensor, x)  # see EvalSetup.x
    return EvalSetup(loaded, splits, inputs, y, resolved, split, device, dtype, protocol, warnings, snapshots)


def _protocol(
    split: str,
    y: torch.Tensor,
    samples: int | None,
    mode: str,
    loss: Loss,
    loss_source: str,
    max_batch: int,
    splits: datasets.Splits,
) -> EvalProtocol:
    """The evaluation protocol every record carries (``config.evaluation``)."""
    from lscape_cli.core.losses import as_loss
    from lscape_cli.core.objective import num_units

    return {
        "split": split,
        "num_samples": int(y.shape[0]),
        "samples": samples,
        "mode": mode,
        "loss": str(loss),
        "loss_source": loss_source,
        "loss_definition": as_loss(loss).describe(),
        "num_units": num_units(y, loss) if len(y) else 0,
        "weighting": "mean over units (samples, or non-padding tokens for (N, T) targets), chunks weighted "
        "by their units",
        "max_batch": max_batch,
        "dataset": splits.describe(),
    }


def _dataset_meta(recorded: dict[str, Any], dataset: str | None, data: Path | None) -> dict[str, Any]:
    """The dataset to evaluate on: the recorded one, or ``--dataset NAME``, or ``--data FILE``."""
    if dataset is not None and data is not None:
        raise LscapeError("--dataset and --data both name the data", f"{dataset} vs {data}", "pass one")
    if data is not None:
        path = str(data.resolve())
        same = recorded.get("name") == "file" and recorded.get("path") == path
        return recorded if same else {"name": "file", "path": path}
    if dataset is not None:
        return {**recorded, "name": dataset} if recorded.get("name") == dataset else {"name": dataset}
    return recorded


def _fill_user_shapes(loaded: LoadedModel, splits: datasets.Splits) -> None:
    """A user model loaded from a plain file learns its input shape and classes from the data."""
    spec = loaded.spec
    if spec.name in USER_KINDS and cast(UserModelConfig, spec.config).input_shape is None:
        cfg = dataclasses.replace(
            cast(UserModelConfig, spec.config),
            input_shape=tuple(splits.input_shape),
            num_classes=splits.num_classes,
        )
        loaded.spec = ModelSpec(spec.name, cfg)


def _resolve_loss(
    loss: str | None,
    meta: CheckpointMeta,
    checkpoint: Path,
    user: UserInputs | None,
    on_warning: Callable[[str], None] | None,
) -> tuple[Loss, str, list[str]]:
    """The loss to evaluate (a :class:`~lscape_cli.core.losses.Loss`), where it came from, and warnings.

    A user loss is imported only when named (``--loss-def``) or recorded and trusted
    (``--trust-model-def``), as user models are (:mod:`lscape_cli.models.losses`).
    """
    from lscape_cli.models import losses

    training = meta.get("training") or {}
    recorded_def = (training.get("loss_definition") or {}).get("definition")
    notes: list[str] = []
    own = losses.resolve(
        loss,
        getattr(user, "loss_def", None),
        recorded_def,
        bool(getattr(user, "trust_model_def", False)),
        notes,
    )
    if own is not None:
        named = getattr(user, "loss_def", None) is not None
        return own, "--loss-def" if named else "checkpoint training metadata (--trust-model-def)", notes
    if loss is not None:
        return losses.parse_loss(loss), "--loss", []
    recorded = training.get("loss")
    if recorded is not None:
        return losses.parse_loss(str(recorded)), "checkpoint training metadata", []
    text = (
        f"{checkpoint} carries no training metadata: evaluating cross-entropy (ce); "
        "pass --loss mse if the model was trained with MSE"
    )
    if on_warning is not None:
        on_warning(text)
    return losses.parse_loss("ce"), "default (no training metadata)", [text]
