"""Self-describing safetensors checkpoints and trajectory files (format: docs/formats.md).

A checkpoint holds a model's ``state_dict`` (buffers included) and, in the safetensors header
metadata (str -> str), JSON strings under these keys:

- ``lscape_schema``: ``"lscape.checkpoint/1"``.
- ``model``: ``{"name": registry name, "config": {...}}`` -- enough to rebuild the module.
- ``dataset``: the :class:`~lscape_cli.datasets.DatasetSpec` plus shapes, sizes and normalisation stats.
- ``training``: resolved training config, seed, restart index, steps, epochs, stop reason.
- ``metrics``: final train/val/test loss and accuracy (eval mode, whole split; accuracy ``null`` for
  regression data).
- ``versions``: lscape, torch, python versions.

Nothing time-dependent is stored, so the same seed on the same device gives the same bytes.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict, cast

import torch
from safetensors import SafetensorError, safe_open

from lscape_cli.errors import LscapeError
from lscape_cli.storage.files import atomic_path, check_input

CHECKPOINT_SCHEMA = "lscape.checkpoint/1"
TRAJECTORY_SCHEMA = "lscape.trajectory/1"
JSON_KEYS = ("model", "dataset", "training", "metrics", "versions")


class ModelMeta(TypedDict):
    """``model``: a registry name and the options of its config dataclass.

    ``user``/``torchvision`` models carry a :class:`lscape_cli.models.user.UserModelConfig` as ``config``
    (source, kwargs, file, sha256, input_shape, num_classes).
    """

    name: str
    config: dict[str, Any]


class CheckpointMeta(TypedDict, total=False):
    """A checkpoint's (or trajectory's) parsed header metadata; see the module docstring per key."""

    schema: str | None  # "lscape.checkpoint/1"; None for a plain file described by --model-config/--model-def
    model: ModelMeta
    dataset: dict[str, Any]  # DatasetSpec.describe(): name, split seed, sizes, normalisation, shapes
    training: dict[str, Any]  # TrainConfig.to_dict() + seed, restart(s), base_seed, stop_reason, ...
    metrics: dict[str, float | None]  # {split}_loss, {split}_accuracy (None: regression)
    versions: dict[str, str]  # lscape, torch, python
    epochs: list[int]  # trajectory files: the epoch of each snapshot
    steps: list[int]  # trajectory files: the step of each snapshot


@dataclass
class Checkpoint:
    """Tensors and parsed metadata of one checkpoint file."""

    path: Path
    state: dict[str, torch.Tensor]
    meta: CheckpointMeta


_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


def safetensors_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """Serialise to the safetensors layout with every key sorted, so equal inputs give equal bytes.

    (The safetensors library writes its metadata map in a per-process random order.) Layout: u64
    little-endian header length, JSON header padded with spaces to 8 bytes, then the tensors' bytes
    back to back in sorted-name order.
    """
    header: dict[str, object] = {"__metadata__": dict(sorted(metadata.items()))}
    chunks, offset = [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        data = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {
            "dtype": _DTYPES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


def save_checkpoint(
    path: Path, state: dict[str, torch.Tensor], meta: dict[str, object], schema: str = CHECKPOINT_SCHEMA
) -> None:
    """Write tensors and JSON metadata atomically (byte-deterministic)."""
    header = {"format": "pt", "lscape_schema": schema}
    header.update({k: json.dumps(v, sort_keys=True) for k, v in meta.items()})
    with atomic_path(path) as tmp:
        tmp.write_bytes(safetensors_bytes(state, header))


def _open_error(path: Path, exc: Exception) -> LscapeError:
    size = path.stat().st_size
    text = str(exc)
    if "MetadataIncompleteBuffer" in text or "incomplete" in text.lower():
        return LscapeError(
            "truncated safetensors file", str(path), "the file is incomplete; re-create or re-copy it"
        )
    return LscapeError(
        "not a safetensors file",
        f"{path} ({size} bytes)",
        "pass a .safetensors checkpoint written by `lscape train` or safetensors.save_file",
    )


def _check_complete(path: Path) -> None:
    """Safetensors opens a file whose tensor bytes are cut short; check the sizes ourselves."""
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise LscapeError(
                "not a safetensors file", f"{path} ({len(head)} bytes)", "pass a .safetensors checkpoint"
            )
        (n,) = struct.unpack("<Q", head)
        try:
            header = json.loads(fh.read(n))
        except (ValueError, UnicodeDecodeError, MemoryError, OverflowError) as exc:
            raise _open_error(path, exc) from exc
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
    if 8 + n + max(ends, default=0) > path.stat().st_size:
        raise LscapeError(
            "truncated safetensors file", str(path), "the file is incomplete; re-create or re-copy it"
        )


def _sniff(path: Path) -> None:
    """Tell a safetensors file cut inside its header from a file that never was one."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(9)
    if len(head) == 9 and head[8:9] == b"{":
        (n,) = struct.unpack("<Q", head[:8])
        if n <= 100_000_000 and 8 + n > size:  # a plausible header length that runs past the end
            raise LscapeError(
                "truncated safetensors file", str(path), "the file is incomplete; re-create or re-copy it"
            )


def read_raw_metadata(path: Path) -> dict[str, str]:
    """The header's str -> str metadata, without loading any tensor."""
    check_input(path, "checkpoint")
    _sniff(path)
    try:
        with safe_open(str(path), framework="pt") as fh:
            return dict(fh.metadata() or {})
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise _open_error(path, exc) from exc


def read_metadata(path: Path, expect: str = CHECKPOINT_SCHEMA) -> dict[str, Any]:
    """Parsed lscape metadata (no tensors loaded); error if the file carries none or another schema."""
    raw = read_raw_metadata(path)
    schema = raw.get("lscape_schema")
    if schema is None:
        raise LscapeError(
            "safetensors file has no lscape metadata",
            str(path),
            "describe the model with --model-config spec.json (see docs/formats.md)",
        )
    if schema.split("/")[0] != expect.split("/")[0]:
        raise LscapeError(f"file is a {schema}, not a {expect}", str(path), "pass the right kind of file")
    if schema != expect:
        raise LscapeError(
            f"unsupported schema version {schema} (this lscape reads {expect})",
            str(path),
            "use the lscape version that wrote it",
        )
    meta: dict[str, Any] = {"schema": schema}
    for key, value in raw.items():
        if key in ("format", "lscape_schema"):
            continue
        try:
            meta[key] = json.loads(value)
        except ValueError as exc:
            raise LscapeError(
                f"metadata key {key!r} is not valid JSON", str(path), "re-create the file"
            ) from exc
        if key in OBJECT_KEYS and not isinstance(meta[key], dict):
            raise LscapeError(
                f"malformed metadata: {key!r} must be a JSON object, got {value[:40]}",
                str(path),
                "re-create the file (see docs/formats.md)",
            )
    _check_training(meta.get("training"), path)
    return meta


TRAINING_TYPES = {  # recorded training values later commands use, and the JSON types they must have
    "seed": "integer",
    "lr": "number",
    "momentum": "number",
    "optimizer": "string",
    "init": "string",
    "dtype": "string",
    "loss": "string",
}


def _check_training(training: object, path: Path) -> None:
    """The recorded ``training`` values other commands read (PAC-Bayes prior, stability) have their types."""
    if not isinstance(training, dict):
        return
    for key, kind in TRAINING_TYPES.items():
        value = training.get(key)
        number = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        ok = {
            "integer": isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63,
            "number": number,
            "string": isinstance(value, str),
        }[kind]
        if value is not None and not ok:
            raise LscapeError(
                f"malformed metadata: training.{key} must be {'an' if kind == 'integer' else 'a'} {kind}, "
                f"got {json.dumps(value)[:40]}",
                str(path),
                "re-create the file (see docs/formats.md)",
            )


OBJECT_KEYS = ("model", "dataset", "training", "metrics", "versions", "directions")  # JSON objects


def read_model_config(path: Path) -> dict[str, Any]:
    """A ``--model-config`` JSON file: ``{"model": {...}, "dataset": {...}}`` or just the model part."""
    from lscape_cli.storage.jsonio import read_json

    data = read_json(path, "model config", max_bytes=2**20)
    if not isinstance(data, dict):
        raise LscapeError(
            "model config must be a JSON object", str(path), 'e.g. {"model": {"name": "mlp", ...}}'
        )
    data = data if "model" in data else {"model": data}
    check_model_entry(data, str(path))
    return data


def check_model_entry(meta: dict[str, Any], where: str) -> None:
    """``model`` must be ``{"name": str, "config": {...}}``, ``dataset`` an object; errors name the key."""
    model = meta.get("model")
    problems = []
    if not isinstance(model, dict):
        problems.append(("model", "an object", model))
    else:
        if not isinstance(model.get("name"), str):
            problems.append(("model.name", "a string", model.get("name")))
        if not isinstance(model.get("config", {}), dict):
            problems.append(("model.config", "an object", model.get("config")))
    if "dataset" in meta and not isinstance(meta["dataset"], dict):
        problems.append(("dataset", "an object", meta["dataset"]))
    if problems:
        key, want, got = problems[0]
        raise LscapeError(
            f"malformed model description: {key} must be {want}, got {json.dumps(got)[:40]}",
            where,
            'describe the model as {"model": {"name": "mlp", "config": {...}}} (see docs/formats.md)',
        )


def load_checkpoint(path: Path, model_config: Path | None = None) -> Checkpoint:
    """Tensors plus metadata; ``model_config`` describes a plain safetensors file from elsewhere."""
    if model_config is not None:
        read_raw_metadata(path)
        meta: dict[str, Any] = {"schema": None, **read_model_config(model_config)}
    else:
        meta = read_metadata(path)
    _check_complete(path)
    try:
        with safe_open(str(path), framework="pt") as fh:
            state = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (safe_open is not a dict)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise _open_error(path, exc) from exc
    return Checkpoint(path=path, state=state, meta=cast(CheckpointMeta, meta))


def save_trajectory(path: Path, snapshots: dict[str, torch.Tensor], meta: dict[str, object]) -> None:
    """Parameter snapshots of one run: tensors ``(T, *param_shape)``; ``meta['steps']`` lists the T steps."""
    save_checkpoint(path, snapshots, meta, schema=TRAJECTORY_SCHEMA)


def load_trajectory(path: Path) -> Checkpoint:
    """Inverse of :func:`save_trajectory`."""
    meta = read_metadata(path, expect=TRAJECTORY_SCHEMA)
    _check_complete(path)
    with safe_open(str(path), framework="pt") as fh:
        state = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
    return Checkpoint(path=path, state=state, meta=cast(CheckpointMeta, meta))


def load_any(path: Path) -> Checkpoint:
    """A checkpoint with lscape metadata, or a plain safetensors file (metadata ``{"schema": None}``)."""
    raw = read_raw_metadata(path)
    if "lscape_schema" in raw:
        return load_checkpoint(path)
    _check_complete(path)
    try:
        with safe_open(str(path), framework="pt") as fh:
            state = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise _open_error(path, exc) from exc
    return Checkpoint(path=path, state=state, meta={"schema": None})
