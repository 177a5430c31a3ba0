"""Linear-path evaluation for `lscape connect` against loss-landscapes' ``linear_interpolation``.

Seed 000's MLP pair (sample_checkpoints/mlp-d4-r000 and -r001: 784-48x4-10, MSE summed over outputs),
the 4,000 mnist-5k training images the checkpoints' metadata names, 51 points. All methods run in one
process, interleaved (A B C A B C ...), ``--repeats`` times; the table gives medians and ratios.

- lscape: ``core.connectivity.paths.evaluate_path`` -- 51 points alpha = 0, 1/50, ..., 1 (both ends) placed
  as ``(1 - alpha) theta_A + alpha theta_B``, loss *and* accuracy per point, through
  ``core.landscape.surface.evaluate_points`` (first layer factored out of the path where the model allows it).
- loss-landscapes 3.0.6 ``linear_interpolation(A, B, Loss(...), steps=51)``: 51 points alpha = 1/51, ...,
  1 (never alpha = 0) reached by adding ``(theta_B - theta_A) / 51`` in place 51 times, loss only. Run
  as documented (its ``Loss`` metric evaluates with autograd on) and inside ``torch.no_grad()``.

Accuracy: lscape evaluated at loss-landscapes' alphas; the largest relative difference of the losses,
and how far loss-landscapes' last point lands from B's own loss (its accumulated steps miss theta_B).

Run in the benchmark environment (``make bench`` builds it; loss-landscapes is not a dependency of
lscape):  python benchmarks/bench_connect.py [--repeats 7] [--threads 1,2] [--write docs/bench-connect.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _machine import cpu_name  # noqa: E402

from lscape_cli import datasets  # noqa: E402
from lscape_cli.cli.options import data_root  # noqa: E402
from lscape_cli.core.connectivity import paths as C  # noqa: E402
from lscape_cli.core.objective import loss_mean  # noqa: E402
from lscape_cli.models.loading import load_model  # noqa: E402

POINTS = 51


def _setup() -> tuple:
    a = load_model(ROOT / "sample_checkpoints" / "mlp-d4-r000.safetensors")
    b = load_model(ROOT / "sample_checkpoints" / "mlp-d4-r001.safetensors")
    spec = datasets.DatasetSpec.from_dict(a.checkpoint.meta["dataset"])
    splits = datasets.load(spec, data_root(None))
    return a, b, splits.x["train"], splits.y["train"]


def _params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach() for n, p in module.named_parameters()}


def _measure(repeats: int, threads: int) -> tuple[list[str], dict[str, float]]:
    """One interleaved run at ``threads`` torch threads: table rows and agreement numbers."""
    import copy

    import loss_landscapes
    from loss_landscapes.metrics import Loss

    torch.set_num_threads(threads)
    a, b, x, y = _setup()
    pa, pb = _params(a.module), _params(b.module)
    metric = Loss(lambda logits, yy: loss_mean(logits, yy, "mse"), x, y)
    data = {"train": (x, y)}

    def lscape() -> list[float]:
        coeffs = C.coefficients("linear", C.grid(POINTS))
        return C.evaluate_path(a.module, [pa, pb], coeffs, C.Buffers("none"), data, "mse")["train"]["loss"]

    def ll() -> list[float]:  # fresh copies each call, as deepcopy_model=True would make
        start, end = copy.deepcopy(a.module), copy.deepcopy(b.module)
        return list(loss_landscapes.linear_interpolation(start, end, metric, steps=POINTS))

    def ll_no_grad() -> list[float]:
        with torch.no_grad():
            return ll()

    methods = {
        "lscape `evaluate_path` (51 points incl. both ends, loss + accuracy)": lscape,
        "loss-landscapes `linear_interpolation` (51 points, no alpha=0, loss only)": ll,
        "loss-landscapes, inside `torch.no_grad()`": ll_no_grad,
    }
    times: dict[str, list[float]] = {k: [] for k in methods}
    for fn in methods.values():  # warm-up (first-call allocations, lazy imports)
        fn()
    for _ in range(repeats):
        for name, fn in methods.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    base = statistics.median(times[list(methods)[1]])
    rows = [
        f"| {threads} | {name} | {statistics.median(ts):.4f} | {min(ts):.4f} | "
        f"{base / statistics.median(ts):.2f}x |"
        for name, ts in times.items()
    ]
    # accuracy: lscape at loss-landscapes' alphas k/51, k = 1..51
    alphas = torch.arange(1, POINTS + 1, dtype=torch.float64) / POINTS
    ours = C.evaluate_path(
        a.module, [pa, pb], C.coefficients("linear", alphas), C.Buffers("none"), data, "mse"
    )
    theirs = ll_no_grad()
    own_b = C.direct_eval(b.module, pb, {}, x, y, "mse", 4096)[0]
    agreement = {
        "max_rel_diff": max(abs(o - t) / abs(o) for o, t in zip(ours["train"]["loss"], theirs, strict=True)),
        "ll_end_miss": abs(theirs[-1] - own_b) / own_b,
        "lscape_end_miss": abs(lscape()[-1] - own_b),
        "num_parameters": sum(t.numel() for t in pa.values()),
        "num_samples": int(x.shape[0]),
    }
    return rows, agreement


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", default="1,2", help="comma-separated torch thread counts")
    parser.add_argument("--write", type=Path, default=None, help="also write the Markdown table here")
    args = parser.parse_args()
    lines = [
        "| threads | method | median (s) | min (s) | loss-landscapes / this |",
        "|---|---|---|---|---|",
    ]
    for threads in [int(t) for t in args.threads.split(",")]:
        rows, agree = _measure(args.repeats, threads)
        lines += rows
    notes = [
        f"Machine: {cpu_name()}, {os.cpu_count()} logical CPUs, torch {torch.__version__} on CPU, "
        f"Python {platform.python_version()}; per thread setting {args.repeats} interleaved repeats after "
        "one warm-up each. The machine was shared with other jobs, so absolute times are noisy; the "
        "ratios within a thread setting are the result.",
        f"Model: seed 000's MLP (784-48x4-10, {agree['num_parameters']} parameters), "
        f"{agree['num_samples']} mnist-5k training images, MSE summed over outputs.",
        f"Agreement: at loss-landscapes' alphas the losses differ by at most {agree['max_rel_diff']:.1e} "
        f"(relative). loss-landscapes' last point (alpha = 1 after 51 accumulated steps) misses B's own "
        f"loss by {agree['ll_end_miss']:.1e} relative; lscape's alpha = 1 is B: |difference| = "
        f"{agree['lscape_end_miss']:.1e}.",
    ]
    text = "\n".join(lines) + "\n\n" + "\n\n".join(notes) + "\n"
    print(text)
    if args.write:
        header = (
            "# Benchmark: linear path between two minima (`lscape connect`)\n\n"
            "Produced by `python benchmarks/bench_connect.py --write docs/bench-connect.md` in the "
            "benchmark environment (`make bench` builds it).\n\n"
        )
        args.write.write_text(header + text)


if __name__ == "__main__":
    main()
