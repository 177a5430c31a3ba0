"""Scale benchmark: one Hessian-vector product from 10k to 25M parameters, lscape against its floor and peers.

Run it in the benchmark environment (never install the peers into the main one), e.g.
``PYTHONPATH=. $BENCH_VENV/bin/python benchmarks/bench_scale.py --write docs/bench-scale.md``.

Models (random inputs and labels, fixed seed, cross-entropy over 10 classes, eval mode):

- ``mlp-10k``: 784 -> 12 -> 10 (9.6k parameters) on 256 MNIST-shaped images;
- ``cnn-200k``: lscape's SimpleCNN (width 32, hidden 128) on 256 MNIST-shaped images;
- ``transformer-10m``: a linear embedding of 16 continuous 32-feature tokens into
  ``nn.TransformerEncoder`` (d_model 512, 8 heads, 3 layers, feed-forward 2048), mean-pooled, linear head,
  on 64 sequences; attention through the math SDPA kernel (it has a double backward);
- ``resnet18-11m``: torchvision's ResNet-18 (10 classes) on 256 CIFAR-sized images;
- ``mlp-25m``: 784 -> 3300 -> 3300 -> 3300 -> 10 on 256 MNIST-shaped images.

Per model, in one process and interleaved over ``--repeats`` rounds (median CPU seconds per product of
the one-thread process: on a shared machine, wall time adds whatever the other jobs take):

- ``gradient``: loss and gradient;
- ``double backward``: the plain autograd HVP, a gradient graph built and used once per product;
- ``retained graph``: a backward pass through a gradient graph built once (what PyHessian does);
- ``lscape``: :class:`lscape_cli.core.linalg.hvp.HVP` with the memory plan ``lscape probe`` uses (chunking
  and kept graphs from :func:`lscape_cli.core.linalg.hvp.plan`), graph built once;
- ``pyhessian``: PyHessian 0.1's product (``hessian_vector_product`` through its kept graph);
- ``curvlinops``: curvlinops' ``HessianLinearOperator @ v``.

Each model runs in its own subprocess so ``peak RSS`` is that model's process (data, model, the kept
graphs of lscape, PyHessian and the retained-graph floor, and the vectors). With ``--eig`` the ResNet-18
row also runs λmax at relative tolerance 1e-4: lscape's Lanczos (``lscape probe``'s settings: bound
stop, one more product for the true residual) and PyHessian's power iteration (its ``tol`` is a
relative change), each with its CPU time, products, and the residual ``‖Hv − λv‖`` (which bounds the
distance to an eigenvalue) computed with one more retained-graph product.

Torch runs with one thread; the load average before and after is printed with the tables.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import cpu_name  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("mlp-10k", "cnn-200k", "transformer-10m", "resnet18-11m", "mlp-25m")
METHODS = ("gradient", "double backward", "retained graph", "lscape", "pyhessian", "curvlinops")
TRACE_PRODUCTS = 30  # products for each trace estimate (lscape's default splits them 20 Lanczos + 10 probes)
MARK_BEGIN, MARK_END = "<!-- bench:begin -->", "<!-- bench:end -->"


class Encoder(nn.Module):
    """Continuous tokens -> linear embedding -> TransformerEncoder -> mean pool -> linear head."""

    def __init__(self, features: int = 32, d_model: int = 512, layers: int = 3) -> None:
        super().__init__()
        self.embed = nn.Linear(features, d_model)
        layer = nn.TransformerEncoderLayer(d_model, 8, 2048, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, T, features) -> (N, 10)
        """Logits."""
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel(SDPBackend.MATH):  # the fused CPU kernels have no double backward
            return self.head(self.encoder(self.embed(x)).mean(dim=1))


def problem(name: str) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The model (eval mode, oneDNN guard as lscape builds it) and a fixed random batch."""
    from lscape_cli.models import CNNConfig, SimpleCNN
    from lscape_cli.runtime import guard_onednn

    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    mnist = (256, 1, 28, 28)
    if name == "mlp-10k":
        model: nn.Module = nn.Sequential(nn.Flatten(), nn.Linear(784, 12), nn.ReLU(), nn.Linear(12, 10))
        shape = mnist
    elif name == "cnn-200k":
        model, shape = SimpleCNN(CNNConfig(width=32, hidden=128)), mnist
    elif name == "transformer-10m":
        model, shape = Encoder(), (64, 16, 32)
    elif name == "resnet18-11m":
        import torchvision

        model, shape = torchvision.models.resnet18(num_classes=10), (256, 3, 32, 32)
    else:
        widths = [784, 3300, 3300, 3300]
        layers: list[nn.Module] = [nn.Flatten()]
        for a, b in zip(widths, widths[1:], strict=False):
            layers += [nn.Linear(a, b), nn.ReLU()]
        model, shape = nn.Sequential(*layers, nn.Linear(widths[-1], 10)), mnist
    guard_onednn(model)
    x = torch.randn(shape, generator=gen)
    return model.eval(), x, torch.randint(0, 10, (shape[0],), generator=gen)


def _timed(fn: Callable[[], Any]) -> float:
    """CPU seconds of this one-thread process: what a call costs, without the waits a loaded machine adds."""
    start = time.process_time()
    fn()
    return time.process_time() - start


def measure(name: str, repeats: int, eig: bool) -> dict[str, Any]:
    """Every method on one model, interleaved over ``repeats`` rounds after a warm-up call.

    A round calls each method often enough to take about 0.2 s (small models) and keeps the mean.
    """
    from lscape_cli.core.linalg.hvp import HVP, Objective, gaussian, plan

    model, x, y = problem(name)
    obj = Objective.from_module(model, x, y, "ce")
    chunking = plan(obj)
    params = list(obj.params.values())
    v = gaussian(obj.params, torch.Generator().manual_seed(1))
    vl = list(v.values())
    leaves = [p.detach().requires_grad_(True) for p in params]
    names = list(obj.params)

    def loss() -> torch.Tensor:
        return obj.chunk_loss(dict(zip(names, leaves, strict=True)), x, y)

    def double_backward() -> None:
        g = torch.autograd.grad(loss(), leaves, create_graph=True)
        torch.autograd.grad(g, leaves, vl)

    graph_build = _timed(lambda: torch.autograd.grad(loss(), leaves, create_graph=True))
    kept = torch.autograd.grad(loss(), leaves, create_graph=True)
    peers = _peers(model, x, y, v)
    op = HVP(chunking.apply(obj), retain_chunks=chunking.retain_chunks)
    op.__enter__()
    build = _timed(lambda: op(v))
    runs: dict[str, Callable[[], Any]] = {
        "gradient": lambda: torch.autograd.grad(loss(), leaves),
        "double backward": double_backward,
        "retained graph": lambda: torch.autograd.grad(kept, leaves, vl, retain_graph=True),
        "lscape": lambda: op(v),
        **peers,
    }
    times: dict[str, list[float]] = {k: [] for k in runs}
    calls = {k: max(1, min(200, int(0.2 / _timed(fn)))) for k, fn in runs.items()}  # warm-up: >= 0.2 s
    for r in range(repeats):
        order = list(runs)[r % len(runs) :] + list(runs)[: r % len(runs)]  # rotate the order each round
        for k in order:
            times[k].append(_timed(lambda k=k: [runs[k]() for _ in range(calls[k])]) / calls[k])
    out: dict[str, Any] = {
        "model": name,
        "params": sum(p.numel() for p in params),
        "samples": int(y.shape[0]),
        "seconds": {k: statistics.median(t) for k, t in times.items()},
        "lscape_first_product": build,
        "graph_build": graph_build,
        "plan": chunking.to_dict(),
    }
    if eig:
        out["eig"] = _eig(obj, op, kept, leaves, model, x, y)
        out["trace"] = _trace(op, model, x, y, TRACE_PRODUCTS)
    op.__exit__(None, None, None)
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def _peers(model: nn.Module, x: torch.Tensor, y: torch.Tensor, v: dict[str, torch.Tensor]) -> dict[str, Any]:
    """PyHessian's and curvlinops' products on the same model and batch (missing peers are skipped)."""
    runs: dict[str, Callable[[], Any]] = {}
    vl = list(v.values())
    try:
        from pyhessian import hessian
        from pyhessian.utils import hessian_vector_product

        ph = hessian(model, nn.CrossEntropyLoss(), data=(x, y), cuda=False)
        runs["pyhessian"] = lambda: hessian_vector_product(ph.gradsH, ph.params, vl)
    except ImportError:
        pass
    try:
        from curvlinops import HessianLinearOperator

        ps = [p for p in model.parameters() if p.requires_grad]
        cl = HessianLinearOperator(model, nn.CrossEntropyLoss(), ps, [(x, y)])
        flat = torch.cat([t.flatten() for t in vl])
        runs["curvlinops"] = lambda: cl @ flat
    except ImportError:
        pass
    return runs


def _residual(kept: Any, leaves: list[torch.Tensor], vec: list[torch.Tensor], lam: float) -> float:
    """``‖Hv − λv‖ / ‖v‖`` with one retained-graph product."""
    hv = torch.autograd.grad(kept, leaves, vec, retain_graph=True)
    num = sum(float((a - lam * b).double().pow(2).sum()) for a, b in zip(hv, vec, strict=True))
    den = sum(float(b.double().pow(2).sum()) for b in vec)
    return (num / den) ** 0.5


class _TimedOperator:
    """The operator ``lanczos`` and the trace estimators see, timing each product (CPU seconds)."""

    def __init__(self, op: Any) -> None:
        self.op, self.products = op, []  # type: list[float]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.op, name)

    def __call__(self, v: Any) -> Any:
        start = time.process_time()
        out = self.op(v)
        self.products.append(time.process_time() - start)
        return out

    def hvp_many(self, vs: list[Any]) -> list[Any]:
        """Products of a group, one at a time (timed)."""
        return [self(v) for v in vs]

    def __enter__(self) -> _TimedOperator:
        self.op.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.op.__exit__(*exc)

    def split(self, total: float) -> dict[str, float]:
        """Where ``total`` CPU seconds went: first product (graph build + product), later products, rest."""
        first, later = (self.products[0], sum(self.products[1:])) if self.products else (0.0, 0.0)
        return {"first_product": first, "later_products": later, "vector_work": total - first - later}


def _eig(obj: Any, op: Any, kept: Any, leaves: list[torch.Tensor], model: nn.Module, x: Any, y: Any) -> Any:
    """λmax to 1e-4: lscape's Lanczos and PyHessian's power iteration, wall time and residual."""
    from lscape_cli.core.linalg import spectrum

    out: dict[str, Any] = {}
    op.close()  # lscape's run builds its own graph, as lscape probe does
    timed = _TimedOperator(op)
    start, count = time.process_time(), op.num_matvecs
    res = spectrum.lanczos(timed, tol=1e-4, max_iter=200, seed=0, true_residuals=True, eigenvectors=True)
    wall = time.process_time() - start
    vec = list(res.eigenvectors[0].values())  # type: ignore[index]
    out["lscape"] = {
        "lambda_max": res.eigenvalues[0],
        "products": op.num_matvecs - count,
        "seconds": wall,
        "residual": _residual(kept, leaves, vec, res.eigenvalues[0]),
        "vector_memory": res.vector_memory,
        "split": timed.split(wall),
    }
    out["lscape probe"] = _probe_eig(obj, op, kept, leaves)
    try:
        from pyhessian import hessian
    except ImportError:
        return out
    ph = hessian(model, nn.CrossEntropyLoss(), data=(x, y), cuda=False)
    torch.manual_seed(0)
    start = time.process_time()
    values, vectors = ph.eigenvalues(maxIter=200, tol=1e-4, top_n=1)
    wall = time.process_time() - start
    out["pyhessian"] = {
        "lambda_max": float(values[0]),
        "seconds": wall,
        "residual": _residual(kept, leaves, [t.detach() for t in vectors[0]], float(values[0])),
    }
    return out


def _probe_eig(obj: Any, op: Any, kept: Any, leaves: list[torch.Tensor]) -> dict[str, Any]:
    """λmax as a float32 ``lscape probe --lambda-max`` computes it: the same Lanczos run plus the bound's
    rounding, one float64 product on the Ritz vector (a float64 copy of model and data, no kept graph),
    which is also the run's whole ``rounding`` record (``vectors: ritz``). Its time is in ``seconds``;
    ``reference_seconds`` is that float64 product alone."""
    from lscape_cli.core.linalg import rounding, spectrum
    from lscape_cli.core.linalg.hvp import HVP

    op.close()
    timed = _TimedOperator(op)
    ref = _TimedOperator(HVP(rounding.cast(obj, torch.float64), "double_backward", retain_chunks=0))
    start, count = time.process_time(), op.num_matvecs
    res = spectrum.lanczos(
        timed, tol=1e-4, max_iter=200, seed=0, true_residuals=True, eigenvectors=True, reference=ref
    )
    wall = time.process_time() - start
    vec = list(res.eigenvectors[0].values())  # type: ignore[index]
    return {
        "lambda_max": res.eigenvalues[0],
        "products": op.num_matvecs - count,
        "seconds": wall,
        "reference_seconds": sum(ref.products),
        "residual": _residual(kept, leaves, vec, res.eigenvalues[0]),
        "rounding": (res.rounding or [None])[0],
        "split": timed.split(wall - sum(ref.products)),
    }


def _trace(op: Any, model: nn.Module, x: Any, y: Any, products: int) -> dict[str, Any]:
    """``tr(H)`` with the same number of products: lscape's estimators and PyHessian's Hutchinson.

    Each reports its standard error; PyHessian's is that of its Rademacher samples (``std / √m``), so the
    products a method would need for the standard error of lscape's default (krylov-hutch++) are
    ``m · (se / se_krylov)²`` (a standard error falls as ``1/√m``).
    """
    from lscape_cli.core.linalg import trace

    out: dict[str, Any] = {}
    for method in ("krylov-hutch++", "hutchinson"):  # lscape's default, and the peers' estimator
        op.close()
        timed = _TimedOperator(op)
        start = time.process_time()
        res = trace.TRACE_METHODS[method](timed, num_matvecs=products, seed=0)
        wall = time.process_time() - start
        out[f"lscape {method}"] = {
            "method": method,
            "trace": res.trace.estimate,
            "stderr": res.trace.stderr,
            "products": len(timed.products),
            "seconds": wall,
            "split": timed.split(wall),
        }
    try:
        from pyhessian import hessian
    except ImportError:
        return out
    start = time.process_time()
    ph = hessian(model, nn.CrossEntropyLoss(), data=(x, y), cuda=False)  # its graph: part of its cost
    torch.manual_seed(0)
    samples = torch.tensor(ph.trace(maxIter=products, tol=float("-inf")), dtype=torch.float64)
    wall = time.process_time() - start
    out["pyhessian"] = {
        "method": "hutchinson",
        "trace": float(samples.mean()),
        "stderr": float(samples.std() / len(samples) ** 0.5),
        "products": len(samples),
        "seconds": wall,
    }
    return out


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown: seconds per product and ratios to the retained-graph floor, one row per model."""
    head = "| model | parameters | samples | " + " | ".join(METHODS) + " | lscape / floor | peak RSS |"
    lines = [head, "|" + "---|" * (len(METHODS) + 5)]
    for row in rows:
        sec, floor = row["seconds"], row["seconds"]["retained graph"]
        cells = [f"{sec[k]:.4g} s ({sec[k] / floor:.2f}×)" if k in sec else "—" for k in METHODS]
        lines.append(
            f"| {row['model']} | {row['params']:,} | {row['samples']} | "
            + " | ".join(cells)
            + f" | **{sec['lscape'] / floor:.2f}** | {row['peak_rss_mib']:,.0f} MiB |"
        )
    return "\n".join(lines)


def eig_table(row: dict[str, Any]) -> str:
    """Markdown: λmax to 1e-4 on one model, lscape against PyHessian and against its floor.

    The floor of a run of ``p`` products is ``build + p × product``: one gradient graph built with
    ``create_graph`` (which every method pays once, PyHessian included) and ``p`` backward passes through
    it; ``p × product`` alone is shown too.
    """
    floor, build = row["seconds"]["retained graph"], row["graph_build"]
    lines = [
        "| tool | λmax | ‖Hv − λv‖ | products | CPU time | build + products × floor | time / that "
        "| time / (products × floor) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for tool, r in row["eig"].items():
        p = r.get("products")
        ideal = build + p * floor if p else None
        lines.append(
            f"| {tool} | {r['lambda_max']:.6g} | {r['residual']:.2g} | {p or 'n/a'} | {r['seconds']:.1f} s | "
            + (
                f"{ideal:.1f} s | {r['seconds'] / ideal:.3f} | {r['seconds'] / (p * floor):.3f} |"
                if p
                else "n/a | n/a | n/a |"
            )
        )
    return "\n".join(lines)


def split_line(row: dict[str, Any]) -> str:
    """Where lscape's λmax and trace runs spent their CPU time."""
    parts = []
    for key, tool, what in (
        ("eig", "lscape", "λmax"),
        ("trace", "lscape krylov-hutch++", "trace (krylov-hutch++)"),
        ("trace", "lscape hutchinson", "trace (hutchinson)"),
    ):
        sp = row.get(key, {}).get(tool, {}).get("split")
        if sp:
            parts.append(
                f"{what}: first product {sp['first_product']:.2f} s, later products "
                f"{sp['later_products']:.2f} s, vector work and the rest {sp['vector_work']:.2f} s"
            )
    probe = row.get("eig", {}).get("lscape probe")
    if probe:
        parts.append(
            f"λmax as a float32 `lscape probe` runs it: the same plus {probe['reference_seconds']:.2f} s for "
            f"the bound's float64 product on the Ritz vector (rounding {probe['rounding']:.2g})"
        )
    return (
        f"Graph build (forward + create_graph backward) {row['graph_build']:.2f} s; lscape's CPU time, "
        + "; ".join(parts)
        + "."
    )


def trace_table(row: dict[str, Any]) -> str:
    """Markdown: tr(H) with the same products; PyHessian's products and time at lscape's standard error."""
    lines = [
        "| tool | method | tr(H) | stderr | products | CPU time | products for krylov-hutch++'s stderr "
        "| CPU time at that stderr |",
        "|---|---|---|---|---|---|---|---|",
    ]
    se = row["trace"]["lscape krylov-hutch++"]["stderr"]
    for tool, r in row["trace"].items():
        need = r["products"] * (r["stderr"] / se) ** 2
        at = r["seconds"] * need / r["products"]
        lines.append(
            f"| {tool} | {r['method']} | {r['trace']:.6g} | {r['stderr']:.3g} | {r['products']} | "
            f"{r['seconds']:.1f} s | {need:.0f} | {at:.1f} s |"
        )
    return "\n".join(lines)


def main() -> None:
    """Run every model in its own subprocess (or one model with ``--one``) and print or write tables."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--eig", action="store_true", help="also λmax to 1e-4 and tr(H) on --eig-model")
    ap.add_argument("--eig-model", default="resnet18-11m")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--write", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.one:
        print(json.dumps(measure(args.one, args.repeats, args.eig and args.one == args.eig_model)))
        return
    load = os.getloadavg()
    rows = []
    for name in args.models.split(","):
        cmd = [sys.executable, __file__, "--one", name, "--repeats", str(args.repeats)]
        cmd += ["--eig", "--eig-model", args.eig_model] if args.eig else []
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    text = [
        f"torch {torch.__version__}, oneDNN on, one thread, {cpu_name()}; load average "
        f"{load[0]:.1f} before, {os.getloadavg()[0]:.1f} after; CPU seconds per product, median of "
        f"{args.repeats} interleaved rounds (ratio to the retained-graph floor in brackets).",
        "",
        table(rows),
    ]
    for r in rows:
        if "eig" in r:
            text += ["", f"λmax to 1e-4 on {r['model']}:", "", eig_table(r)]
        if "trace" in r:
            text += ["", f"tr(H) on {r['model']}, {TRACE_PRODUCTS} products each:", "", trace_table(r)]
        if "eig" in r or "trace" in r:
            text += ["", split_line(r)]
    out = "\n".join(text)
    print(out)
    if args.write:
        doc = args.write.read_text()
        start, end = doc.index(MARK_BEGIN) + len(MARK_BEGIN), doc.index(MARK_END)
        args.write.write_text(doc[:start] + "\n" + out + "\n" + doc[end:])


if __name__ == "__main__":
    main()
