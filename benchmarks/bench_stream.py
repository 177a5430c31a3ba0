"""Data larger than the memory given to the process: `lscape train` and `lscape probe` on a streamed
`--data DIR` of .npy shards, each in a child process whose private memory is capped by RLIMIT_DATA.

    PYTHONPATH=$PWD python benchmarks/bench_stream.py                      # 1.25M samples, 3.6 GiB, 900 MiB
    PYTHONPATH=$PWD python benchmarks/bench_stream.py --samples 20000      # a quick look

The limit. RLIMIT_DATA caps what a process can allocate as private writable memory: the heap, numpy
and torch buffers, anonymous mappings (Linux >= 4.7). Shared, read-only library code is not counted,
and neither is the page cache, so a data set can exceed the limit only if lscape never holds it.
Two other limits do not measure this here: RLIMIT_AS (`ulimit -v`) counts address space, and torch's
CUDA build maps about 3.2 GB of it at import before touching any data (VmPeak of a tiny probe); a
memory cgroup would be the exact tool, but this machine has no systemd bus for `systemd-run --scope`
and its cgroup tree belongs to the host's process manager.

What runs, each under the same limit: (0) a control that allocates the data set's size in memory and
must fail; (1) `lscape train` (minibatch SGD for --steps steps, then the whole-split evaluation of
train/val/test that ends the epoch); (2) `lscape probe --lambda-max` over the whole training split
(every Hessian-vector product a pass over it from disk); and (1)-(2) on a 2,000-sample directory, the
fixed cost of the process. Peak RSS is the child's ru_maxrss (it includes ~430 MiB of shared library
pages that the limit does not count). The data set is deleted at the end unless --keep.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

SHAPE = (3, 16, 16)  # CIFAR-like channels at half the side: 3 KiB a sample in float32
CLASSES = 10


def write_dataset(folder: Path, samples: int, shard: int, seed: int = 0) -> int:
    """Shards x-KKKKK.npy / y-KKKKK.npy of a random teacher task; returns the bytes written."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    teacher = rng.standard_normal((int(np.prod(SHAPE)), CLASSES)).astype(np.float32)
    for k, start in enumerate(range(0, samples, shard)):
        n = min(shard, samples - start)
        x = rng.standard_normal((n, *SHAPE), dtype=np.float32)
        np.save(folder / f"x-{k:05d}.npy", x)
        np.save(folder / f"y-{k:05d}.npy", (x.reshape(n, -1) @ teacher).argmax(1).astype(np.int64))
    return sum(f.stat().st_size for f in folder.iterdir())


def lscape(*args: object) -> list[str]:
    return [sys.executable, "-m", "lscape_cli", *[str(a) for a in args]]


def steps(data: Path, out: Path, limit: int, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """train then probe on ``data``, each in its own limited child."""
    common = ("--device", "cpu", "--threads", "1", "--max-batch", args.max_batch)
    train = lscape(
        "train", "--model", "mlp", "--depth", "1", "--width", args.width, "--data", data,
        "--batch-size", 256, "--epochs", 1, "--max-steps", args.steps, "--out", out, "--json", "--quiet",
        *common,
    )  # fmt: skip
    probe = lscape(
        "probe", out / "model.safetensors", "--lambda-max", "--max-iter", args.max_iter,
        "--memory-budget", args.memory_budget,
        "--json", "--quiet", *common,
    )  # fmt: skip
    return {"train": measured(train, limit), "probe": measured(probe, limit)}


def measured(argv: list[str], limit: int) -> dict[str, Any]:
    """One child's result; peak RSS from wait4's own rusage of that child."""
    cap = limit << 20
    files = {1: "json", 2: "err"}  # the child's stdout (the --json record) and stderr
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the child: cap, then exec (RLIMIT_DATA is inherited across exec)
        resource.setrlimit(resource.RLIMIT_DATA, (cap, cap))
        for fd, suffix in files.items():
            path = Path(tempfile.gettempdir()) / f"bench_stream.{os.getpid()}.{suffix}"
            os.dup2(os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
        os.execv(argv[0], argv)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - t0
    out, err = (Path(tempfile.gettempdir()) / f"bench_stream.{pid}.{s}" for s in files.values())
    text, lines = out.read_text(), [ln for ln in err.read_text().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("Error:")] or lines[-1:]  # else a traceback's last line
    out.unlink()
    err.unlink()
    return {
        "rc": os.waitstatus_to_exitcode(status),
        "wall_s": round(wall, 1),
        "peak_rss_mib": round(usage.ru_maxrss / 1024),
        "record": json.loads(text.splitlines()[-1]) if text.strip() else None,
        "error": errors[-1] if errors else None,
    }


def control(nbytes: int, limit: int) -> int:
    """Exit code of a child that allocates ``nbytes`` under the limit (1: refused, as it must be)."""
    code = (
        f"import numpy as np\ntry:\n    np.ones({nbytes} // 4, np.float32)\n"
        "except MemoryError:\n    raise SystemExit(1)"
    )
    cap = limit << 20
    return subprocess.run(
        [sys.executable, "-c", code], preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_DATA, (cap, cap))
    ).returncode


def summary(name: str, label: str, res: dict[str, Any]) -> str:
    head = f"| {name}, {label} data | {res['rc']} | {res['wall_s']} | {res['peak_rss_mib']} |"
    if res["record"] is None:
        return f"{head} {res['error']} |"
    rec = res["record"]
    results = rec.get("results", {}) if isinstance(rec, dict) else {}
    if name == "train":
        final = results.get("final") or {}
        what = f"train loss {final.get('train_loss', float('nan')):.4f}, {results.get('steps')} steps"
    else:
        lam = results.get("lambda_max") or {}
        what = (
            f"λmax {lam.get('estimate', float('nan')):.5f} ({lam.get('num_matvecs')} products, "
            f"converged {lam.get('converged')})"
        )
    return f"{head} {what} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1_250_000)
    parser.add_argument("--shard", type=int, default=125_000)
    parser.add_argument("--limit-mib", type=int, default=900)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--max-batch", type=int, default=4096)
    parser.add_argument(
        "--max-iter", type=int, default=12, help="probe's --max-iter (each a pass over the data)"
    )
    parser.add_argument("--memory-budget", type=int, default=64, help="probe's --memory-budget (MiB)")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--reuse", type=Path, help="the big directory of an earlier run with --keep")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lscape-stream-", dir=args.dir))
    try:
        t0 = time.perf_counter()
        if args.reuse is not None:  # a data set written by an earlier run with --keep
            (work / "big").symlink_to(args.reuse.resolve())
            nbytes = sum(f.stat().st_size for f in args.reuse.iterdir())
        else:
            nbytes = write_dataset(work / "big", args.samples, args.shard)
        written = time.perf_counter() - t0
        write_dataset(work / "small", 2000, 2000)
        print(f"data: {args.samples} samples of {SHAPE} float32 in {work / 'big'}: {nbytes / 2**30:.2f} GiB "
              f"written in {written:.0f} s; limit RLIMIT_DATA {args.limit_mib} MiB "
              f"(data / limit = {nbytes / (args.limit_mib << 20):.2f})")  # fmt: skip
        refused = control(nbytes, args.limit_mib)
        print(f"control: allocating the data set's size under the limit exits {refused} (1 = MemoryError)")
        print("\n| step | exit | wall s | peak RSS MiB | result |\n|---|---|---|---|---|")
        for label, data in (("small", work / "small"), ("big", work / "big")):
            for name, res in steps(data, work / f"run-{label}", args.limit_mib, args).items():
                print(summary(name, label, res), flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
