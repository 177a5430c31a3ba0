"""JSON Schemas of lscape's metric records (one file per record kind, sharing record.schema.json)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent


def load(name: str) -> dict[str, Any]:
    """A schema by file name, e.g. ``"train.schema.json"``."""
    return json.loads((HERE / name).read_text())


def validate(record: dict[str, Any], name: str) -> None:
    """Raise ``jsonschema.ValidationError`` when ``record`` does not match schema ``name``.

    Needs the ``jsonschema`` package (a test dependency, not a runtime one).
    """
    import jsonschema
    from referencing import Registry, Resource

    registry = Registry().with_resources(
        (p.name, Resource.from_contents(json.loads(p.read_text()))) for p in HERE.glob("*.schema.json")
    )
    jsonschema.Draft202012Validator(load(name), registry=registry).validate(record)
