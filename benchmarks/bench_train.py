"""Training R restarts together (`lscape train --restarts R`) against R sequential single-restart runs.

Seed 000's protocol at a fixed step budget: MLP width 48 at depths 1, 4 and 10, MSE summed over outputs,
theta0 ~ N(0, I), full-batch Adam lr 1e-3 on the 4,000 mnist-5k training images, evaluation only at the
end (as `--eval-every` large). Three ways, in one process, interleaved (A B C A B C ...), ``--repeats``
times, medians:

- batched: ``core.training.engine.train_restarts`` with R seeds (what ``lscape train --restarts R`` runs).
- sequential: ``train_restarts`` R times with one seed each (what R runs of ``lscape train --restarts 1``
  run, without the R process start-ups of ~4 s each that a shell loop would add).
- plain: a hand-written PyTorch loop training one model (``nn.Module``, ``torch.optim.Adam``, full
  batch): the floor a user would write; compared per step with lscape's single restart.

Also: the largest difference between a batched restart's parameters and its sequential run (float
rounding only), and seed 000's full protocol (10 depths x 25 restarts x up to 1e5 steps) extrapolated
from the measured per-step times.

Run:  python benchmarks/bench_train.py [--restarts 25] [--steps 10] [--repeats 3] [--threads 1]
      [--write docs/bench-train.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _machine import cpu_name  # noqa: E402

from lscape_cli import datasets, models  # noqa: E402
from lscape_cli.cli.options import data_root  # noqa: E402
from lscape_cli.core.objective import loss_mean  # noqa: E402
from lscape_cli.core.training.engine import TrainConfig, init_parameters, train_restarts  # noqa: E402

DEPTHS = (1, 4, 10)
PROTOCOL_STEPS = 100_000  # seed 000's step cap
CPU = torch.device("cpu")


def _config(steps: int) -> TrainConfig:
    return TrainConfig(
        loss="mse",
        optimizer="adam",
        lr=1e-3,
        batch_size=None,
        epochs=steps,
        eval_every=steps,
        init="normal:1",
    )


def _plain(spec: Any, splits: Any, steps: int, seed: int) -> float:
    """Seconds for ``steps`` full-batch Adam steps of one model in a hand-written loop.

    Then the final loss and accuracy on the three splits, which ``lscape train`` also measures.
    """
    model = models.build(spec)
    init_parameters(model, "normal:1", seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = splits.x["train"], splits.y["train"]
    t0 = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad()
        loss_mean(model(x), y, "mse").backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        for split in ("train", "val", "test"):
            out = model(splits.x[split])
            metrics = [
                loss_mean(out, splits.y[split], "mse"),
                (out.argmax(-1) == splits.y[split]).float().mean(),
            ]
            [float(v) for v in metrics]  # noqa: B018 (read back, as a record would)
    return time.perf_counter() - t0


def _timed(fn: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def _one_depth(depth: int, splits: Any, args: argparse.Namespace) -> dict[str, Any]:
    """One interleaved round at one depth: batched, sequential, plain."""
    spec = models.make_spec(
        "mlp", {"depth": depth, "width": 48, "input_shape": splits.input_shape, "num_classes": 10}
    )
    cfg, seeds = _config(args.steps), list(range(args.restarts))
    t_batched, batched = _timed(
        lambda: train_restarts(models.build(spec), splits, cfg, seeds, CPU, torch.float32)
    )
    t_seq, seq = _timed(
        lambda: [train_restarts(models.build(spec), splits, cfg, [s], CPU, torch.float32)[0] for s in seeds]
    )
    t_plain = _plain(spec, splits, args.steps, 0)
    diff = max(
        float((b.state[k] - s.state[k]).abs().max())
        for b, s in zip(batched, seq, strict=True)
        for k in s.state
    )
    return {"batched": t_batched, "sequential": t_seq, "plain": t_plain, "max_abs_diff": diff}


def _gemm_rates(restarts: int) -> dict[str, float]:
    """GFLOP/s of the first layer's product for one restart and for all restarts as one GEMM.

    Full-batch training is this product (forward) and its transpose (weight gradient): the rate
    bounds what batching can gain once per-call overheads are gone.
    """
    x = torch.rand(4000, 784)
    rates = {}
    for name, cols in (("one_restart", 48), ("all_restarts", 48 * restarts)):
        w = torch.randn(cols, 784)
        x @ w.T  # warm-up
        t0, n = time.perf_counter(), max(1, 400 // cols * 5)
        for _ in range(n):
            x @ w.T
        rates[name] = 2 * 4000 * 784 * cols * n / (time.perf_counter() - t0) / 1e9
    return rates


def _measure(args: argparse.Namespace) -> dict[int, dict[str, Any]]:
    torch.set_num_threads(args.threads)
    splits = datasets.load(datasets.DatasetSpec("mnist-5k"), data_root(None))
    runs: dict[int, list[dict[str, Any]]] = {d: [] for d in DEPTHS}
    for rep in range(args.repeats):
        for d in DEPTHS:
            runs[d].append(_one_depth(d, splits, args))
            print(f"repeat {rep} depth {d}: {runs[d][-1]}", file=sys.stderr)
    out = {}
    for d, rs in runs.items():
        med = {k: statistics.median(r[k] for r in rs) for k in ("batched", "sequential", "plain")}
        # ratios paired within a repeat, then the median: the machine's load drifts between repeats
        med["speedup"] = statistics.median(r["sequential"] / r["batched"] for r in rs)
        med["vs_plain"] = statistics.median(r["sequential"] / args.restarts / r["plain"] for r in rs)
        med["speedups"] = [r["sequential"] / r["batched"] for r in rs]
        med["max_abs_diff"] = max(r["max_abs_diff"] for r in rs)
        out[d] = med
    return out


def _table(res: dict[int, dict[str, Any]], args: argparse.Namespace) -> list[str]:
    r, s = args.restarts, args.steps
    rows = [
        f"| depth | batched, {r} restarts | {r} sequential runs | speed-up (per repeat) | "
        "per restart-step, batched | lscape 1 restart per step | plain PyTorch loop per step | "
        "lscape / plain | max abs diff |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for d, m in res.items():
        single_step = m["sequential"] / r / s
        cells = [
            f"{m['batched']:.2f} s",
            f"{m['sequential']:.2f} s",
            f"{m['speedup']:.2f}x ({', '.join(f'{v:.2f}' for v in m['speedups'])})",
            f"{1e3 * m['batched'] / r / s:.1f} ms",
            f"{1e3 * single_step:.1f} ms",
            f"{1e3 * m['plain'] / s:.1f} ms",
            f"{m['vs_plain']:.2f}",
            f"{m['max_abs_diff']:.1e}",
        ]
        rows.append(f"| {d} | " + " | ".join(cells) + " |")
    return rows


def _protocol(res: dict[int, dict[str, Any]], args: argparse.Namespace) -> list[str]:
    """Seed 000's 10 depths x 25 restarts x 1e5 steps, from per-step times interpolated over depth."""
    per_step = {d: m["batched"] / args.steps * 25 / args.restarts for d, m in res.items()}
    ds = sorted(per_step)
    total = 0.0
    for d in range(1, 11):
        lo = max(x for x in ds if x <= d)
        hi = min(x for x in ds if x >= d)
        w = 0.0 if hi == lo else (d - lo) / (hi - lo)
        total += PROTOCOL_STEPS * ((1 - w) * per_step[lo] + w * per_step[hi])
    return [
        f"Seed 000's full protocol at its cap (10 depths x 25 restarts x {PROTOCOL_STEPS:,} full-batch "
        "steps, "
        f"per-step times interpolated linearly between depths {', '.join(map(str, ds))}): "
        f"{total / 3600:.0f} hours on this machine at {args.threads} thread(s) "
        f"({total / 3600 / 24:.1f} days; runs that converge earlier take less).",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--restarts", type=int, default=25)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--write", type=Path, default=None, help="append the table to this markdown file")
    args = parser.parse_args()
    res = _measure(args)
    head = (
        f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} thread), "
        f"Python {platform.python_version()}; {args.restarts} restarts x {args.steps} full-batch Adam steps, "
        f"medians of {args.repeats} interleaved repeats."
    )
    g = _gemm_rates(args.restarts)
    gemm = (
        f"First-layer GEMM (4000 x 784 by 784 x H): {g['one_restart']:.1f} GFLOP/s for one restart "
        f"(H = 48), {g['all_restarts']:.1f} GFLOP/s for all {args.restarts} as one product "
        f"(H = {48 * args.restarts}): batching can gain at most {g['all_restarts'] / g['one_restart']:.2f}x "
        "on the multiply-adds that dominate a full-batch step."
    )
    lines = [head, "", *_table(res, args), "", gemm, "", *_protocol(res, args)]
    text = "\n".join(lines)
    print(text)
    if args.write is not None:
        with args.write.open("a") as fh:
            fh.write("\n" + text + "\n")


if __name__ == "__main__":
    main()
