"""The initial parameters theta_0 a checkpoint's training started from, rebuilt from its metadata.

``lscape train`` draws restart ``r``'s initialisation from ``training.seed`` alone
(:func:`lscape_cli.core.training.engine.initial_states`: ``training.init`` applied to the model in float32 on
the CPU, then cast to ``training.dtype``; a user model with ``init == "default"`` is its factory run
under that seed, :func:`lscape_cli.models.user.seeded_states`). Redoing that draw gives theta_0 exactly,
the centre of the PAC-Bayes prior (:class:`lscape_cli.core.probe.pac_bayes.Prior`).

When it cannot be redone the prior is centred at 0 and the reason becomes a warning: a file without
training metadata (a plain safetensors file), an unknown ``init``, a user model whose file or arguments
differ from the recorded ones, or a factory that does not draw the same weights twice from one seed.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch

from lscape_cli.core.probe.pac_bayes import Prior
from lscape_cli.models.user import USER_KINDS, UserModelConfig, seeded_states

if TYPE_CHECKING:
    from lscape_cli.models.loading import LoadedModel


def initial_prior(loaded: LoadedModel) -> Prior:
    """The PAC-Bayes prior centre for ``loaded``."""
    from lscape_cli.runtime import DTYPES

    training = loaded.checkpoint.meta.get("training") or {}
    if "seed" not in training:
        return Prior.zero("the checkpoint has no training metadata (seed, init) to rebuild theta_0 from")
    seed, init = int(training["seed"]), str(training.get("init", "default"))
    dtype = DTYPES.get(str(training.get("dtype", "float32")), torch.float32)
    source = f"training.seed {seed}, training.init {init!r}, drawn as `lscape train` does"
    config = cast(UserModelConfig, loaded.spec.config) if loaded.spec.name in USER_KINDS else None
    if config is not None:
        refused = _user_mismatch(loaded.checkpoint.meta.get("model") or {}, config)
        if refused is not None:
            return Prior.zero(refused)
    if config is not None and init == "default":
        states = _factory_states(config, seed)
        if states is None:
            return Prior.zero(f"{config.source} does not draw the same initial weights twice from one seed")
        source = f"training.seed {seed}: {config.source}'s own initialisation under that seed"
    else:
        states = _registry_states(loaded.module, init, seed)
        if states is None:
            return Prior.zero(f"unknown training.init {init!r}")
    names = [n for n, _ in loaded.module.named_parameters()]
    state = states[0]
    shapes = {n: p.shape for n, p in loaded.module.named_parameters()}
    if any(n not in state or state[n].shape != shapes[n] for n in names):
        return Prior.zero("the rebuilt initial state does not match the checkpoint's parameters")
    device = next(loaded.module.parameters()).device
    params = {n: state[n].to(dtype=dtype).to(device=device, dtype=torch.float64) for n in names}
    return Prior("init", params, source)


def _registry_states(module: torch.nn.Module, init: str, seed: int) -> list[dict[str, torch.Tensor]] | None:
    """``training.init`` applied to a copy of ``module`` under ``seed`` (None: an unknown init)."""
    from lscape_cli.core.training.engine import initial_states

    try:
        return initial_states(copy.deepcopy(module), init, [seed], torch.device("cpu"), torch.float32)
    except ValueError:
        return None


def _factory_states(config: UserModelConfig, seed: int) -> list[dict[str, torch.Tensor]] | None:
    """The factory's initialisation under ``seed``, or None when two draws from the seed differ."""
    first, second = seeded_states(config, [seed, seed])
    same = first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    return [first] if same else None


def _user_mismatch(recorded: Mapping[str, Any], config: UserModelConfig) -> str | None:
    """Why the user model built now may not draw the training's initialisation (None: it does)."""
    from lscape_cli.storage.files import sha256_file

    was = recorded.get("config") or {}
    if dict(was.get("kwargs") or {}) != dict(config.kwargs):
        return "the model's arguments differ from the ones it was trained with"
    if config.file is not None and was.get("sha256") and sha256_file(Path(config.file)) != was["sha256"]:
        return f"{config.file} changed since the checkpoint was written"
    return None
