"""The record reader's limits and its JSON Schema check, which must agree with the jsonschema package."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lscape_cli.errors import LscapeError
from lscape_cli.storage.jsonio import check_schema, first_problem, nesting_depth, read_json
from lscape_cli.storage.schemas import load, validate

jsonschema = pytest.importorskip("jsonschema")


def _mutations(record: dict[str, Any]) -> list[tuple[str, Callable[[dict[str, Any]], None]]]:
    """Ways to break (or not) a record: drop, retype or rename keys at several depths."""

    def drop(*path: str) -> Callable[[dict[str, Any]], None]:
        def f(r: dict[str, Any]) -> None:
            node = r
            for p in path[:-1]:
                node = node[p]
            node.pop(path[-1], None)

        return f

    def put(value: Any, *path: str) -> Callable[[dict[str, Any]], None]:
        def f(r: dict[str, Any]) -> None:
            node = r
            for p in path[:-1]:
                node = node.setdefault(p, {})
            node[path[-1]] = value

        return f

    out = [("unchanged", lambda r: None)]
    for key in record:
        out.append((f"drop {key}", drop(key)))
        out.append((f"{key} as string", put("x", key)))
        out.append((f"{key} as null", put(None, key)))
    for section in ("results", "config", "inputs"):
        for key in record.get(section) or {}:
            out.append((f"drop {section}.{key}", drop(section, key)))
            out.append((f"{section}.{key} as list", put([1], section, key)))
            out.append((f"{section}.{key} as -1", put(-1, section, key)))
    out.append(("extra top key", put(1, "surprise")))
    out.append(("schema version", put("lscape.train/2", "schema")))
    return out


@pytest.fixture(scope="module")
def records(cli, tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    out = tmp_path_factory.mktemp("jsonio") / "p.json"
    r = cli(
        "probe", tiny_run / "model.safetensors", "--grad-norm", "--device", "cpu", "--quiet", "--out", out
    )
    assert r.exit_code == 0, r.output
    return {
        "train.schema.json": json.loads((tiny_run / "model.train.json").read_text()),
        "probe.schema.json": json.loads(out.read_text()),
    }


def test_the_checker_agrees_with_jsonschema(records: dict[str, dict[str, Any]]) -> None:
    checked = 0
    for schema, record in records.items():
        for name, mutate in _mutations(record):
            broken = copy.deepcopy(record)
            mutate(broken)
            try:
                validate(broken, schema)
                valid = True
            except jsonschema.ValidationError:
                valid = False
            ours = first_problem(broken, load(schema), "")
            assert (ours is None) == valid, f"{schema} / {name}: ours {ours}, jsonschema valid={valid}"
            checked += 1
    assert checked > 100


def test_a_problem_names_the_file_and_the_key(tmp_path: Path, records: dict[str, dict[str, Any]]) -> None:
    record = copy.deepcopy(records["train.schema.json"])
    record["results"]["final"]["train_loss"] = "low"
    path = tmp_path / "r.json"
    with pytest.raises(LscapeError) as info:
        check_schema(record, "train.schema.json", path)
    assert info.value.line() == (
        "malformed record: results.final.train_loss: expected number or null, got string: "
        f"{path} (pass a record written by this lscape version, or re-run the command that made it)"
    )


def test_limits_come_before_parsing(tmp_path: Path) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 10_000 + "]" * 10_000)
    with pytest.raises(LscapeError, match=r"^record nests 10000 levels deep \(limit 64\)"):
        read_json(deep, "record")
    big = tmp_path / "big.json"
    big.write_text(" " * 2048 + "{}")
    with pytest.raises(LscapeError, match=r"^record is too large"):
        read_json(big, "record", max_bytes=1024)
    assert nesting_depth('{"a": "[[[[", "b": [[1]]}') == 3  # brackets inside strings do not count
    assert read_json(big, "record") == {}
