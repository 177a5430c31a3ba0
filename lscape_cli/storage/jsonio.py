"""Reading JSON inputs safely: size and nesting limits before parsing, then a JSON Schema check.

:func:`read_json` refuses a file larger than ``max_bytes`` or nested deeper than ``max_depth`` before
``json.loads`` sees it (so no ``RecursionError`` or ``MemoryError`` reaches the user), and
:func:`check_schema` validates a record against ``storage/schemas/`` naming the file and the JSON path
of the first problem (e.g. ``results.final.train_loss: expected number, got string``).

The validator covers the JSON Schema keywords those schemas use (``type``, ``required``,
``properties``, ``patternProperties``, ``additionalProperties``, ``minProperties``,
``maxProperties``, ``items``, ``enum``, ``const``, ``pattern``, ``minimum``,
``exclusiveMinimum``, ``minItems``, ``maxItems``, ``propertyNames``, ``allOf``, ``oneOf``, ``$ref``,
``$defs``) with draft 2020-12 meaning; the tests check it agrees with the ``jsonschema`` package.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from lscape_cli.errors import LscapeError
from lscape_cli.storage.files import check_input
from lscape_cli.storage.schemas import Schema

MAX_BYTES = 64 * 2**20  # records are kilobytes; a slice grid of 501 x 501 points is ~10 MB
MAX_DEPTH = 64  # the deepest record written nests 8 levels
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def nesting_depth(text: str) -> int:
    """Deepest bracket nesting of a JSON text (brackets inside strings do not count)."""
    depth = deepest = 0
    for m in _TOKENS.finditer(text):
        tok = m.group()
        if tok in ("[", "{"):
            depth += 1
            deepest = max(deepest, depth)
        elif tok in ("]", "}"):
            depth -= 1
    return deepest


def read_json(path: Path, what: str, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """Parse a JSON file after checking its size, encoding and nesting; one-line errors naming it."""
    check_input(path, what)
    size = path.stat().st_size
    if size > max_bytes:
        raise LscapeError(
            f"{what} is too large ({size / 2**20:.1f} MiB > {max_bytes / 2**20:.0f} MiB)",
            str(path),
            f"pass a {what} written by lscape",
        )
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LscapeError(
            f"{what} is not UTF-8 text (byte {exc.start})", str(path), "pass a JSON file"
        ) from exc
    depth = nesting_depth(text)
    if depth > max_depth:
        raise LscapeError(
            f"{what} nests {depth} levels deep (limit {max_depth})",
            str(path),
            f"pass a {what} written by lscape",
        )
    try:
        return json.loads(text)
    except ValueError as exc:
        msg = getattr(exc, "msg", str(exc))
        where = f"{path} line {getattr(exc, 'lineno', '?')} column {getattr(exc, 'colno', '?')}"
        raise LscapeError(f"{what} is not valid JSON ({msg})", where, "fix the JSON at that place") from exc


def check_schema(data: Any, schema_file: str, path: Path, what: str = "record") -> None:
    """Refuse ``data`` unless it matches ``storage/schemas/<schema_file>``; names file and key."""
    from lscape_cli.storage.schemas import load

    problem = first_problem(data, load(schema_file), "")
    if problem is not None:
        key, text = problem
        raise LscapeError(
            f"malformed {what}: {key or '(top level)'}: {text}",
            str(path),
            "pass a record written by this lscape version, or re-run the command that made it",
        )


_TYPES: dict[str, type] = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "null": type(None),
}


def _is_type(value: Any, name: str) -> bool:
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, _TYPES[name])


def _kind(value: Any) -> str:
    for name in ("null", "boolean", "integer", "number", "string", "array", "object"):
        if _is_type(value, name):
            return name
    return type(value).__name__


def _join(key: str, part: str | int) -> str:
    return f"{key}[{part}]" if isinstance(part, int) else (f"{key}.{part}" if key else part)


def first_problem(value: Any, schema: Schema, key: str, root: Schema | None = None) -> tuple[str, str] | None:
    """``(json path, what is wrong)`` for the first place ``value`` breaks ``schema``, else None.

    ``root``: the document ``schema`` belongs to (for ``#/$defs/...`` references; default ``schema``).
    """
    root = schema if root is None else root
    if "$ref" in schema:
        sub, sub_root = _resolve(schema["$ref"], root)
        problem = first_problem(value, sub, key, sub_root)
        if problem is not None:
            return problem
    types = schema.get("type")
    if types is not None:
        names = [types] if isinstance(types, str) else list(types)
        if not any(_is_type(value, t) for t in names):
            return key, f"expected {' or '.join(names)}, got {_kind(value)}"
    for check in (_scalar_problem, _object_problem, _array_problem, _combined_problem):
        problem = check(value, schema, key, root)
        if problem is not None:
            return problem
    return None


def _scalar_problem(value: Any, schema: Schema, key: str, root: Schema) -> tuple[str, str] | None:
    if "const" in schema and value != schema["const"]:
        return key, f"expected {json.dumps(schema['const'])}, got {json.dumps(value)[:60]}"
    if "enum" in schema and value not in schema["enum"]:
        return key, f"expected one of {json.dumps(schema['enum'])}, got {json.dumps(value)[:60]}"
    if isinstance(value, str) and "pattern" in schema and not re.search(schema["pattern"], value):
        return key, f"{value[:60]!r} does not match {schema['pattern']}"
    number = _is_type(value, "number")
    if number and "minimum" in schema and value < schema["minimum"]:
        return key, f"must be >= {schema['minimum']}, got {value}"
    if number and "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
        return key, f"must be > {schema['exclusiveMinimum']}, got {value}"
    return None


def _object_problem(value: Any, schema: Schema, key: str, root: Schema) -> tuple[str, str] | None:
    if not isinstance(value, dict):
        return None
    for name in schema.get("required", []):
        if name not in value:
            return _join(key, name), "missing"
    if "maxProperties" in schema and len(value) > schema["maxProperties"]:
        return key, f"allows at most {schema['maxProperties']} keys, got {len(value)}"
    if "minProperties" in schema and len(value) < schema["minProperties"]:
        return key, f"needs at least {schema['minProperties']} keys, got {len(value)}"
    names = schema.get("propertyNames")
    for name, item in value.items():
        if names is not None:
            problem = first_problem(name, names, _join(key, name), root)
            if problem is not None:
                return problem[0], f"key name: {problem[1]}"
        problem = _member_problem(name, item, schema, key, root)
        if problem is not None:
            return problem
    return None


def _member_problem(name: str, item: Any, schema: Schema, key: str, root: Schema) -> tuple[str, str] | None:
    """Check one member against ``properties``, ``patternProperties`` and ``additionalProperties``."""
    props = schema.get("properties", {})
    patterns = [s for p, s in schema.get("patternProperties", {}).items() if re.search(p, name)]
    for sub in ([props[name]] if name in props else []) + patterns:
        problem = first_problem(item, sub, _join(key, name), root)
        if problem is not None:
            return problem
    if name in props or patterns:
        return None
    extra = schema.get("additionalProperties", True)
    if extra is False:
        return _join(key, name), "unexpected key"
    if isinstance(extra, dict):
        return first_problem(item, extra, _join(key, name), root)
    return None


def _array_problem(value: Any, schema: Schema, key: str, root: Schema) -> tuple[str, str] | None:
    if not isinstance(value, list):
        return None
    if "minItems" in schema and len(value) < schema["minItems"]:
        return key, f"needs at least {schema['minItems']} items, got {len(value)}"
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        return key, f"allows at most {schema['maxItems']} items, got {len(value)}"
    if isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            problem = first_problem(item, schema["items"], _join(key, i), root)
            if problem is not None:
                return problem
    return None


def _combined_problem(value: Any, schema: Schema, key: str, root: Schema) -> tuple[str, str] | None:
    for sub in schema.get("allOf", []):
        problem = first_problem(value, sub, key, root)
        if problem is not None:
            return problem
    if "oneOf" in schema:
        fits = [first_problem(value, s, key, root) is None for s in schema["oneOf"]]
        if sum(fits) != 1:
            return key, f"matches {sum(fits)} of the {len(fits)} allowed forms (needs exactly one)"
    return None


def _resolve(ref: str, root: Schema) -> tuple[Schema, Schema]:
    """The sub-schema ``ref`` points at (``other.schema.json`` or ``#/$defs/x``) and its document."""
    from lscape_cli.storage.schemas import load

    doc, _, pointer = ref.partition("#")
    doc_root = load(doc) if doc else root
    node: Any = doc_root
    for part in [p for p in pointer.split("/") if p]:
        node = node[part]
    return node, doc_root
