"""Every record kind has a JSON Schema that accepts what lscape writes and refuses a broken record."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest

from lscape_cli.storage.schemas import HERE, validate

KINDS = ("train", "probe", "slice", "connect", "pareto")


def test_every_record_kind_has_a_schema_naming_its_schema_string() -> None:
    for kind in KINDS:
        schema = json.loads((HERE / f"{kind}.schema.json").read_text())
        assert schema["properties"]["schema"] == {"const": f"lscape.{kind}/1"}
        assert {"$ref": "record.schema.json"} in schema["allOf"]


@pytest.fixture(scope="module")
def slice_record(cli, tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("records") / "s.json"
    r = cli(
        "slice",
        tiny_run / "model.safetensors",
        "--dims",
        "1",
        "--steps",
        "5",
        "--no-plot",
        "--quiet",
        "--out",
        out,
    )
    assert r.exit_code == 0, r.output
    return json.loads(out.read_text())


@pytest.mark.parametrize(
    "break_it",
    [
        lambda r: r["results"].pop("grid"),
        lambda r: r["results"].pop("sharpness_1d"),  # a 1-D slice without its sharpness
        lambda r: r["config"]["slice"].update(dims=3),
        lambda r: r["results"]["grid"]["loss"][0].__setitem__(0, "NaN"),  # non-finite must be null
        lambda r: r.update(schema="lscape.probe/1"),
        lambda r: r["inputs"].update(extra={"path": "x", "sha256": "0" * 64}),
    ],
)
def test_the_slice_schema_refuses_a_broken_record(slice_record: dict, break_it) -> None:
    validate(slice_record, "slice.schema.json")
    bad = copy.deepcopy(slice_record)
    break_it(bad)
    with pytest.raises(jsonschema.ValidationError):
        validate(bad, "slice.schema.json")
