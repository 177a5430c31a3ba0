"""The ``lscape.connect/1`` record and the checks on its two inputs (schema: ``schemas/connect.schema.json``).

``config``: ``request`` (:class:`~lscape_cli.core.connectivity.paths.ConnectRequest`), ``evaluation`` (the
protocol on the train and test splits, BatchNorm statistics from train), ``device``, ``dtype``, ``seed``,
``model``. ``results``: see :func:`lscape_cli.core.connectivity.paths.run_connect` (plus ``plot``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TypedDict, cast

from lscape_cli.core.connectivity.paths import ConnectRequest, ConnectResults
from lscape_cli.errors import LscapeError
from lscape_cli.storage.checkpoint import read_metadata, read_raw_metadata
from lscape_cli.storage.records import Envelope, Evaluated, environment, make_record

CONNECT_SCHEMA = "lscape.connect/1"


class ConnectConfig(TypedDict):
    """``config`` of a ``lscape.connect/1`` record."""

    request: dict[str, object]  # ConnectRequest.to_dict(): every field of the request
    evaluation: dict[str, object]  # the protocol less split and num_samples, plus the splits and their sizes
    device: str
    dtype: str
    seed: int
    model: dict[str, object]  # ModelSpec.to_dict()


class ConnectRecord(Envelope):
    """A ``lscape.connect/1`` record."""

    config: ConnectConfig
    results: ConnectResults


def checkpoint_stem(path: Path) -> str:
    """``x.safetensors`` -> ``x``."""
    name = path.name
    return name[: -len(".safetensors")] if name.endswith(".safetensors") else path.stem


def default_output(a: Path, b: Path) -> Path:
    """``A--B.connect.json`` beside A."""
    return a.with_name(f"{checkpoint_stem(a)}--{checkpoint_stem(b)}.connect.json")


def _describe_model(model: dict[str, object], other: dict[str, object]) -> str:
    """``mlp(depth=4)``: the name plus the config entries that differ from ``other``'s."""
    cfg, ocfg = _config(model), _config(other)
    keys = (
        sorted(cfg)
        if model.get("name") != other.get("name")
        else sorted(k for k in cfg if cfg[k] != ocfg.get(k))
    )
    return f"{model.get('name')}({', '.join(f'{k}={cfg[k]}' for k in keys)})"


def _config(model: dict[str, object]) -> dict[str, object]:
    cfg = model.get("config")
    return cfg if isinstance(cfg, dict) else {}


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
    results: ConnectResults,
    warnings: list[str],
) -> ConnectRecord:
    """The ``lscape.connect/1`` record (``timing_s`` left for the caller to fill)."""
    protocol = {k: v for k, v in setup.protocol.items() if k not in ("split", "num_samples")}
    evaluation = {
        **protocol,
        "splits": ["train", "test"],
        "num_samples": {s: int(setup.splits.y[s].shape[0]) for s in ("train", "test")},
        "bn_statistics_split": "train",
    }
    config: ConnectConfig = {
        "request": req.to_dict(),
        "evaluation": evaluation,
        "device": str(setup.device),
        "dtype": str(setup.dtype).replace("torch.", ""),
        "seed": req.seed,
        "model": setup.loaded.spec.to_dict(),
    }
    record = make_record(
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
    return cast(ConnectRecord, record)  # make_record keeps config and results as given
