"""Versioned JSON metric records (one per command run), written atomically.

Every record has these top-level keys (documented in docs/formats.md; JSON Schemas under
``storage/schemas/``):

- ``schema``: ``"lscape.<command>/<version>"``, e.g. ``"lscape.train/1"``.
- ``lscape_version``: version of lscape that wrote it.
- ``created_at``: UTC time of writing, ISO 8601 with microseconds.
- ``command``: the argv that produced it.
- ``inputs``: ``{role: {"path": relative to the JSON file, "sha256": ...}}``.
- ``config``: every resolved option (seed, device, dtype, evaluation protocol ...).
- ``environment``: python/torch versions, platform, device name, threads.
- ``results``: the command's measurements (per-command keys documented in its writer).
- ``timing_s``: wall-clock seconds per phase.
- ``warnings``: list of strings; a non-finite number is written as ``null`` and listed here.

Accuracy is defined for class labels only. A record whose data are regression targets (its config's
dataset says ``"task": "regression"``) writes every accuracy value (keys ``accuracy``, ``*_accuracy``,
``accuracy_*``, and ``error`` = 1 − accuracy) as ``null``, and lists nothing in ``warnings`` for them:
they are undefined, not failed.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypedDict

from lscape_cli import __version__
from lscape_cli.errors import LscapeError
from lscape_cli.storage.files import atomic_path, sha256_file

if TYPE_CHECKING:
    import torch

    from lscape_cli.core.objective import EvalProtocol


class Environment(TypedDict, total=False):
    """A record's ``environment``: facts about the machine that produced it (CUDA keys on a GPU)."""

    python: str
    torch: str
    platform: str
    device: str
    torch_threads: int
    cpu_count: int | None
    cuda_device_name: str
    cuda_version: str | None


class InputEntry(TypedDict):
    """One of a record's ``inputs``: the file's path relative to the record, and its sha256."""

    path: str
    sha256: str


class Envelope(TypedDict):
    """The keys every record shares; each record kind adds its ``config`` and ``results``."""

    schema: str
    lscape_version: str
    created_at: str
    command: list[str]
    inputs: dict[str, InputEntry]
    environment: Environment
    timing_s: dict[str, float]
    warnings: list[str]


class Record(Envelope):
    """A record of any kind, as :func:`make_record` assembles it (each kind's writer narrows it)."""

    config: Mapping[str, object]  # the kind's config TypedDict (ProbeConfig, ...)
    results: Mapping[str, object]  # the kind's results TypedDict (ProbeResults, ...)


def environment(device: str) -> Environment:
    """Facts about the machine that produced a record."""
    import torch

    env: Environment = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(),
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        env["cuda_device_name"] = torch.cuda.get_device_name(torch.device(device))
        env["cuda_version"] = torch.version.cuda
    return env


def input_entry(path: Path, relative_to: Path) -> InputEntry:
    """``{"path": ..., "sha256": ...}`` with the path relative to the record's directory."""
    rel = os.path.relpath(path.resolve(), relative_to.resolve().parent)
    return {"path": rel, "sha256": sha256_file(path)}


# Any JSON value, as json.loads returns it (free-form parts of records and keys read back from disk)
JSONValue = str | int | float | bool | None | list["JSONValue"] | dict[str, "JSONValue"]


class _ModelSpec(Protocol):
    def to_dict(self) -> dict[str, object]: ...


class _Loaded(Protocol):
    @property
    def spec(self) -> _ModelSpec: ...


class _Splits(Protocol):
    @property
    def y(self) -> dict[str, torch.Tensor]: ...


class Evaluated(Protocol):
    """What a record writer reads of a checkpoint opened for evaluation (``models.evaluation.EvalSetup``).

    A protocol, so storage/ needs no import of models/: the protocol, device, dtype, model description,
    split sizes and warnings.
    """

    @property
    def loaded(self) -> _Loaded:
        """The model; its ``spec.to_dict()`` is the record's ``config.model``."""

    @property
    def splits(self) -> _Splits:
        """The data; its ``y`` gives each split's size."""

    @property
    def device(self) -> torch.device:
        """Where it ran."""

    @property
    def dtype(self) -> torch.dtype:
        """The parameters' dtype."""

    @property
    def protocol(self) -> EvalProtocol:
        """The evaluation protocol (``config.evaluation``, docs/formats.md)."""

    @property
    def warnings(self) -> list[str]:
        """Warnings for the record (e.g. a model or data file changed since training)."""


ACCURACY_KEY = re.compile(r"(^|_)accuracy($|_)|^error$")  # accuracy-valued keys (error = 1 − accuracy)


def task_of_config(config: Mapping[str, object]) -> str:
    """The task of a record's data: its config's ``dataset`` (or ``evaluation.dataset``) ``task``."""
    for holder in (config, config.get("evaluation")):
        dataset = holder.get("dataset") if isinstance(holder, dict) else None
        if isinstance(dataset, dict) and dataset.get("task"):
            return str(dataset["task"])
    return "classification"


def undefined_accuracy(obj: Any, under: bool = False) -> Any:
    """``obj`` with every float under an accuracy-valued key replaced by ``None`` (same structure)."""
    if isinstance(obj, dict):
        return {k: undefined_accuracy(v, under or bool(ACCURACY_KEY.search(str(k)))) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [undefined_accuracy(v, under) for v in obj]
    return None if under and isinstance(obj, float) else obj


def make_record(
    schema: str,
    *,
    out_path: Path,
    command: list[str],
    inputs: dict[str, Path],
    config: Mapping[str, object],  # the record kind's config TypedDict
    results: Mapping[str, object],  # the record kind's results TypedDict
    timing_s: dict[str, float],
    warnings: list[str],
    env: Environment,
) -> Record:
    """Assemble a record in the documented key order (accuracy ``null`` for regression data)."""
    if task_of_config(config) == "regression":
        results = undefined_accuracy(results)
    return {
        "schema": schema,
        "lscape_version": __version__,
        # microseconds: commands run within one second still sort in the order they ran (report footer)
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds"),
        "command": command,
        "inputs": {role: input_entry(p, out_path) for role, p in inputs.items()},
        "config": config,
        "environment": env,
        "results": results,
        "timing_s": timing_s,
        "warnings": list(warnings),
    }


def _finite(obj: Any, where: str, warnings: list[str]) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        warnings.append(f"{where}: non-finite value ({obj}) written as null")
        return None
    if isinstance(obj, dict):
        return {k: _finite(v, f"{where}.{k}", warnings) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v, f"{where}[{i}]", warnings) for i, v in enumerate(obj)]
    return obj


def sanitize(record: Mapping[str, object]) -> dict[str, object]:
    """Replace every non-finite float by ``null`` and say so in ``warnings`` (never imputed)."""
    given = record.get("warnings", [])
    warnings = [str(w) for w in given] if isinstance(given, list) else []
    clean = {k: (v if k == "warnings" else _finite(v, k, warnings)) for k, v in record.items()}
    clean["warnings"] = warnings
    return clean


def to_json(record: Mapping[str, object]) -> str:
    """The exact text written to disk (``indent=2``, no NaN)."""
    return json.dumps(sanitize(record), indent=2, allow_nan=False) + "\n"


def write_record(path: Path, record: Mapping[str, object]) -> str:
    """Write atomically (temp file + rename); returns the text written."""
    text = to_json(record)
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return text


def read_record(path: Path, expect: str) -> dict[str, Any]:
    """Load a record, check its schema string and its JSON Schema; errors name the file and key."""
    from lscape_cli.storage.jsonio import check_schema, read_json

    data = read_json(path, "metric record")
    schema = data.get("schema") if isinstance(data, dict) else None
    if not isinstance(schema, str) or schema.split("/")[0] != expect.split("/")[0]:
        raise LscapeError(
            f"expected a {expect} record, found {str(schema)[:60]!r}", str(path), "pass the right file"
        )
    if schema != expect:
        raise LscapeError(
            f"record schema {schema} is not supported (this lscape reads {expect})",
            str(path),
            "re-run the command with this lscape version",
        )
    kind = expect.split("/")[0].split(".")[-1]
    check_schema(data, f"{kind}.schema.json", path)
    return dict(data)
