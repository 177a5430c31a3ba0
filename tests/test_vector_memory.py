"""Memory of the Lanczos vectors and of the kept gradient graphs, as the probe record states it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from typer.testing import Result

from lscape_cli.core.linalg import spectrum
from lscape_cli.core.linalg.hvp import DenseOperator


def _operator(n: int) -> DenseOperator:
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen, dtype=torch.float64)
    return DenseOperator((a + a.T) / 2, {"w": torch.zeros(n, dtype=torch.float64)})


def test_kept_vectors_grow_linearly_and_are_stated() -> None:
    n = 300
    runs = [spectrum.lanczos(_operator(n), tol=1e-14, max_iter=steps) for steps in (8, 16, 32)]
    for res, steps in zip(runs, (8, 16, 32), strict=True):
        mem = res.vector_memory
        assert mem is not None and res.iterations == steps
        assert (mem["vectors"], mem["dtype"], mem["device"]) == (steps, "float64", "cpu")
        assert mem["bytes"] == steps * n * 8  # blocks of 8 rows: no unused row at these step counts
    assert spectrum.lanczos(_operator(n), tol=1e-14, max_iter=9).vector_memory["bytes"] == 16 * n * 8  # type: ignore[index]


def test_probe_record_states_graph_and_vector_memory(
    tiny_run: Path, cli: Callable[..., Result], tmp_path: Path
) -> None:
    out = tmp_path / "p.json"
    result = cli("probe", str(tiny_run / "model.safetensors"), "--lambda-max", "--out", str(out))
    assert result.exit_code == 0, result.output
    results = json.loads(out.read_text())["results"]
    hvp, lam = results["hvp"], results["lambda_max"]
    kept = hvp["retain_chunks"] * hvp["chunk_size"] * hvp["graph_bytes_per_sample"]
    assert hvp["retained_graph_bytes"] == kept > 0
    mem = lam["vector_memory"]
    n = json.loads((tiny_run / "model.train.json").read_text())["results"]["num_parameters"]
    assert (mem["vectors"], mem["dtype"], mem["device"]) == (lam["iterations"], "float32", "cpu")
    assert mem["bytes"] == -(-mem["vectors"] // 8) * 8 * n * 4  # blocks of 8 rows in the parameters' float32
