"""GGN benchmark: lscape's GGN operator against curvlinops' and hessian-eigenthings' GGN.

Run it in the benchmark environment (``make bench`` builds it; never install the peers into the main
one), e.g. ``PYTHONPATH=. $BENCH_VENV/bin/python benchmarks/bench_ggn.py --write docs/bench-ggn.md``.

Same problems as ``bench_probe.py``: seed 000's MLP (``sample_checkpoints/mlp-d4-r000.safetensors``,
MSE summed over outputs) on its 4,000 mnist-5k training images, and a SimpleCNN (``cnn-w8`` sample,
cross-entropy) on the first ``--cnn-samples`` of its training images. The loss is lscape's (mean over
samples), given to the peers as a module with ``reduction = "mean"``.

1. References in float64, cached in ``~/.cache/lscape/bench-ref``: λmax of the GGN by lscape's Lanczos
   at tol 1e-10, and tr(G) *exactly*, from per-sample Jacobians: ``tr G = (1/N) Σ_i tr(J_iᵀ Λ_i J_i)``
   with ``Λ_i = 2I`` (MSE) or ``diag(p_i) − p_i p_iᵀ`` (CE).
2. One product of each operator against lscape's float64 product (operator agreement), and the time per
   product (median of ``--products``).
3. λmax to 1e-6 relative and the trace with 45 products, each tool with its defaults and with the
   setting a user would pick for the target, in this one process, interleaved (the order rotates every
   round), ``--repeats`` rounds (the trace: a new seed each round, RMS error over rounds). Products are
   counted at each operator.
4. Prints markdown and replaces the part of ``--write`` between the ``<!-- bench:begin -->`` and
   ``<!-- bench:end -->`` markers.

Torch runs with ``--threads`` threads (default 1: the machine this was written on has 2 cores shared with
other jobs, and a single thread is the least disturbed); the load average before and after is printed
with the tables. Peak memory is not measured here (``bench_probe.py`` does that for the Hessian).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import cpu_name  # noqa: E402
from bench_probe import MeanLoss  # noqa: E402  (the loss every tool differentiates)

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINTS = {
    "mlp": ROOT / "sample_checkpoints" / "mlp-d4-r000.safetensors",
    "cnn": ROOT / "sample_checkpoints" / "cnn-w8.safetensors",
}
EIG_TOL = 1e-6
TRACE_MATVECS = 45
MARK_BEGIN, MARK_END = "<!-- bench:begin -->", "<!-- bench:end -->"


@dataclass
class Problem:
    name: str
    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    loss: str
    label: str

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def load(name: str, samples: int | None, dtype: torch.dtype) -> Problem:
    from lscape_cli import datasets
    from lscape_cli.models.loading import load_model

    path = CHECKPOINTS[name]
    lm = load_model(path, dtype=dtype)
    meta = lm.checkpoint.meta
    root = Path(os.environ.get("LSCAPE_DATA", Path.home() / ".cache" / "lscape" / "data"))
    split = datasets.load(datasets.DatasetSpec.from_dict(meta["dataset"]), root, dtype=dtype)
    x, y = split.x["train"][:samples], split.y["train"][:samples]
    loss = meta["training"]["loss"]
    model = lm.module.eval()
    n = sum(p.numel() for p in model.parameters())
    label = f"{path.name}: {meta['model']['name']}, {loss.upper()}, {n:,} parameters, {len(y):,} images"
    return Problem(name, model, x.contiguous(), y.contiguous(), loss, label)


# ---------------------------------------------------------------------------------------------- reference


def exact_trace(p: Problem, chunk: int = 25) -> float:
    """``tr G`` from per-sample Jacobians (float64), chunk by chunk."""
    params = {n: t.detach() for n, t in p.model.named_parameters()}
    buffers = dict(p.model.named_buffers())

    def out(prm: dict[str, torch.Tensor], xi: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(p.model, (prm, buffers), (xi[None],))[0]

    jac = torch.func.vmap(torch.func.jacrev(out), in_dims=(None, 0))
    total = 0.0
    for s in range(0, len(p.y), chunk):
        xb = p.x[s : s + chunk]
        j = torch.cat([t.flatten(2) for t in jac(params, xb).values()], 2)  # (B, C, n)
        sq = j.square().sum(-1)  # (B, C): ‖J_ic‖²
        if p.loss == "mse":
            total += 2.0 * float(sq.sum())
        else:
            prob = torch.func.functional_call(p.model, (params, buffers), (xb,)).softmax(-1)
            pj = torch.einsum("bc,bcn->bn", prob, j)
            total += float((prob * sq).sum(-1).sum() - pj.square().sum())
    return total / len(p.y)


def reference(name: str, samples: int | None) -> dict[str, Any]:
    from lscape_cli.core.linalg import spectrum
    from lscape_cli.core.linalg.curvature import GGN, Curvature
    from lscape_cli.core.linalg.hvp import Objective

    cache = Path.home() / ".cache" / "lscape" / "bench-ref" / f"ggn-{name}-{samples}.json"
    if cache.exists():
        return json.loads(cache.read_text())
    t0 = time.perf_counter()
    p = load(name, samples, torch.float64)
    obj = Objective.from_module(p.model, p.x, p.y, p.loss)
    top = spectrum.lanczos(GGN(obj, Curvature("ggn")), k=1, tol=1e-10, max_iter=300, seed=123)
    ref = {
        "lambda_max": top.eigenvalues[0],
        "lambda_max_error_bound": (top.stop_estimates or top.residuals)[0] / top.eigenvalues[0],
        "trace": exact_trace(p),
        "seconds": time.perf_counter() - t0,
    }
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(ref, indent=1))
    return ref


# ---------------------------------------------------------------------------------------------- operators


class Count:
    n = 0


def lscape_op(p: Problem) -> Any:
    """The operator `lscape probe --curvature ggn` builds (memory plan included)."""
    from lscape_cli.core.linalg.curvature import GGN, Curvature
    from lscape_cli.core.linalg.hvp import Objective, plan

    obj = Objective.from_module(p.model, p.x, p.y, p.loss)
    pl = plan(obj)
    return GGN(pl.apply(obj), Curvature("ggn"), retain_chunks=pl.retain_chunks)


def curvlinops_op(p: Problem) -> Any:
    from curvlinops import GGNLinearOperator

    op = GGNLinearOperator(
        p.model, MeanLoss(p.loss), list(p.model.parameters()), [(p.x, p.y)], check_deterministic=False
    )
    orig = op._matmat

    def matmat(m: list[torch.Tensor]) -> list[torch.Tensor]:
        Count.n += m[0].shape[-1]
        return orig(m)

    op._matmat = matmat
    return op


def eigenthings_op(p: Problem) -> Any:
    import hessian_eigenthings as he

    crit = MeanLoss(p.loss)
    op = he.GGNOperator(p.model, [(p.x, p.y)], he.supervised_forward, he.supervised_loss_of_output(crit))
    orig = op.matvec

    def matvec(v: torch.Tensor) -> torch.Tensor:
        Count.n += 1
        return orig(v)

    op.matvec = matvec
    return op


def products(p: Problem, count: int, ref_dir: torch.Tensor, ref_prod: torch.Tensor) -> list[dict[str, Any]]:
    """Seconds per product (median of ``count``, interleaved) and agreement with the float64 product."""
    from lscape_cli.core.linalg.hvp import flatten, unflatten

    like = {n: t.detach() for n, t in p.model.named_parameters()}
    v = ref_dir.to(torch.float32)
    lop, cop, eop = lscape_op(p), curvlinops_op(p), eigenthings_op(p)
    fns: dict[str, Callable[[], torch.Tensor]] = {
        "lscape": lambda: flatten(lop(unflatten(v, like))),
        "curvlinops": lambda: (cop @ v[:, None])[:, 0],
        "hessian-eigenthings": lambda: eop.matvec(v),
    }
    times: dict[str, list[float]] = {k: [] for k in fns}
    outs: dict[str, torch.Tensor] = {}
    with lop:
        for i in range(count + 1):
            for k in list(fns)[i % 3 :] + list(fns)[: i % 3]:
                t0 = time.perf_counter()
                outs[k] = fns[k]().detach()
                if i > 0:  # the first round builds graphs and warms up
                    times[k].append(time.perf_counter() - t0)
    rows = []
    for k in fns:
        err = float((outs[k].double() - ref_prod).norm() / ref_prod.norm())
        rows.append({"tool": k, "seconds": statistics.median(times[k]), "relative_error": err})
    return rows


# ---------------------------------------------------------------------------------------------- tasks


def entries() -> list[tuple[str, str, str, Callable[[Problem, int], float]]]:
    """(tool, setting, task, run) with ``run(problem, seed) -> estimate``."""
    import curvlinops as cl
    import hessian_eigenthings as he
    from scipy.sparse.linalg import eigsh

    from lscape_cli.core.linalg import spectrum
    from lscape_cli.core.linalg import trace as tr

    def l_eig(p: Problem, seed: int) -> float:
        r = spectrum.lanczos(lscape_op(p), k=1, tol=EIG_TOL, seed=seed)
        Count.n += r.num_matvecs
        return r.eigenvalues[0]

    def l_trace(matvecs: int) -> Callable[[Problem, int], float]:
        def run(p: Problem, seed: int) -> float:
            Count.n += matvecs
            return tr.krylov_hutchpp(lscape_op(p), num_matvecs=matvecs, seed=seed).trace.estimate

        return run

    def c_eig(tol: float) -> Callable[[Problem, int], float]:
        def run(p: Problem, seed: int) -> float:
            return float(eigsh(curvlinops_op(p).to_scipy(), k=1, which="LA", tol=tol)[0][0])

        return run

    def c_trace(p: Problem, seed: int) -> float:
        torch.manual_seed(seed)
        return float(cl.hutchpp_trace(curvlinops_op(p), TRACE_MATVECS))

    def e_eig(steps: int | None) -> Callable[[Problem, int], float]:
        def run(p: Problem, seed: int) -> float:
            return float(he.lanczos(eigenthings_op(p), k=1, max_iter=steps, seed=seed).eigenvalues.max())

        return run

    def e_power(p: Problem, seed: int) -> float:
        return float(he.power_iteration_one(eigenthings_op(p), seed=seed)[0])

    def e_trace(p: Problem, seed: int) -> float:
        return float(
            he.trace(eigenthings_op(p), num_matvecs=TRACE_MATVECS, method="hutch++", seed=seed).estimate
        )

    return [
        ("lscape", "Lanczos, error-bound stop 1e-6 (probe default)", "lambda_max", l_eig),
        ("curvlinops", "eigsh(k=1) defaults (tol 0)", "lambda_max", c_eig(0.0)),
        ("curvlinops", "eigsh(k=1, tol=1e-6)", "lambda_max", c_eig(EIG_TOL)),
        ("hessian-eigenthings", "lanczos(k=1) defaults", "lambda_max", e_eig(None)),
        ("hessian-eigenthings", "lanczos(k=1, max_iter=30)", "lambda_max", e_eig(30)),
        ("hessian-eigenthings", "power_iteration_one defaults", "lambda_max", e_power),
        (
            "lscape",
            f"krylov-hutch++ {TRACE_MATVECS} products (probe default)",
            "trace",
            l_trace(TRACE_MATVECS),
        ),
        ("lscape", "krylov-hutch++ 30 products", "trace", l_trace(30)),
        ("lscape", "krylov-hutch++ 24 products", "trace", l_trace(24)),
        ("lscape", "krylov-hutch++ 15 products", "trace", l_trace(15)),
        ("curvlinops", f"hutchpp_trace({TRACE_MATVECS})", "trace", c_trace),
        ("hessian-eigenthings", f"trace(hutch++, {TRACE_MATVECS})", "trace", e_trace),
    ]


def run_task(p: Problem, ref: dict[str, Any], task: str, repeats: int, extra: int) -> list[dict[str, Any]]:
    """Timed interleaved rounds; for the trace also ``extra`` untimed seeds for the RMS error."""
    todo = [e for e in entries() if e[2] == task]
    rows: dict[int, dict[str, Any]] = {
        i: {"times": [], "errors": [], "products": []} for i in range(len(todo))
    }
    for r in range(repeats):
        order = list(range(len(todo)))
        order = order[r % len(order) :] + order[: r % len(order)]
        for i in order:
            seed = r if task == "trace" else 0
            Count.n = 0
            t0 = time.perf_counter()
            value = todo[i][3](p, seed)
            rows[i]["times"].append(time.perf_counter() - t0)
            rows[i]["errors"].append((value - ref[task]) / ref[task])
            rows[i]["products"].append(Count.n)
    if task == "trace":
        for seed in range(repeats, repeats + extra):
            for i, entry in enumerate(todo):
                rows[i]["errors"].append((entry[3](p, seed) - ref[task]) / ref[task])
    out = []
    for i, (tool, setting, _, _) in enumerate(todo):
        e = rows[i]["errors"]
        err = (
            math.sqrt(sum(v * v for v in e) / len(e))
            if task == "trace"
            else statistics.median(abs(v) for v in e)
        )
        out.append(
            {
                "tool": tool,
                "setting": setting,
                "seconds": statistics.median(rows[i]["times"]),
                "products": statistics.median(rows[i]["products"]),
                "error": err,
                "error_spread": statistics.stdev(e) if len(e) > 1 else None,
                "seeds": len(e),
            }
        )
    return out


# ---------------------------------------------------------------------------------------------- report


def verdict(rows: list[dict[str, Any]], target: float | None) -> str:
    """The fastest peer setting (reaching ``target``; for the trace, any) against lscape's fastest setting at
    least as accurate (reaching ``target``; for the trace, at most that peer's error)."""
    peers = [r for r in rows if r["tool"] != "lscape" and (target is None or r["error"] <= target)]
    if not peers:
        return "No peer setting reaches the target."
    peer = min(peers, key=lambda r: r["seconds"])
    bar = peer["error"] if target is None else target
    mine = [r for r in rows if r["tool"] == "lscape" and r["error"] <= bar]
    if not mine:
        return f"Fastest peer: {peer['tool']} ({peer['setting']}); no lscape setting is as accurate."
    best = min(mine, key=lambda r: r["seconds"])
    ratio = peer["seconds"] / best["seconds"]
    return (
        f"Fastest peer setting{' reaching the target' if target else ''}: {peer['tool']}, {peer['setting']} "
        f"({peer['seconds']:.3f} s, error {peer['error']:.1e}). lscape's fastest setting as accurate: "
        f"{best['setting']} ({best['seconds']:.3f} s, error {best['error']:.1e}): **{ratio:.2f}× faster**."
    )


def table(rows: list[dict[str, Any]], task: str, target: float | None) -> list[str]:
    mine = rows[0]
    err_name = "RMS relative error" if task == "trace" else "median relative error"
    lines = [
        f"| tool | setting | median s | products | {err_name} | time / lscape default's |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        mark = "" if target is None or r["error"] <= target else " (misses 1e-6)"
        lines.append(
            f"| {r['tool']} | {r['setting']} | {r['seconds']:.3f} | {r['products']:.0f} | "
            f"{r['error']:.1e}{mark} | {r['seconds'] / mine['seconds']:.2f}× |"
        )
    return [*lines, "", verdict(rows, target)]


def report(res: dict[str, Any]) -> str:
    out = [
        f"Generated by `benchmarks/bench_ggn.py` on {res['date']}: {res['machine']}; torch "
        f"{res['torch']} on CPU with {res['threads']} thread(s), float32. Load average before / after: "
        f"{res['load_before']} / {res['load_after']} (the machine is shared: times are noisy, ratios within "
        "one run are the result). Wall time {:.0f} s.".format(res["seconds"]),
    ]
    for prob in res["problems"]:
        ref = prob["reference"]
        out += [
            "",
            f"### {prob['label']}",
            "",
            f"Reference (float64): GGN λmax = {ref['lambda_max']:.8g} (Lanczos, relative error bound "
            f"{ref['lambda_max_error_bound']:.1e}); tr(G) = {ref['trace']:.8g} (exact, per-sample "
            "Jacobians).",
            "",
            "**One product** (median of the timed products; agreement with lscape's float64 product):",
            "",
            "| tool | seconds per product | relative difference to float64 | time / lscape's |",
            "|---|---|---|---|",
        ]
        base = prob["products"][0]["seconds"]
        for r in prob["products"]:
            out.append(
                f"| {r['tool']} | {r['seconds'] * 1e3:.1f} ms | {r['relative_error']:.1e} | "
                f"{r['seconds'] / base:.2f}× |"
            )
        out += ["", f"**λmax of the GGN to {EIG_TOL:g}** ({res['repeats']} rounds):", ""]
        out += table(prob["lambda_max"], "lambda_max", EIG_TOL)
        seeds = prob["trace"][0]["seeds"]
        out += [
            "",
            f"**tr(G)** ({res['repeats']} timed rounds, a new seed each; RMS error over {seeds} seeds, the "
            "timed ones and untimed others):",
            "",
        ]
        out += table(prob["trace"], "trace", None)
    return "\n".join(out)


def write_doc(path: Path, text: str) -> None:
    doc = path.read_text() if path.exists() else f"# GGN benchmark\n\n{MARK_BEGIN}\n{MARK_END}\n"
    head, rest = doc.split(MARK_BEGIN, 1)
    tail = rest.split(MARK_END, 1)[1]
    path.write_text(f"{head}{MARK_BEGIN}\n{text}\n{MARK_END}{tail}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="mlp,cnn")
    ap.add_argument("--cnn-samples", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--products", type=int, default=10, help="timed products per operator")
    ap.add_argument("--error-seeds", type=int, default=15, help="untimed extra seeds for the trace error")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--write", default="-", help="markdown file to update between the markers ('-': none)")
    ap.add_argument("--json", type=Path, default=None, help="write every number here")
    ap.add_argument("--render", type=Path, default=None, help="only re-render the tables of a --json file")
    args = ap.parse_args()
    if args.render is not None:
        text = report(json.loads(args.render.read_text()))
        print(text)
        if args.write != "-":
            write_doc(Path(args.write), text)
        return
    import warnings

    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    res: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "machine": f"{cpu_name()}, {os.cpu_count()} logical CPUs",
        "torch": torch.__version__,
        "threads": args.threads,
        "repeats": args.repeats,
        "load_before": [round(v, 2) for v in os.getloadavg()],
        "problems": [],
    }
    for name in args.models.split(","):
        samples = args.cnn_samples if name == "cnn" else None
        ref = reference(name, samples)
        p = load(name, samples, torch.float32)
        print(f"{p.label}: reference {ref}", file=sys.stderr, flush=True)
        from lscape_cli.core.linalg.curvature import GGN, Curvature
        from lscape_cli.core.linalg.hvp import Objective, flatten, unflatten

        p64 = load(name, samples, torch.float64)
        obj64 = Objective.from_module(p64.model, p64.x, p64.y, p64.loss)
        direction = torch.randn(p.n_params, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
        ref_prod = flatten(GGN(obj64, Curvature("ggn"))(unflatten(direction, obj64.params)))
        prob = {
            "label": p.label,
            "reference": ref,
            "products": products(p, args.products, direction, ref_prod),
        }
        for task in ("lambda_max", "trace"):
            prob[task] = run_task(p, ref, task, args.repeats, args.error_seeds)
            print(json.dumps(prob[task], indent=1), file=sys.stderr, flush=True)
        res["problems"].append(prob)
    res["load_after"] = [round(v, 2) for v in os.getloadavg()]
    res["seconds"] = time.perf_counter() - t0
    text = report(res)
    print(text)
    if args.json is not None:
        args.json.write_text(json.dumps(res, indent=1))
    if args.write != "-":
        write_doc(Path(args.write), text)


if __name__ == "__main__":
    main()
