"""Before/after check of a refactor: the README's commands and the demo's steps at small scale, run on two
versions of lscape, with every record and tensor file compared.

Usage::

    python scripts/compare_outputs.py --old a72e682            # a git revision (extracted with git archive)
    python scripts/compare_outputs.py --old /path/to/old/tree --new .   # or two source trees

Each version runs the same scenario (``SCENARIO`` below: train with a trajectory, info, probe in every
README form and over a trajectory, slice of every direction kind, connect with alignment and a curve, a
depth sweep and pareto, train with ``--track``, a user model and a user loss through train, info, probe,
slice and connect, and a report of it all) in its own process, with ``PYTHONPATH`` pointing at its tree,
after writing every command's ``--help`` text to ``help/``. Both run in the same directory, one after
the other (a user model's checkpoint records its file's absolute path, so the checkpoints' bytes and
hashes depend on it); their outputs are then moved apart and compared:

- every ``*.json`` file as parsed JSON, minus the keys that hold wall-clock times or dates (``IGNORED``);
- every ``*.safetensors`` file tensor by tensor (bit-identical, ``torch.equal``) and header by header;
- the help texts and the report's text files (``*.txt``, ``*.md``, ``*.csv``, ``*.tex``) as sorted lines,
  dates and list numbers masked (the report lists records in the order of their second-resolution
  ``created_at``, so two written in the same second may swap places);
- plots and the HTML page (which embeds the plots) by name only (their bytes carry renderer details).

Exit 0 when everything matches.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

# Key paths whose values are times, dates or host facts that differ between any two runs ("*": any key).
IGNORED = [
    ("created_at",),
    ("timing_s",),
    ("environment",),
    ("results", "speed", "seconds"),
    ("results", "speed", "seconds_per_point"),
    ("results", "speed", "forward_pass_s"),
    ("results", "speed", "seconds_per_point_over_forward_pass"),
    ("results", "per_layer", "seconds"),
    ("results", "per_layer", "blocks", "seconds"),
    ("results", "tracking", "restart_wall_time_s"),
    ("results", "tracking", "share_of_training"),
]
DATE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?([+-]\d\d:\d\d|Z)?")  # a written-at time
LIST_NUMBER = re.compile(r"^\d+\. ", re.M)  # "3. `lscape probe ...`": the report's time-ordered lists
IGNORED_ANYWHERE = {"wall_time_s"}  # train history: seconds since the start, per evaluation

TRAIN = "--model mlp --width 16 --dataset digits --loss mse --optimizer adam --lr 1e-2 --seed 0 --quiet"
A, B = "run/model-r000.safetensors", "run/model-r001.safetensors"
USER = "--model-def my_model.py:build --model-args '{\"width\": 8}' --data my_data.npz"
SCENARIO = [
    # train (README "train", demo step 1) with a trajectory for --pca
    f"train {TRAIN} --depth 2 --epochs 3 --restarts 2 --save-trajectory 1 --out run",
    f"info {A} --json",
    # probe: every README form
    f"probe {A} --quiet",
    f"probe {A} --lambda-max --trace --json --out run/p-json.json",
    f"probe {A} --top-k 3 --num-batches 3 --batch-size 100 --split test --quiet --out run/p-batches.json",
    f"probe {A} --frobenius --matvecs 9 --trace-method hutchinson --quiet --out run/p-hutch.json",
    f"probe {A} --density --density-runs 2 --density-steps 12 --sharpness 0.01,0.05 --ascent-steps 3 "
    "--quiet --out run/p-flat.json",
    f"probe {A} --noise 1e-3,1e-2 --noise-samples 3 --pac-bayes --stability --quiet --out run/p-noise.json",
    f"probe {A} --lambda-max --check 'lambda_max < 1e6' --quiet --out run/p-check.json",
    f"probe {A} --memory-budget 512 --retain-chunks 0 --quiet --out run/p-mem.json",
    # demo step 3
    f"probe {B} --top-k 3 --trace --frobenius --grad-norm --sharpness 0.05 "
    "--check 'lambda_max < 1e6' --quiet",
    # slice: every README form
    f"slice {A} --dims 1 --count 3 --range 1.5 --steps 9 --quiet --out run/model.slice1d.json",
    f"slice {A} --dims 2 --range 1.5 --steps 7 --quiet",
    f"slice {A} --pca run/model-r000.trajectory.safetensors --dims 1 --steps 7 --quiet --out run/pca1.json",
    f"slice {A} --pca run/model-r000.trajectory.safetensors --dims 2 --steps 7 --quiet --out run/pca2.json",
    f"slice {A} --eigen --dims 2 --steps 5 --quiet --out run/eigen.json",
    f"slice {A} --toward {B} --dims 1 --steps 7 --quiet --out run/toward.json",
    f"slice {A} --toward {B} --dims 2 --steps 5 --orthogonalize --norm layer --bias filter --quiet "
    "--out run/toward2.json",
    f"slice {B} --directions run/model-r000.slice.directions.safetensors --steps 5 --quiet "
    "--out run/file.json",
    f"slice {A} --dims 1 --norm unit --steps 6 --no-plot --json --out run/unit.json",
    # connect: README forms (demo step 5)
    f"connect {A} {B} --points 5 --quiet",
    f"connect {A} {B} --points 5 --align weights --curve bezier --curve-epochs 1 --quiet "
    "--out run/ab-curve.json",
    f"connect {A} {B} --points 4 --curve polychain --curve-epochs 1 --curve-optimizer sgd --json "
    "--out run/ab-poly.json",
    # pareto: a small depth sweep (README, demo step 7)
    f"train {TRAIN} --depth 1 --epochs 2 --restarts 2 --out sweep/d1",
    f"train {TRAIN} --depth 2 --epochs 2 --restarts 2 --out sweep/d2",
    "probe sweep/d1/model-r000.safetensors --frobenius --matvecs 9 --quiet",
    "probe sweep/d1/model-r001.safetensors --frobenius --matvecs 9 --quiet",
    "probe sweep/d2/model-r000.safetensors --frobenius --matvecs 9 --quiet",
    "probe sweep/d2/model-r001.safetensors --frobenius --matvecs 9 --quiet",
    "pareto sweep --group-by model.depth --x train_loss --y frobenius --target val_loss --quiet "
    "--out sweep/pareto.json",
    "pareto sweep --metric train_loss:min --metric frobenius:min --metric test_accuracy:max --no-params "
    "--json --out sweep/multi.json",
    # probe over a trajectory (README "over training"), GGN per layer
    "probe run/model-r000.trajectory.safetensors --snapshot all --lambda-max --samples 200 --quiet "
    "--out run/traj.probe.json",
    f"probe {A} --curvature ggn --per-layer --top-k 2 --quiet --out run/p-ggn.json",
    # train --track (README "train")
    f"train {TRAIN} --depth 1 --epochs 2 --track lambda_max,top_k:2,trace,frobenius,grad_norm,sharpness:0.05 "
    "--track-every 1 --track-samples 200 --track-seed 1 --out tracked",
    # a user model, its data and a user loss (README "Your own model and data", "your own loss")
    f"train {USER} --epochs 2 --restarts 2 --seed 0 --quiet --out mine",
    "info mine/model-r000.safetensors --json",
    "probe mine/model-r000.safetensors --model-def my_model.py:build --lambda-max --trace --pac-bayes "
    "--quiet",
    "probe mine/model-r000.safetensors --model-def my_model.py:build --loss-def my_loss.py:mean_ce "
    "--lambda-max --quiet --out mine/p-loss.json",
    "slice mine/model-r000.safetensors --trust-model-def --dims 1 --count 2 --steps 7 --quiet",
    "connect mine/model-r000.safetensors mine/model-r001.safetensors --trust-model-def --align weights "
    "--points 4 --quiet",
    # report of everything above (README "report")
    "report run sweep tracked mine --out report/report.html --quiet",
]
USER_FILES = {  # written into the work directory before the scenario runs
    "my_model.py": "from torch import nn\n\n\ndef build(width: int = 8, num_classes: int = 3) -> nn.Module:\n"
    "    layers = nn.Linear(6, width), nn.LayerNorm(width), nn.GELU(), nn.Linear(width, num_classes)\n"
    "    return nn.Sequential(*layers)\n",
    "my_loss.py": "import torch.nn.functional as F\n\n\ndef mean_ce(outputs, targets):\n"
    "    return F.cross_entropy(outputs, targets)\n",
}
HELP = ["", "train", "info", "probe", "slice", "connect", "pareto", "report"]  # lscape [COMMAND] --help
TEXT_SUFFIXES = {".txt", ".md", ".csv", ".tex"}


def run_scenario(work: Path) -> None:
    """Run every command in this process (one torch import), saving each --json stdout to a file."""
    import shlex

    from typer.testing import CliRunner

    from lscape_cli.cli import app

    runner = CliRunner()
    os.chdir(work)
    Path("sweep").mkdir()
    Path("help").mkdir()
    for command in HELP:
        result = runner.invoke(app, [*([command] if command else []), "--help"])
        Path(f"help/{command or 'lscape'}.txt").write_text(f"exit {result.exit_code}\n{result.output}")
    _user_inputs()
    for i, line in enumerate(SCENARIO):
        argv = shlex.split(line)
        result = runner.invoke(app, argv)
        if result.exit_code != 0:
            raise SystemExit(f"step {i} failed ({result.exit_code}): lscape {line}\n{result.output}")
        if "--json" in argv:
            Path(f"stdout-{i:02d}.json").write_text(result.stdout)
        print(f"ok {i:02d} lscape {line}", flush=True)


def _user_inputs() -> None:
    """The user model, loss and data files of the scenario, in the work directory."""
    import numpy as np

    for name, text in USER_FILES.items():
        Path(name).write_text(text)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((120, 6)).astype(np.float32)
    y = ((x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.5)).astype(np.int64)
    np.savez("my_data.npz", x=x, y=y)


def _strip(obj: Any, root: str, path: tuple[str, ...] = ()) -> Any:
    """``obj`` less the ignored keys, with the run's own directory in paths written as ``<work>``."""
    if isinstance(obj, dict):
        return {
            k: _strip(v, root, (*path, k))
            for k, v in obj.items()
            if (*path, k) not in IGNORED and k not in IGNORED_ANYWHERE
        }
    if isinstance(obj, list):
        return [_strip(v, root, path) for v in obj]
    if isinstance(obj, str):
        return obj.replace(root, "<work>")
    return obj


def _json_docs(path: Path) -> list[Any]:
    text = path.read_text()
    try:
        return [json.loads(text)]
    except ValueError:  # JSON Lines (train --json)
        return [json.loads(line) for line in text.splitlines() if line.strip()]


def _diff(a: Any, b: Any, where: str, out: list[str]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                out.append(f"{where}.{k}: only in {'new' if k in b else 'old'}")
            else:
                _diff(a[k], b[k], f"{where}.{k}", out)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _diff(x, y, f"{where}[{i}]", out)
    elif a != b or type(a) is not type(b):
        out.append(f"{where}: {a!r:.80} != {b!r:.80}")


def _compare_tensors(a: Path, b: Path, out: list[str]) -> None:
    import torch
    from safetensors import safe_open

    with safe_open(str(a), framework="pt") as fa, safe_open(str(b), framework="pt") as fb:
        if fa.metadata() != fb.metadata():
            ma, mb = fa.metadata() or {}, fb.metadata() or {}
            for k in sorted(set(ma) | set(mb)):
                if ma.get(k) != mb.get(k):
                    out.append(f"{a.name}: header {k} differs")
        ka, kb = set(fa.keys()), set(fb.keys())
        if ka != kb:
            out.append(f"{a.name}: tensors {sorted(ka ^ kb)} in one only")
        for k in sorted(ka & kb):
            ta, tb = fa.get_tensor(k), fb.get_tensor(k)
            if ta.dtype != tb.dtype or ta.shape != tb.shape or not torch.equal(ta, tb):
                out.append(f"{a.name}: tensor {k} differs")


def _compare_text(a: Path, b: Path, out: list[str]) -> None:
    ta = sorted(LIST_NUMBER.sub("N. ", DATE.sub("<date>", a.read_text())).splitlines())
    tb = sorted(LIST_NUMBER.sub("N. ", DATE.sub("<date>", b.read_text())).splitlines())
    if ta != tb:
        only_a, only_b = sorted(set(ta) - set(tb)), sorted(set(tb) - set(ta))
        got = (only_a[0] if only_a else "<none>", only_b[0] if only_b else "<none>")
        out.append(f"{a.name}: lines differ, e.g. {got[0]!r:.80} (old) vs {got[1]!r:.80} (new)")


def compare(old: Path, new: Path, work: Path) -> list[str]:
    """Every difference between the two output trees, as lines."""
    problems: list[str] = []
    files_old = {p.relative_to(old) for p in old.rglob("*") if p.is_file()}
    files_new = {p.relative_to(new) for p in new.rglob("*") if p.is_file()}
    for rel in sorted(files_old ^ files_new):
        problems.append(f"{rel}: only in {'new' if rel in files_new else 'old'}")
    for rel in sorted(files_old & files_new):
        if rel.suffix == ".json":
            da, db = _json_docs(old / rel), _json_docs(new / rel)
            sa, sb = [_strip(d, str(work)) for d in da], [_strip(d, str(work)) for d in db]
            _diff(sa, sb, str(rel), problems)
        elif rel.suffix == ".safetensors":
            _compare_tensors(old / rel, new / rel, problems)
        elif rel.suffix in TEXT_SUFFIXES:
            _compare_text(old / rel, new / rel, problems)
    return problems


def _tree(spec: str, scratch: Path, name: str) -> Path:
    """A source tree: a directory as given, or a git revision extracted into ``scratch``."""
    if Path(spec).is_dir():
        return Path(spec).resolve()
    dest = scratch / name
    dest.mkdir()
    archive = subprocess.run(["git", "archive", spec], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def _run_side(tree: Path, work: Path, data: Path) -> None:
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(tree), "LSCAPE_DATA": str(data), "OMP_NUM_THREADS": "1"}
    env.pop("LSCAPE_DEBUG", None)
    subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--run-here", str(work)],
        env=env,
        cwd=tree,
        check=True,
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--old", help="git revision or source tree of the reference version")
    ap.add_argument("--new", default=".", help="git revision or source tree of the version under test")
    ap.add_argument("--keep", type=Path, help="keep the outputs in this directory")
    ap.add_argument("--run-here", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.run_here:
        run_scenario(args.run_here)
        return 0
    if args.old is None:
        ap.error("--old is required")
    with tempfile.TemporaryDirectory(prefix="lscape-compare-") as tmp:
        scratch = (args.keep or Path(tmp)).resolve()
        scratch.mkdir(parents=True, exist_ok=True)
        data = scratch / "data"
        data.mkdir(exist_ok=True)
        old, new = _tree(args.old, scratch, "old-src"), _tree(args.new, scratch, "new-src")
        work = scratch / "work"
        for tree, side in ((old, "old"), (new, "new")):
            print(f"== {side}: {tree}", flush=True)
            _run_side(tree, work, data)
            work.rename(scratch / side)
        problems = compare(scratch / "old", scratch / "new", work)
    for p in problems:
        print(p)
    n = len(SCENARIO)
    verdict = f"{len(problems)} difference(s)" if problems else "outputs identical"
    print(f"{n} commands, {len(HELP)} help texts; {verdict}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
