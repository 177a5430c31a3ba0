"""The HVP engine's memory plan and measured strategy choice, and the probe options that expose them.

No test asserts a timing (the machine is shared and noisy): the choice logic gets injected timings.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from lscape_cli import models
from lscape_cli.core.linalg import _hvp_calibration as calibration
from lscape_cli.core.linalg import hvp as H
from lscape_cli.core.linalg import trace
from lscape_cli.core.linalg.hvp import HVP, STRATEGIES, Objective, Timings, choose, flatten, gaussian, plan

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_checkpoints" / "mlp-digits.safetensors"


def _objective(name: str, n: int, dtype: torch.dtype = torch.float32, **options: Any) -> Objective:
    torch.manual_seed(0)
    spec = models.make_spec(name, {"input_shape": (1, 28, 28), "num_classes": 10, **options})
    model = models.build(spec).to(dtype).eval()
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, 28, 28, generator=gen, dtype=dtype)
    y = torch.randint(0, 10, (n,), generator=gen)
    return Objective.from_module(model, x, y, "ce")


def _rechunked(obj: Objective, max_batch: int) -> Objective:
    return dataclasses.replace(obj, max_batch=max_batch)


def _vectors(obj: Objective, count: int) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(1)
    return [gaussian(obj.params, gen) for _ in range(count)]


# --- memory plan -------------------------------------------------------------------------------------------


def test_plan_caps_a_conv_chunk_on_cpu_and_keeps_a_small_mlp_whole() -> None:
    cnn = plan(_objective("cnn", 4000, width=16, hidden=32))
    assert cnn.largest_tensor_bytes_per_sample == 16 * 28 * 28 * 4  # the first conv's float32 output
    assert cnn.graph_bytes_per_sample > 2 * cnn.largest_tensor_bytes_per_sample
    assert cnn.limited_by == "cpu_chunk" and cnn.num_chunks > 1
    assert 100 <= cnn.chunk_size <= 250 and cnn.chunk_size * cnn.graph_bytes_per_sample <= 32 << 20
    assert cnn.num_chunks == -(-4000 // cnn.chunk_size) and cnn.retain_chunks == cnn.num_chunks
    mlp = plan(_objective("mlp", 4000, depth=4, width=48))
    assert mlp.largest_tensor_bytes_per_sample == 48 * 4  # a hidden activation; the input is not new memory
    assert (mlp.chunk_size, mlp.num_chunks, mlp.retain_chunks, mlp.limited_by) == (4000, 1, 1, "split")
    assert mlp.memory_budget_mib == H.DEFAULT_MEMORY_BUDGET_MIB
    capped = plan(_rechunked(_objective("mlp", 4000, depth=4, width=48), 1500))  # max_batch still bounds
    assert (capped.chunk_size, capped.num_chunks, capped.limited_by) == (1334, 3, "max_batch")  # balanced


def test_plan_keeps_a_large_models_chunk_whole_on_cpu() -> None:
    """A chunk's parameter-sized work outweighs re-faulted activations: 8x the parameters' bytes may chunk."""
    wide = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 28 * 28, 1000))
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(1500, 1, 28, 28, generator=gen), torch.randint(0, 1000, (1500,), generator=gen)
    big = plan(Objective.from_module(wide.eval(), x, y, "ce"))
    param_bytes = 4 * sum(p.numel() for p in wide.parameters())  # 25 MB: 8x is 201 MB
    assert big.graph_bytes_per_sample * 1500 > 32 << 20  # the 32 MiB cap alone would split the split
    assert big.graph_bytes_per_sample * 1500 <= 8 * param_bytes
    assert (big.chunk_size, big.num_chunks, big.limited_by) == (1500, 1, "split")


def test_a_small_budget_keeps_fewer_graphs_and_changes_nothing() -> None:
    obj = _rechunked(_objective("mlp", 64, torch.float64, depth=1, width=8), 16)
    per_sample = plan(obj).graph_bytes_per_sample
    budget = 40 * per_sample / 2**20  # room for two chunk graphs of 16: one kept, one being rebuilt
    small = plan(obj, memory_budget_mib=budget)
    assert (small.chunk_size, small.num_chunks, small.retain_chunks) == (16, 4, 1)
    tiny = plan(obj, memory_budget_mib=10 * per_sample / 2**20)  # a chunk's graph must fit: chunks of <= 10
    assert tiny.limited_by == "memory_budget" and tiny.chunk_size <= 10 and tiny.retain_chunks == 0
    assert plan(obj, retain_chunks=0).retain_chunks == 0 and plan(obj, retain_chunks=99).retain_chunks == 4
    vs = _vectors(obj, 2)
    with HVP(small.apply(obj), "double_backward", small.retain_chunks) as op:
        got = op.hvp_many(vs)
        assert op.describe()["retain_chunks"] == 1 and op.describe()["num_chunks"] == 4
    want = HVP(_rechunked(obj, 64), "double_backward").hvp_many(vs)  # one chunk, kept
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(flatten(a), flatten(b), atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="memory_budget_mib must be > 0"):
        plan(obj, memory_budget_mib=0)
    with pytest.raises(ValueError, match="retain_chunks >= 0"):
        plan(obj, retain_chunks=-1)


# --- strategy choice ---------------------------------------------------------------------------------------


def test_choose_takes_the_fastest_per_product() -> None:
    t = Timings({"double_backward": 1.0, "fwd_rev": 5.0, "vmap": 3.0}, build=2.0)
    assert choose(t)[:2] == ("double_backward", "double_backward")
    t = Timings({"double_backward": 4.0, "fwd_rev": 5.0, "vmap": 1.0}, build=2.0)
    assert choose(t)[:2] == ("double_backward", "vmap")  # vmap only serves batches
    t = Timings({"double_backward": 6.0, "fwd_rev": 5.0, "vmap": None}, build=2.0)  # vmap failed
    assert choose(t)[:2] == ("fwd_rev", "fwd_rev")
    # rebuilt chunks cost their build on every product; kept ones once, spread over the products
    t = Timings({"double_backward": 1.0, "fwd_rev": 5.0, "vmap": 9.0}, build=10.0)
    assert choose(t, rebuilt_fraction=0.0)[:2] == ("double_backward", "double_backward")
    single, _, per = choose(t, rebuilt_fraction=1.0)
    assert single == "fwd_rev" and per["double_backward"] == pytest.approx(11.0)
    assert choose(Timings({"double_backward": 1.0, "fwd_rev": 5.0, "vmap": 9.0}, build=100.0))[0] == "fwd_rev"


def test_auto_is_double_backward_on_cpu_without_measuring() -> None:
    op = HVP(_objective("mlp", 16, torch.float64, depth=1, width=8))
    info = op.describe()
    assert (op.strategy, op.batched_strategy, op.calibration) == ("double_backward", "double_backward", None)
    assert info["chosen_by"] == "cpu-default" and info["seconds_per_product"] is None


def test_measure_measures_once_and_records_its_choice() -> None:
    obj = _objective("mlp", 48, torch.float64, depth=1, width=8)
    vs = _vectors(obj, 3)
    op = HVP(obj, "measure")
    assert op.strategy == "measure" and op.calibration is None  # measured on first use, not on creation
    got = op.hvp_many(vs) + [op(vs[0])]
    info = op.describe()
    assert op.strategy in STRATEGIES and op.strategy != "vmap" and op.batched_strategy in STRATEGIES
    assert info["chosen_by"] == "measurement" and info["strategy"] == op.strategy
    assert set(info["seconds_per_product"]) == set(STRATEGIES)
    assert all(s is None or s > 0 for s in info["seconds_per_product"].values())
    assert info["calibration"]["samples"] == 48 and info["graph_build_seconds"] > 0
    want = HVP(obj, "double_backward").hvp_many(vs)
    for a, b in zip(got, [*want, want[0]], strict=True):
        torch.testing.assert_close(flatten(a), flatten(b), atol=1e-12, rtol=0)
    again = HVP(obj, "measure")
    again(vs[0])
    assert again.calibration is not None and again.calibration.cached and again.calibration.seconds == 0
    assert again.strategy == op.strategy
    user = HVP(obj, "fwd_rev").describe()
    assert (
        user["chosen_by"] == "user" and user["seconds_per_product"] is None and user["strategy"] == "fwd_rev"
    )


def test_measure_can_batch_with_vmap_and_keep_single_products_elsewhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = Timings({"double_backward": 2.0, "fwd_rev": 3.0, "vmap": 1.0}, build=0.5)
    monkeypatch.setattr(calibration, "_MEASURED", {})
    monkeypatch.setattr(calibration, "_measure", lambda obj, batch_size: fake)
    obj = _objective("mlp", 32, torch.float64, depth=1, width=8)
    op = HVP(obj, "measure", batch_size=4)
    assert op.batch_size == 4  # asking resolves the measurement: batches go to vmap
    assert (op.strategy, op.batched_strategy) == ("double_backward", "vmap")
    vs = _vectors(obj, 3)
    with op:
        got = op.hvp_many(vs)
        single = op(vs[0])
        assert op.has_graph  # the single product went through double_backward
        estimate = trace.hutchinson(op, 8, seed=0).trace.estimate
    assert not op.has_graph
    want = HVP(obj, "double_backward").hvp_many(vs)
    for a, b in zip([*got, single], [*want, want[0]], strict=True):
        torch.testing.assert_close(flatten(a), flatten(b), atol=1e-12, rtol=0)
    assert estimate == pytest.approx(trace.hutchinson(HVP(obj, "double_backward"), 8, seed=0).trace.estimate)


# --- the probe command ----------------------------------------------------------------------------------


@pytest.fixture()
def ckpt(tmp_path: Path) -> Path:
    dst = tmp_path / "m.safetensors"
    shutil.copy(SAMPLE, dst)
    return dst


def _probe(cli: Any, ckpt: Path, *extra: Any) -> dict[str, Any]:
    out = ckpt.with_name(f"m{len(extra)}.probe.json")
    args = ("--lambda-max", "--trace", "--dtype", "float64", "--quiet", "--device", "cpu", "--out", out)
    result = cli("probe", ckpt, *args, *extra)
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text())


def test_probe_memory_options_end_to_end(cli: Any, ckpt: Path) -> None:
    base = _probe(cli, ckpt, "--hvp", "measure")
    hvp = base["results"]["hvp"]
    assert hvp["chosen_by"] == "measurement" and hvp["strategy"] in STRATEGIES
    assert (hvp["chunk_size"], hvp["num_chunks"], hvp["retain_chunks"]) == (1197, 1, 1)
    assert base["config"]["request"]["memory_budget_mib"] is None
    lam = base["results"]["lambda_max"]["estimate"]
    tr = base["results"]["trace"]["estimate"]

    rec = _probe(cli, ckpt, "--retain-chunks", "0", "--max-batch", "500", "--hvp", "double_backward")
    hvp = rec["results"]["hvp"]
    assert (hvp["chunk_size"], hvp["num_chunks"], hvp["retain_chunks"]) == (399, 3, 0)
    assert (hvp["strategy"], hvp["chosen_by"], hvp["limited_by"]) == ("double_backward", "user", "max_batch")
    assert rec["config"]["request"]["retain_chunks"] == 0
    assert rec["results"]["lambda_max"]["estimate"] == pytest.approx(lam, rel=1e-10)
    assert rec["results"]["trace"]["estimate"] == pytest.approx(tr, rel=1e-10)

    rec = _probe(cli, ckpt, "--memory-budget", "0.05")
    hvp = rec["results"]["hvp"]
    assert hvp["memory_budget_mib"] == 0.05 and hvp["limited_by"] == "memory_budget"
    assert hvp["chunk_size"] * hvp["graph_bytes_per_sample"] <= 0.05 * 2**20
    assert hvp["retain_chunks"] < hvp["num_chunks"]
    assert rec["results"]["lambda_max"]["estimate"] == pytest.approx(lam, rel=1e-10)
    assert rec["results"]["trace"]["estimate"] == pytest.approx(tr, rel=1e-10)


def test_probe_memory_options_refuse_bad_values(cli: Any, ckpt: Path, error_line: Any) -> None:
    r = cli("probe", ckpt, "--memory-budget", "0", "--device", "cpu")
    assert error_line(r, code=2) == (
        "Error: Invalid value for '--memory-budget': must be a finite number > 0, got 0.0"
    )
    r = cli("probe", ckpt, "--memory-budget", "-5", "--device", "cpu")
    assert error_line(r, code=2).endswith("must be a finite number > 0, got -5.0")
    r = cli("probe", ckpt, "--retain-chunks", "-1", "--device", "cpu")
    assert error_line(r, code=2).startswith("Error: Invalid value for '--retain-chunks'")


def test_probe_records_validate_against_the_json_schema(cli: Any, ckpt: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    from lscape_cli.storage.schemas import validate

    rec = _probe(cli, ckpt, "--hvp", "fwd_rev")
    validate(rec, "probe.schema.json")
    result = cli(
        "probe",
        ckpt,
        "--top-k",
        "2",
        "--num-batches",
        "2",
        "--batch-size",
        "100",
        "--quiet",
        "--device",
        "cpu",
    )
    assert result.exit_code == 0, result.output
    batches = json.loads(ckpt.with_name("m.probe.json").read_text())
    validate(batches, "probe.schema.json")
    assert all("hvp" in r for r in batches["results"]["batches"]["per_batch"])
    rec["results"]["hvp"]["strategy"] = "auto"  # never recorded: the strategy actually used is
    with pytest.raises(jsonschema.ValidationError):
        validate(rec, "probe.schema.json")
    del rec["results"]["hvp"]["strategy"]
    with pytest.raises(jsonschema.ValidationError):
        validate(rec, "probe.schema.json")
