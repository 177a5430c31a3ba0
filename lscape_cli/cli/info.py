"""`lscape info`: show a checkpoint's metadata without loading its tensors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from lscape_cli.cli.console import emit_json, err
from lscape_cli.cli.options import JsonOpt


def info(
    checkpoint: Annotated[Path, typer.Argument(help="A .safetensors checkpoint or trajectory file.")],
    json_out: JsonOpt = False,
) -> None:
    """Show what a checkpoint holds: model, dataset, training run, final metrics (tensors are not loaded).

    Example:
        lscape info sample_checkpoints/mlp-digits.safetensors --json | jq .model
    """
    from lscape_cli.storage.checkpoint import read_raw_metadata

    raw = read_raw_metadata(checkpoint)
    order = ["lscape_schema", "model", "dataset", "training", "metrics", "versions"]
    keys = [k for k in order if k in raw] + sorted(k for k in raw if k not in order)
    meta = {k: _parse(raw[k]) for k in keys}
    if json_out:
        emit_json(json.dumps(meta, indent=2))
        return
    if "lscape_schema" not in raw:
        err.print(f"{checkpoint}: safetensors file without lscape metadata")
        return
    err.print(f"[bold]{checkpoint}[/bold]  ({raw['lscape_schema']})")
    for key, value in meta.items():
        if key in ("format", "lscape_schema"):
            continue
        err.print(f"[bold]{key}[/bold]: {json.dumps(value, sort_keys=True)}")


def _parse(value: str) -> object:
    try:
        return json.loads(value)
    except ValueError:
        return value
