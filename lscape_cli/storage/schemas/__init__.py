"""JSON Schemas of lscape's metric records (one file per record kind, sharing record.schema.json)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypedDict, cast

HERE = Path(__file__).parent

# A JSON Schema document or sub-schema: the keywords lscape's schemas use (see storage/jsonio.py's validator).
Schema = TypedDict(
    "Schema",
    {
        "$schema": str,
        "$id": str,
        "$ref": str,
        "$defs": dict[str, "Schema"],
        "title": str,
        "description": str,
        "type": str | list[str],
        "const": Any,  # any JSON value the member must equal
        "enum": list[Any],  # the JSON values the member may take
        "pattern": str,
        "minimum": float,
        "exclusiveMinimum": float,
        "required": list[str],
        "properties": dict[str, "Schema"],
        "patternProperties": dict[str, "Schema"],
        "additionalProperties": "bool | Schema",
        "propertyNames": "Schema",
        "minProperties": int,
        "maxProperties": int,
        "items": "Schema",
        "minItems": int,
        "maxItems": int,
        "allOf": list["Schema"],
        "oneOf": list["Schema"],
    },
    total=False,
)


def load(name: str) -> Schema:
    """A schema by file name, e.g. ``"train.schema.json"``."""
    return cast(Schema, json.loads((HERE / name).read_text()))


def validate(record: object, name: str) -> None:
    """Raise ``jsonschema.ValidationError`` when ``record`` does not match schema ``name``.

    Needs the ``jsonschema`` package (a test dependency, not a runtime one).
    """
    import jsonschema
    from referencing import Registry, Resource

    registry = Registry().with_resources(
        (p.name, Resource.from_contents(json.loads(p.read_text()))) for p in HERE.glob("*.schema.json")
    )
    jsonschema.Draft202012Validator(load(name), registry=registry).validate(record)
