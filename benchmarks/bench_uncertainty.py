"""Calibration of lscape's uncertainties: do trace and ‖H‖_F error bars cover the truth as often as claimed?

For each problem (an MSE MLP and a CE CNN, small enough for a dense Hessian), dtype (float64, float32),
trace method (hutchinson, hutch++, krylov-hutch++) and seed, the script makes the calls ``lscape probe
--trace --frobenius`` makes (one operator, the rounding measurement of
:mod:`lscape_cli.core.linalg.rounding`, the estimator with the default 45 products) and compares the estimates
with the exact values from a dense float64 ``torch.func.hessian`` at the same weights. For every
(problem, dtype, method, quantity) it reports

- the relative RMS error over seeds;
- ``sd / rms(stderr)``: the spread of the estimates over the RMS reported standard error (1 when the
  standard error estimates the variance without bias);
- the median ``rounding / stderr``;
- the fractions of seeds with ``|z| < 1, 2, 3``, ``z = (estimate − exact) / uncertainty``, where
  ``uncertainty = √((k_ν·stderr)² + rounding²)`` is the record's key (``k_ν`` the Student-t factor of
  :func:`lscape_cli.core.linalg.trace.t_factor`); the target is 90–99% for ``|z| < 2`` (95.4% nominal);
- the largest ``|z|``.

With ``--replicates R`` it also measures the alternative the trace module's docstring rejects: the
budget split into ``R`` independent runs of Hutch++ / krylov-hutch++, the standard error taken from the
spread across them (float64, products with the dense Hessian, so it costs seconds).

Problems (trained here with plain torch, float32, Adam lr 1e-2, 300 full-batch steps, seed 0, on the
bundled ``digits`` images; the float64 runs and the reference use the same float32 weights exactly):
an MLP 64-16-16-10 with MSE (1,482 parameters, 512 images) and a SimpleCNN width 4, FC 16 with
cross-entropy (1,034 parameters, 128 images). ``--seeds 200`` (the default) makes a calibrated method
fall outside 90-99% with probability ~0.2% per row; 40 seeds would leave it ~20% per row.

Usage: ``python benchmarks/bench_uncertainty.py [--seeds 200] [--replicates 3] [--write docs/benchmarks.md]``
(one thread; 25 minutes of wall time on the 2-core machine of docs/benchmarks.md while four other
jobs shared it).
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from lscape_cli import datasets, models  # noqa: E402
from lscape_cli.core.linalg import rounding, trace  # noqa: E402
from lscape_cli.core.linalg.hvp import HVP, DenseOperator, Objective, flatten, unflatten  # noqa: E402
from lscape_cli.core.objective import loss_mean  # noqa: E402

PROBLEMS = {  # name: (architecture, options, loss, samples, Adam steps)
    "mlp-mse": ("mlp", {"depth": 2, "width": 16}, "mse", 512, 300),
    "cnn-ce": ("cnn", {"width": 4, "hidden": 16}, "ce", 128, 300),
    # the same CNN trained to a loss of 2e-5: float32 moves its ‖H‖_F by -1.5e-4 relative, 10x the
    # standard error of the deflated estimators (the float32 floor has to carry it)
    "cnn-ce-long": ("cnn", {"width": 4, "hidden": 16}, "ce", 128, 1500),
}
DEFAULT_PROBLEMS = ("mlp-mse", "cnn-ce")
QUANTITIES = ("trace", "frobenius")


@dataclass
class Problem:
    """A trained float32 model, its data and the exact float64 answers."""

    name: str
    objective: Objective  # float32
    hessian: torch.Tensor  # (n, n) float64
    exact: dict[str, float]


def make_problem(name: str, root: Path) -> Problem:
    """Train the problem's model in float32 and compute the dense float64 Hessian at its weights."""
    arch, options, loss, samples, steps = PROBLEMS[name]
    splits = datasets.load(datasets.DatasetSpec("digits"), root, dtype=torch.float32)
    x, y = splits.x["train"][:samples], splits.y["train"][:samples]
    torch.manual_seed(0)
    model = models.build(models.make_spec(arch, {"input_shape": (1, 8, 8), **options}))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        loss_mean(model(x), y, loss).backward()
        opt.step()
    obj = Objective.from_module(model.eval(), x, y, loss)
    ref = rounding.cast(obj, torch.float64)

    def full_loss(flat: torch.Tensor) -> torch.Tensor:
        params = unflatten(flat, ref.params)
        return loss_mean(torch.func.functional_call(ref.model, (params, ref.buffers), (ref.x,)), ref.y, loss)

    hessian = torch.func.hessian(full_loss)(flatten(ref.params)).detach()
    eig = torch.linalg.eigvalsh(hessian)
    exact = {"trace": float(eig.sum()), "frobenius": float(eig.square().sum().sqrt())}
    return Problem(name, obj, hessian, exact)


def run_seed(obj: Objective, method: str, matvecs: int, seed: int) -> tuple[trace.TraceFrobenius, int]:
    """What ``lscape probe --trace --frobenius --trace-method METHOD --seed SEED`` computes.

    Returns the estimates with their floors and the number of rounding products spent per dtype.
    """
    ref_dtype, scale = rounding.reference_dtype(obj.x.dtype)
    reference = HVP(rounding.cast(obj, ref_dtype), "double_backward", retain_chunks=0)
    with HVP(obj) as op:
        tf = trace.TRACE_METHODS[method](op, num_matvecs=matvecs, seed=seed)
        rnd = rounding.measure(op, reference, rounding.DEFAULT_PRODUCTS, seed, scale)
        k = trace.t_factor(tf.trace.dof)
        rnd = rounding.refine(rnd, op, reference, k * tf.trace.stderr, k * tf.frobenius_sq.stderr)
    return tf.with_rounding(rnd.trace, rnd.frobenius_sq), rnd.num_products


def summarize(
    estimates: list[trace.Estimate], exact: float, band: tuple[float, float] = (0.90, 0.99)
) -> dict[str, Any]:
    """Error, spread and coverage of one (problem, dtype, method, quantity) over seeds."""
    est = torch.tensor([e.estimate for e in estimates], dtype=torch.float64)
    se = torch.tensor([e.stderr for e in estimates], dtype=torch.float64)
    rnd = torch.tensor([e.rounding or 0.0 for e in estimates], dtype=torch.float64)
    z = (est - exact) / torch.tensor([e.uncertainty for e in estimates], dtype=torch.float64)
    cover = {k: float((z.abs() < k).double().mean()) for k in (1, 2, 3)}
    return {
        "rel_rms": float((est - exact).square().mean().sqrt()) / abs(exact),
        "sd_over_se": float(est.std() / se.square().mean().sqrt()),
        "rounding_over_se": float((rnd / se).median()),
        "cover": cover,
        "max_z": float(z.abs().max()),
        "calibrated": band[0] <= cover[2] <= band[1],
    }


def coverage(
    problem: Problem,
    seeds: int,
    matvecs: int,
    dtypes: tuple[torch.dtype, ...] = (torch.float64, torch.float32),
    band: tuple[float, float] = (0.90, 0.99),
) -> list[dict[str, Any]]:
    """Rows for every dtype, method and quantity of one problem."""
    rows = []
    for dtype in dtypes:
        obj = rounding.cast(problem.objective, dtype)
        for method in trace.TRACE_METHODS:
            t0 = time.perf_counter()
            runs = [run_seed(obj, method, matvecs, s) for s in range(seeds)]
            seconds = time.perf_counter() - t0
            products = sum(r[1] for r in runs) / seeds
            for q in QUANTITIES:
                row = summarize([getattr(r[0], q) for r in runs], problem.exact[q], band)
                key = {"problem": problem.name, "dtype": str(dtype)[6:], "method": method, "quantity": q}
                rows.append({**key, "seconds": seconds, "products": products, **row})
            print(_line(rows[-2]), _line(rows[-1]), sep="\n", flush=True)
    return rows


def replicates(problem: Problem, seeds: int, matvecs: int, r: int) -> list[dict[str, Any]]:
    """One run of ``matvecs`` products against ``r`` independent runs of ``matvecs / r`` (float64)."""
    op = DenseOperator(problem.hessian, {"w": torch.zeros(problem.hessian.shape[0], dtype=torch.float64)})
    rows = []
    for method in ("hutch++", "krylov-hutch++"):
        fn = trace.TRACE_METHODS[method]
        single = [fn(op, matvecs, seed=s) for s in range(seeds)]
        split = [[fn(op, matvecs // r, seed=1000 * s + i) for i in range(r)] for s in range(seeds)]
        for q in QUANTITIES:
            pooled = [_pool([getattr(x, q) for x in runs]) for runs in split]
            for label, ests in (
                (f"1 x {matvecs}", [getattr(x, q) for x in single]),
                (f"{r} x {matvecs // r}", pooled),
            ):
                row = {
                    **summarize(ests, problem.exact[q]),
                    "rounding_over_se": None,
                }  # float64, none measured
                rows.append({"problem": problem.name, "method": method, "quantity": q, "split": label, **row})
    return rows


def exact_operator(problem: Problem, seeds: int, matvecs: int) -> list[dict[str, Any]]:
    """Every method on the exact float64 Hessian as a matrix, for many seeds: the estimators' own coverage.

    Products with the dense matrix cost microseconds, so ``seeds`` can be 1000 or more: a row's
    sampling error is then ±1.3% at 95% (±3% with 200 seeds), small enough to tell a 93% method from a
    95% one. No rounding enters (float64 throughout).
    """
    op = DenseOperator(problem.hessian, {"w": torch.zeros(problem.hessian.shape[0], dtype=torch.float64)})
    rows = []
    for method, fn in trace.TRACE_METHODS.items():
        runs = [fn(op, matvecs, seed=s) for s in range(seeds)]
        for q in QUANTITIES:
            row = {**summarize([getattr(r, q) for r in runs], problem.exact[q], (0.93, 0.98))}
            row["rounding_over_se"] = None
            rows.append({"problem": problem.name, "method": method, "quantity": q, **row})
    return rows


def _pool(parts: list[trace.Estimate]) -> trace.Estimate:
    """The mean of independent replicates, its standard error from their spread (``r − 1`` dof)."""
    v = torch.tensor([p.estimate for p in parts], dtype=torch.float64)
    se = float(v.std()) / math.sqrt(len(parts))
    budget = sum(p.num_matvecs for p in parts)
    return trace.Estimate(float(v.mean()), se, parts[0].method, budget, len(parts) - 1)


def _line(row: dict[str, Any]) -> str:
    c = row["cover"]
    rounding = "-" if row.get("rounding_over_se") is None else f"{row['rounding_over_se']:.2g}"
    head = " | ".join(str(row[k]) for k in ("problem", "dtype", "method", "quantity", "split") if k in row)
    if "products" in row:
        rounding = f"{rounding} | {row['products']:.1f}"
    return (
        f"| {head} | {row['rel_rms']:.2e} | {row['sd_over_se']:.2f} | {rounding} | "
        f"{c[1]:.1%} | {c[2]:.1%} | {c[3]:.1%} | {row['max_z']:.1f} | "
        f"{'yes' if row['calibrated'] else 'NO'} |"
    )


def render(
    rows: list[dict[str, Any]],
    reps: list[dict[str, Any]],
    seeds: int,
    wall: float,
    band: tuple[float, float] = (0.90, 0.99),
    exact: list[dict[str, Any]] | None = None,
    exact_seeds: int = 0,
    matvecs: int = 45,
) -> str:
    """Markdown tables of both measurements."""
    target = f"{band[0]:.0%}-{band[1]:.0%}"
    head = (
        f"{seeds} seeds per row, 45 products each (+{rounding.DEFAULT_PRODUCTS} per dtype for the rounding "
        f"floor, {rounding.MAX_PRODUCTS} where it exceeds {rounding.RELEVANT:g} of the statistical error); "
        f"wall time {wall / 60:.1f} min, torch {torch.__version__}, 1 thread."
    )
    out = [
        head,
        "",
        "| problem | dtype | method | quantity | rel. RMS error | sd / rms(stderr) | rounding / stderr | "
        f"rounding products | \\|z\\| < 1 | \\|z\\| < 2 | \\|z\\| < 3 | max \\|z\\| | {target} |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        *[_line(r) for r in rows],
    ]
    if not rows:
        out = [f"Wall time {wall / 60:.1f} min, torch {torch.__version__}, 1 thread."]
    if reps:
        out += [
            "",
            "Budget split into independent replicates (float64, standard error from the spread across them):",
            "",
            "| problem | method | quantity | runs x products | rel. RMS error | sd / rms(stderr) | - | "
            "\\|z\\| < 1 | \\|z\\| < 2 | \\|z\\| < 3 | max \\|z\\| | 90-99% |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
            *[_line(r) for r in reps],
        ]
    if exact:
        out += [
            "",
            f"The estimators alone, on the exact float64 Hessian as a matrix ({exact_seeds} seeds per row, "
            f"seeds 0-{exact_seeds - 1}, {matvecs} products, no rounding):",
            "",
            "| problem | method | quantity | rel. RMS error | sd / rms(stderr) | - | "
            "\\|z\\| < 1 | \\|z\\| < 2 | \\|z\\| < 3 | max \\|z\\| | 93%-98% |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
            *[_line(r) for r in exact],
        ]
    return "\n".join(out)


def write(path: Path, text: str, marker: str = "uncertainty") -> None:
    """Replace the text between the markers of ``path`` (appended with them when absent)."""
    doc = path.read_text()
    begin, end = f"<!-- {marker}:begin -->", f"<!-- {marker}:end -->"
    block = f"{begin}\n{text}\n\n{end}"
    if begin in doc:
        doc = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: block, doc, flags=re.S)
    else:
        doc = doc.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(doc)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Run, print, optionally write; returns the coverage rows (the slow test asserts on them)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=200)
    ap.add_argument("--matvecs", type=int, default=45)
    ap.add_argument("--problems", default=",".join(DEFAULT_PROBLEMS), help=f"of {', '.join(PROBLEMS)}")
    ap.add_argument("--dtypes", default="float64,float32")
    ap.add_argument("--band", default="0.90,0.99", help="the |z| < 2 coverage a row must reach: LOW,HIGH")
    ap.add_argument("--marker", default="uncertainty", help="name of the markers --write replaces between")
    ap.add_argument(
        "--replicates", type=int, default=0, help="also compare R independent replicates (0: skip)"
    )
    ap.add_argument(
        "--exact-seeds", type=int, default=0, help="also run N seeds on the dense float64 matrix (0: skip)"
    )
    ap.add_argument("--write", default="-", help="markdown file to update between the markers ('-': none)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    rows, reps, exact = [], [], []
    dtypes = tuple(getattr(torch, d) for d in args.dtypes.split(","))
    lo, hi = (float(b) for b in args.band.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.problems.split(","):
            problem = make_problem(name, Path(tmp))
            print(f"{name}: {problem.hessian.shape[0]} parameters, exact {problem.exact}", flush=True)
            if args.seeds:
                rows += coverage(problem, args.seeds, args.matvecs, dtypes, (lo, hi))
            if args.exact_seeds:
                exact += exact_operator(problem, args.exact_seeds, args.matvecs)
                print(*[_line(r) for r in exact[-6:]], sep="\n", flush=True)
            if args.replicates:
                reps += replicates(problem, args.seeds, args.matvecs, args.replicates)
                print(*[_line(r) for r in reps[-8:]], sep="\n", flush=True)
    text = render(
        rows, reps, args.seeds, time.perf_counter() - t0, (lo, hi), exact, args.exact_seeds, args.matvecs
    )
    print(text)
    if args.write != "-":
        write(Path(args.write), text, args.marker)
    return rows


if __name__ == "__main__":
    main()
