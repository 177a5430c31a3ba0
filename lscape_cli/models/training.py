"""A user's model for ``lscape train``: its source built, checked on the training data, seeded per restart.

Registry models need none of this (:func:`lscape_cli.models.registry.build` builds them from their spec);
a source (``--model-def``, ``--model torchvision:NAME``) is built under the guard of
:mod:`lscape_cli.models.user`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from lscape_cli.models.registry import ModelSpec
from lscape_cli.models.user import build_user, check_on_data, kind_of, make_config, seeded_states

if TYPE_CHECKING:
    from lscape_cli.datasets import Splits


@dataclass
class TrainingModel:
    """A user model ready for ``lscape train``: its spec, one instance, and per-seed initial states."""

    spec: ModelSpec
    module: nn.Module
    notes: list[str]
    initial_state: Callable[[int], dict[str, torch.Tensor]] | None  # seed -> state (factory's own init)


def for_training(
    source: str, kwargs: dict[str, Any], splits: Splits, loss: str, init: str, output: str | None = None
) -> TrainingModel:
    """Build ``source`` for training on ``splits`` and check it on the data.

    With ``init == "default"`` every restart starts from the factory's own initialisation, run under
    the restart's seed (so custom initialisations in the factory are kept).
    """
    cfg = make_config(
        source, kwargs, where="--model-def" if not source.startswith("torchvision:") else "--model"
    )
    cfg = dataclasses.replace(
        cfg, input_shape=tuple(splits.input_shape), num_classes=splits.num_classes, output=output
    )
    notes: list[str] = []
    module = build_user(cfg, notes)
    x = splits.x["train"]
    dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()  # token ids: int64
    check_on_data(
        module.to(dtype=dtype, device=x.device),
        x[:2],  # what the check runs on (a streamed split reads just these rows)
        splits.num_classes,
        loss,
        source,
        task=splits.task,
        target_shape=tuple(splits.y["train"].shape[1:]) if splits.task != "regression" else (),
    )

    def initial_state(seed: int) -> dict[str, torch.Tensor]:
        return seeded_states(cfg, [seed])[0]

    return TrainingModel(
        ModelSpec(kind_of(cfg), cfg), module, notes, initial_state if init == "default" else None
    )
