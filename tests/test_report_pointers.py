"""The report's cell pointers against the probe result's types (``core/probe/results.py``).

The curvature table fetches every number by a JSON pointer string. Here the report runs over probe
records that hold every measurement (whole split and per batch), every pointer it asks for is recorded,
and each must name a key of :class:`~lscape_cli.core.probe.results.ProbeResults` (walking the
TypedDicts' annotations): a key renamed in the types, or a pointer misspelt in the report, fails here.
The records themselves are walked too: every key they hold is declared in the types.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import Result

from lscape_cli.core.probe.results import ProbeResults
from lscape_cli.core.training.engine import TrainConfig, TrainConfigDict
from lscape_cli.report import cells, curvature
from lscape_cli.storage.connect_record import ConnectRecord
from lscape_cli.storage.probe_record import ProbeRecord
from lscape_cli.storage.slice_record import SliceRecord
from lscape_cli.storage.train_record import TrainRecord

PROBES = (
    (
        "--lambda-max",
        "--top-k",
        "2",
        "--lambda-min",
        "--trace",
        "--frobenius",
        "--matvecs",
        "9",
        "--density",
        "--density-runs",
        "2",
        "--density-steps",
        "8",
        "--grad-norm",
        "--sharpness",
        "0.05",
        "--directions",
        "2",
        "--ascent-steps",
        "2",
        "--noise",
        "1e-2",
        "--noise-samples",
        "2",
        "--pac-bayes",
        "--stability",
        "--out",
        "all.probe.json",
    ),
    (
        "--lambda-max",
        "--trace",
        "--matvecs",
        "9",
        "--pac-bayes",
        "--stability",
        "--num-batches",
        "2",
        "--sharpness",
        "0.05",
        "--directions",
        "2",
        "--out",
        "batches.probe.json",
    ),
    ("--lambda-max", "--eig-method", "power", "--max-iter", "20", "--out", "power.probe.json"),
)


def _members(tp: Any) -> list[Any]:
    """The alternatives of a union (``X | None`` included), else ``[tp]``."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return [a for a in typing.get_args(tp) if a is not type(None)]
    return [tp]


def resolves(tp: Any, parts: list[str]) -> bool:
    """Whether pointer ``parts`` names a member of type ``tp`` (TypedDict keys, list items, dict values)."""
    if not parts:
        return True
    head, rest = parts[0], parts[1:]
    for member in _members(tp):
        origin, args = typing.get_origin(member), typing.get_args(member)
        if typing.is_typeddict(member):
            hints = typing.get_type_hints(member)
            inner = hints.get(head)
        elif origin is list and head.isdigit():
            inner = args[0]
        elif origin is dict:
            inner = args[1]
        else:
            continue
        if inner is not None and resolves(inner, rest):
            return True
    return False


def undeclared(tp: Any, value: Any, where: str = "results") -> list[str]:
    """The paths of ``value``'s keys that type ``tp`` does not declare (every union member tried)."""
    if tp in (object, Any):
        return []  # free-form by declaration
    if isinstance(value, dict):
        best: list[str] | None = None
        for member in _members(tp):
            if typing.is_typeddict(member):
                hints = typing.get_type_hints(member)
                found = [f"{where}.{k}" for k in value if k not in hints]
                found += [
                    p for k, v in value.items() if k in hints for p in undeclared(hints[k], v, f"{where}.{k}")
                ]
            elif typing.get_origin(member) is dict:
                vt = typing.get_args(member)[1]
                found = [p for k, v in value.items() for p in undeclared(vt, v, f"{where}.{k}")]
            else:
                continue
            if best is None or len(found) < len(best):
                best = found
        return [f"{where} (not an object in the type)"] if best is None else best
    if isinstance(value, list):
        for member in _members(tp):
            if typing.get_origin(member) is list:
                item = typing.get_args(member)[0]
                return [p for i, v in enumerate(value) for p in undeclared(item, v, f"{where}[{i}]")]
    return []


def test_walker_refuses_a_renamed_key() -> None:
    assert resolves(ProbeResults, ["lambda_max", "error_bound"])
    assert resolves(ProbeResults, ["batches", "per_batch", "0", "sharpness", "0", "random", "s_max"])
    assert resolves(ProbeResults, ["batches", "summary", "lambda_max", "mean"])
    assert not resolves(ProbeResults, ["lambda_max", "error_bounds"])  # top_k's spelling, not lambda_max's
    assert not resolves(ProbeResults, ["pac_bayes", "isotropic", "sigmas"])
    assert undeclared(ProbeResults, {"trace": {"estimate": 1.0, "stderror": 0.1}}) == [
        "results.trace.stderror"
    ]


@pytest.fixture(scope="module")
def probed(tmp_path_factory: pytest.TempPathFactory, cli: Callable[..., Result], tiny_args: Any) -> Path:
    root = tmp_path_factory.mktemp("pointers")
    assert cli(*tiny_args(root / "run", "--restarts", 2)).exit_code == 0
    a, b = root / "run/model-r000.safetensors", root / "run/model-r001.safetensors"
    for args in PROBES:
        *opts, _, name = args
        r = cli("probe", a, *opts, "--out", root / "run" / name, "--quiet")
        assert r.exit_code == 0, r.output
    others = [
        ("slice", a, "--dims", "1", "--count", "2", "--steps", "5", "--no-plot", "--out", root / "s1.json"),
        ("slice", a, "--eigen", "--dims", "2", "--steps", "5", "--no-plot", "--out", root / "s2.json"),
        ("slice", a, "--toward", b, "--steps", "5", "--no-plot", "--out", root / "s3.json"),
        ("connect", a, b, "--points", "4", "--align", "weights", "--curve", "bezier", "--curve-epochs", "1"),
    ]
    for args in others:
        r = cli(*args, "--quiet")
        assert r.exit_code == 0, r.output
    return root


def test_train_config_dict_lists_every_field() -> None:
    hints = typing.get_type_hints(TrainConfigDict)
    assert list(hints) == [f.name for f in dataclasses.fields(TrainConfig)]  # to_dict casts asdict()


def test_other_records_declare_every_key(probed: Path) -> None:
    kinds = {
        "lscape.slice/1": SliceRecord,
        "lscape.connect/1": ConnectRecord,
        "lscape.train/1": TrainRecord,
    }
    run = probed / "run"
    paths = [*probed.glob("s*.json"), *run.glob("*.connect.json"), *run.glob("*.train.json")]
    assert len(paths) == 6
    for path in paths:
        record = json.loads(path.read_text())
        assert undeclared(kinds[record["schema"]], record, "") == [], path.name


def test_records_declare_every_key(probed: Path) -> None:
    for path in sorted((probed / "run").glob("*.probe.json")):
        record = json.loads(path.read_text())
        assert undeclared(ProbeResults, record["results"]) == [], path.name
        assert [p for p in undeclared(ProbeRecord, record, "") if not p.startswith(".config.request")] == []


def test_every_report_pointer_names_a_typed_key(
    probed: Path, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: set[tuple[str, str]] = set()  # (what the pointer starts from, pointer)
    real = cells.get

    def recording(data: Any, pointer: str) -> Any:
        schema = str(data.get("schema")) if isinstance(data, dict) else ""
        if schema.startswith("lscape.probe/"):
            asked.add(("record", pointer))
        elif not schema.startswith("lscape."):  # inside a probe record's results (a batch, an entry)
            asked.add(("results", pointer))
        return real(data, pointer)

    monkeypatch.setattr(cells, "get", recording)
    monkeypatch.setattr(curvature, "get", recording)
    r = cli("report", probed / "run", "--out", probed / "report/report.html", "--quiet")
    assert r.exit_code == 0, r.output
    assert len(asked) > 40, sorted(asked)  # the table really read the records through the pointers
    assert {p for start, p in asked if start == "results"}, "no pointer into results was checked"
    bad = [
        pointer
        for start, pointer in sorted(asked)
        if not resolves(
            ProbeRecord if start == "record" else ProbeResults, [p for p in pointer.split("/") if p]
        )
    ]
    assert bad == [], f"pointers naming no key of the probe record's types: {bad}"
