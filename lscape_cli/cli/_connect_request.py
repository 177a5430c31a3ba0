"""Validation of `lscape connect`'s options and loading of its two endpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lscape_cli.errors import LscapeError


def validate(align: str, curve: str, optimizer: str) -> None:
    """Refuse an unknown --align, --curve or --curve-optimizer."""
    from lscape_cli.core import choices as ch

    ch.Align.check(align, "--align")
    ch.Curve.check(curve, "--curve")
    ch.CurveOptimizer.check(optimizer, "--curve-optimizer")


def load_pair(
    a: Path,
    b: Path,
    model_config: Path | None,
    device: str,
    dtype: str,
    root: Path,
    loss: str | None,
    max_batch: int,
    user: Any = None,
) -> tuple[Any, Any]:
    """A's evaluation setup (train split) and B's model on the same device and dtype."""
    from lscape_cli.cli.console import warn
    from lscape_cli.models.evaluation import load_for_eval
    from lscape_cli.models.loading import load_model

    setup = load_for_eval(
        a,
        model_config=model_config,
        split="train",
        device_name=device,
        dtype_name=dtype,
        root=root,
        loss=loss,
        max_batch=max_batch,
        user=user,
        on_warning=warn,
    )
    return setup, load_model(b, model_config, device=setup.device, dtype=setup.dtype, user=user)


def alignment_spec(setup: Any) -> Any:
    """The registry's permutation structure, or one derived by tracing a user model (or one line why not)."""
    from lscape_cli.core.connectivity.permutation_trace import spec_for

    spec = setup.loaded.spec
    try:
        return spec_for(setup.loaded.module, spec, setup.x[:2])
    except ValueError as exc:
        name = getattr(spec.config, "source", spec.name)
        raise LscapeError(
            f"cannot align {name}: {exc}", "--align weights", "connect without --align (the linear path only)"
        ) from exc


def endpoint(module: Any) -> Any:
    """The detached parameters and buffers of one end of the path."""
    from lscape_cli.core.connectivity.paths import Endpoint

    return Endpoint(
        {n: p.detach() for n, p in module.named_parameters()},
        {n: t.detach() for n, t in module.named_buffers()},
    )
