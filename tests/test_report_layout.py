"""`lscape report` in headless Chromium at 1280 px: no table of a seed-004-sized study scrolls sideways.

Seed 004's shape with tiny models: five runs named as its ResNets are (the longest run names of the
seed studies), each probed for every column seed 004 shows (λmax, λmin, trace, gradient norm,
ε-sharpness, noise at two σ, PAC-Bayes σ and bound, η·λmax), plus the MLP restarts' connect record.
Skipped where Chromium is not installed (``apt-get install -y chromium``; scripts/report_check.sh).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import Result

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed"),
]
RUNS = ("resnet-skip-batchnorm", "resnet-skip-no-batchnorm", "resnet-no-skip-batchnorm",
        "resnet-no-skip-no-batchnorm")  # fmt: skip
PROBE = ("--lambda-max", "--lambda-min", "--trace", "--grad-norm", "--sharpness", "0.05", "--noise",
         "0.001,0.01", "--noise-samples", "2", "--pac-bayes", "--stability", "--matvecs", "8",
         "--quiet")  # fmt: skip
MEASURE = """<script>window.addEventListener("load", () => {
  const boxes = [...document.querySelectorAll("div.scroll")].map(
    d => [d.querySelector("table").dataset.table, d.scrollWidth, d.clientWidth]);
  const pre = document.createElement("pre"); pre.id = "measured";
  pre.textContent = JSON.stringify({tables: boxes,
    page: [document.documentElement.scrollWidth, document.documentElement.clientWidth]});
  document.body.appendChild(pre);
});</script>"""


def measure(report: Path, scratch: Path, width: int = 1280) -> dict[str, Any]:
    """The scroll and client widths of every table box and of the page, laid out by Chromium."""
    probe = report.with_name("measured.html")  # beside the report: its figures links still resolve
    probe.write_text(report.read_text().replace("</body>", MEASURE + "</body>"))
    profile = scratch / "chromium-profile"
    dom = subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
         "--hide-scrollbars", f"--window-size={width},8000", "--virtual-time-budget=5000", "--dump-dom",
         probe.as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    found = re.search(r'<pre id="measured">([^<]*)</pre>', dom)
    assert found, dom[-2000:]
    return dict(json.loads(found.group(1)))


@pytest.fixture(scope="module")
def seed004_sized(
    tmp_path_factory: pytest.TempPathFactory, cli: Callable[..., Result], tiny_args: Any
) -> Path:
    root = tmp_path_factory.mktemp("layout")
    for seed, name in enumerate(RUNS):
        r = cli(*tiny_args(root / name, "--optimizer", "sgd", "--momentum", "0.9", "--seed", seed + 1))
        assert r.exit_code == 0, r.output
    assert cli(*tiny_args(root / "mlp", "--restarts", 2, "--optimizer", "sgd")).exit_code == 0
    for ckpt in [root / n / "model.safetensors" for n in RUNS] + [root / "mlp/model-r000.safetensors"]:
        r = cli("probe", ckpt, *PROBE)
        assert r.exit_code == 0, r.output
    mlp = root / "mlp"
    r = cli("connect", mlp / "model-r000.safetensors", mlp / "model-r001.safetensors", "--points", "5")
    assert r.exit_code == 0, r.output
    return root


def test_no_table_scrolls_sideways_at_1280_px(
    seed004_sized: Path, tmp_path: Path, cli: Callable[..., Result]
) -> None:
    out = tmp_path / "report.html"
    r = cli("report", seed004_sized, "--compare", "run", "--out", out, "--quiet")
    assert r.exit_code == 0, r.output
    measured = measure(out, tmp_path)
    names = {name for name, _, _ in measured["tables"]}
    assert {"inventory", "settings", "curvature", "connect"} <= names, names
    wide = [(name, scroll, client) for name, scroll, client in measured["tables"] if scroll > client]
    assert not wide, f"tables wider than their box at 1280 px: {wide}"
    assert measured["page"][0] <= measured["page"][1], measured["page"]
