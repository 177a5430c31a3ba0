"""Time `lscape report` over seed 000's study size: 10 depths x 25 restarts, train + probe records.

Training and probing 250 models on this shared 2-core machine would take far longer than the report,
so the 250-run record set is built from real records: one sample checkpoint's train record
(sample_checkpoints/mlp-d4-r000) and a probe record made here by `lscape probe` (lambda_max, top-3,
trace, Frobenius norm, gradient norm, sharpness). Each replica gets its own checkpoint file (the same
tensors, re-saved with its depth and restart in the header, so every sha256 differs), and its numbers
(final metrics, history, estimates) scaled by a seeded factor in [0.8, 1.2], so groups and figures
have spread. What is timed is the real code path: the `lscape report` command in a fresh process
(interpreter start-up and imports included), with --group-by and --compare, writing HTML, Markdown,
CSV/LaTeX tables and figures.

Usage:  python benchmarks/bench_report.py [--repeats 3] [--write docs/bench-report.md]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _machine import cpu_name  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_checkpoints" / "mlp-d4-r000"
DEPTHS, RESTARTS = 10, 25
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def lscape(*args: str) -> None:
    """Run the lscape CLI of this checkout in a fresh process."""
    cmd = [sys.executable, "-m", "lscape_cli", *args]
    subprocess.run(cmd, check=True, env={**ENV, "PYTHONPATH": str(ROOT)}, cwd=ROOT)


def real_records(work: Path) -> tuple[dict[str, Any], dict[str, Any], Path]:
    """The sample's train record and a fresh probe record of its checkpoint."""
    ckpt = work / "seed.safetensors"
    ckpt.write_bytes(SAMPLE.with_suffix(".safetensors").read_bytes())
    probe = ("--top-k", "3", "--trace", "--frobenius", "--grad-norm", "--sharpness", "0.05", "--quiet")
    lscape("probe", str(ckpt), *probe, "--out", str(work / "seed.probe.json"))
    train = json.loads(SAMPLE.with_suffix(".train.json").read_text())
    return train, json.loads((work / "seed.probe.json").read_text()), ckpt


def scale(obj: Any, factor: float, keys: tuple[str, ...]) -> Any:
    """Multiply every float under one of ``keys`` by ``factor`` (recursively)."""
    if isinstance(obj, dict):
        return {
            k: (v * factor if k in keys and isinstance(v, float) else scale(v, factor, keys))
            for k, v in obj.items()
        }
    if isinstance(obj, list):
        return [scale(v, factor, keys) for v in obj]
    return obj


def replicate(work: Path, train: dict[str, Any], probe: dict[str, Any], ckpt: Path) -> None:
    """250 runs: per depth a folder, per restart a checkpoint, its train record and its probe record."""
    from safetensors.numpy import load_file, save_file

    from lscape_cli.storage.files import sha256_file

    tensors = load_file(str(ckpt))
    with open(ckpt, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        meta = json.loads(fh.read(n))["__metadata__"]
    rng = random.Random(0)
    for d in range(1, DEPTHS + 1):
        folder = work / "study" / f"d{d}"
        folder.mkdir(parents=True)
        for r in range(RESTARTS):
            name = f"model-r{r:03d}"
            model = json.loads(meta["model"])
            model["config"]["depth"] = d
            training = {**json.loads(meta["training"]), "seed": r, "restart": r}
            path = folder / f"{name}.safetensors"
            save_file(
                tensors, str(path), {**meta, "model": json.dumps(model), "training": json.dumps(training)}
            )
            entry = {"path": path.name, "sha256": sha256_file(path)}
            f = rng.uniform(0.8, 1.2)
            t = scale(copy.deepcopy(train), f, ("train_loss", "val_loss", "test_loss", "train_loss_running"))
            t = scale(t, rng.uniform(0.97, 1.0), ("test_accuracy", "val_accuracy"))
            t["config"]["model"] = model
            t["config"]["seed"] = r
            t["results"]["checkpoint"] = entry
            (folder / f"{name}.train.json").write_text(json.dumps(t, indent=2))
            p = scale(copy.deepcopy(probe), rng.uniform(0.8, 1.2), ("estimate", "eigenvalues", "s_max"))
            p["inputs"]["checkpoint"] = entry
            (folder / f"{name}.probe.json").write_text(json.dumps(p, indent=2))


def _child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--write", type=Path, default=None, help="also write the Markdown result here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        replicate(work, *real_records(work))
        out = work / "report.html"
        cmd = ["report", str(work / "study"), "--group-by", "model.depth", "--compare", "model.depth"]
        times, cpu = [], []
        for _ in range(args.repeats):
            c0 = _child_cpu()
            t0 = time.perf_counter()
            lscape(*cmd, "--out", str(out), "--quiet")
            times.append(time.perf_counter() - t0)
            cpu.append(_child_cpu() - c0)
        size = out.stat().st_size / 1e6
        tables = len(list(work.glob("report-tables/*")))
    load = os.getloadavg()[0]
    text = (
        "| runs | records | wall median (s) | wall min (s) | wall max (s) | CPU median (s) | report.html |\n"
        "|---|---|---|---|---|---|---|\n"
        f"| {DEPTHS * RESTARTS} | {2 * DEPTHS * RESTARTS} | {statistics.median(times):.2f} "
        f"| {min(times):.2f} "
        f"| {max(times):.2f} | {statistics.median(cpu):.2f} | {size:.1f} MB |\n\n"
        f"Machine: {cpu_name()}, {os.cpu_count()} logical CPUs, Python {sys.version.split()[0]}, "
        f"OMP_NUM_THREADS=1; {args.repeats} runs of `lscape report` in a fresh process each (start-up and "
        f"imports included); {tables} table files written per run. Load average at the end: {load:.1f} "
        f"(the machine is shared with other jobs, so wall times are noisy; CPU is user + system time of the "
        f"report process). Target: under 10 s.\n"
    )
    print(text)
    if args.write:
        header = (
            "# Benchmark: `lscape report` over 250 runs\n\n"
            "Produced by `python benchmarks/bench_report.py --write docs/bench-report.md`. "
            "The 250 runs (seed "
            "000's 10 depths x 25 restarts, each with a train and a probe record) are replicas of one real "
            "train record and one real probe record with their numbers scaled by seeded factors, each with "
            "its own checkpoint file (see the script's docstring); the timing is of the real command.\n\n"
        )
        args.write.write_text(header + text)


if __name__ == "__main__":
    main()
