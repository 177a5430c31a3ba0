"""The ``lscape.connect/1`` record and the checks on its two inputs (schema: ``schemas/connect.schema.json``).

``config``: ``request`` (:class:`~lscape_cli.core.connectivity.paths.ConnectRequest`), ``evaluation`` (the
protocol on the train and test splits, BatchNorm statistics from train), ``device``, ``dtype``, ``seed``,
``model``. ``results``: see :func:`lscape_cli.core.connectivity.paths.run_connect` (plus ``plot``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypedDict

from lscape_cli.core.connectivity.paths import ConnectRequest
from lscape_cli.errors import LscapeError
from lscape_cli.storage.checkpoint import read_metadata, read_raw_metadata
from lscape_cli.storage.records import Evaluated, environment, make_record

CONNECT_SCHEMA = "lscape.connect/1"


class ConnectResults(TypedDict, total=False):
    """``results`` of a ``lscape.connect/1`` record (details in docs/formats.md)."""

    ends: dict[str, Any]  # a, b: loss/accuracy/error of each end on train and test
    linear: dict[str, Any]  # path, formula, buffers, alpha, train/test curves, barriers, distance
    end_check: dict[str, Any]  # the path's ends against the checkpoints' own evaluation
    aligned: dict[str, Any]  # --align weights: the path to the permuted B, with the alignment's facts
    curve: dict[str, Any]  # --curve: the trained curve's path and its fit
    plot: dict[str, str]  # format -> file name


def checkpoint_stem(path: Path) -> str:
    """``x.safetensors`` -> ``x``."""
    name = path.name
    return name[: -len(".safetensors")] if name.endswith(".safetensors") else path.stem


def default_output(a: Path, b: Path) -> Path:
    """``A--B.connect.json`` beside A."""
    return a.with_name(f"{checkpoint_stem(a)}--{checkpoint_stem(b)}.connect.json")


def _describe_model(model: dict[str, Any], other: dict[str, Any]) -> str:
    """``mlp(depth=4)``: the name plus the config entries that differ from ``other``'s."""
    cfg, ocfg = model.get("config") or {}, other.get("config") or {}
    keys = (
        sorted(cfg)
        if model.get("name") != other.get("name")
        else sorted(k for k in cfg if cfg[k] != ocfg.get(k))
    )
    return f"{model.get('name')}({', '.join(f'{k}={cfg[k]}' for k in keys)})"


def compatible(a: Path, b: Path, model_config: Path | None, model_def: str | None = None) -> list[str]:
    """Refuse checkpoints of different architectures or datasets (metadata only, no tensors loaded)."""
    if model_config is not None or model_def is not None:  # one description (--model-def) for both files
        read_raw_metadata(a), read_raw_metadata(b)
        return []
    ma, mb = read_metadata(a), read_metadata(b)
    model_a, model_b = dict(ma.get("model") or {}), dict(mb.get("model") or {})
    if model_a != model_b:
        raise LscapeError(
            f"the checkpoints have different architectures: A is {_describe_model(model_a, model_b)}, "
            f"B is {_describe_model(model_b, model_a)}",
            f"{a} vs {b}",
            "connect two checkpoints of the same model",
        )
    da, db = dict(ma.get("dataset") or {}), dict(mb.get("dataset") or {})
    for key in ("name", "normalization", "input_dim"):
        if da.get(key) != db.get(key):
            raise LscapeError(
                f"the checkpoints were trained on different data: A has {key}={da.get(key)!r}, "
                f"B has {key}={db.get(key)!r}",
                f"{a} vs {b}",
                "connect two checkpoints trained on the same dataset",
            )
    warnings = [
        f"A and B differ in dataset {key} ({da.get(key)!r} vs {db.get(key)!r}); "
        "both are evaluated on A's split"
        for key in ("split_seed", "train_size", "val_size", "test_size", "num_samples")
        if da.get(key) != db.get(key)
    ]
    la, lb = (dict(m.get("training") or {}).get("loss") for m in (ma, mb))
    if la != lb:
        warnings.append(f"A was trained with loss {la!r} and B with {lb!r}; the path uses A's (or --loss)")
    return warnings


def connect_record(
    a: Path,
    b: Path,
    out_path: Path,
    command: list[str],
    setup: Evaluated,  # checkpoint A opened for evaluation
    req: ConnectRequest,
    results: dict[str, Any],
    warnings: list[str],
) -> dict[str, Any]:
    """The ``lscape.connect/1`` record (``timing_s`` left for the caller to fill)."""
    protocol = {k: v for k, v in setup.protocol.items() if k not in ("split", "num_samples")}
    evaluation = {
        **protocol,
        "splits": ["train", "test"],
        "num_samples": {s: int(setup.splits.y[s].shape[0]) for s in ("train", "test")},
        "bn_statistics_split": "train",
    }
    config = {
        "request": req.to_dict(),
        "evaluation": evaluation,
        "device": str(setup.device),
        "dtype": str(setup.dtype).replace("torch.", ""),
        "seed": req.seed,
        "model": setup.loaded.spec.to_dict(),
    }
    return make_record(
        CONNECT_SCHEMA,
        out_path=out_path,
        command=command,
        inputs={"checkpoint_a": a, "checkpoint_b": b},
        config=config,
        results=results,
        timing_s={},
        warnings=warnings,
        env=environment(str(setup.device)),
    )
