"""Curvature benchmark: lscape against PyHessian, hessian-eigenthings and curvlinops.

Run it with ``make bench`` (it builds a separate environment with the peers pinned in
requirements/bench.txt; never install them into the main one). What it does:

1. Loads seed 000's MLP (``sample_checkpoints/mlp-d4-r000.safetensors``: depth 4, width 48, MSE) and a
   SimpleCNN (``--cnn train``: trained here in a temporary directory with ``lscape train --model cnn
   --width 16 --hidden 64 ...``, 2 epochs, ~6 s; ``--cnn sample``: ``sample_checkpoints/cnn-w8``), and
   the training images each checkpoint's metadata names (mnist-5k, 4,000 images; the CNN uses the first
   ``--cnn-samples`` of them, see "Budget" below).
2. Computes a float64 reference once per checkpoint and caches it (``~/.cache/lscape/bench-ref``):
   λ1..λ3 by lscape's Lanczos at tol 1e-10 (Ritz residuals ~1e-12 relative), tr(H) and ‖H‖_F by
   Hutch++ with ``--ref-matvecs`` float64 products (its standard error is printed with the table).
3. For each task (λmax, top-3, trace + ‖H‖_F, SLQ density with 100 Lanczos steps) runs lscape and every
   peer that can do the task, in float32 with 2 threads, in this one process, interleaved (the order
   rotates each round), ``--repeats`` rounds (``--trace-repeats`` for the trace, whose error is random),
   and reports the median time, the Hessian-vector products (HVPs) counted at the operator, and the
   relative error against the reference (for the trace: the RMS over rounds, each round a new seed).
   Each peer runs with its defaults and with the cheapest configuration that reaches the target on this
   model (found from its own iterates; see ``calibrate``), so the comparison is the most generous to
   the peers that we could make.
4. Measures peak memory of every (tool, configuration, task) in a fresh subprocess: after loading the
   model and data and one warm-up forward/backward, it resets the kernel's RSS high-water mark
   (``/proc/self/clear_refs`` = 5) and reports VmHWM minus the RSS before the call. glibc's dynamic
   mmap threshold is pinned (``MALLOC_MMAP_THRESHOLD_``) so freed tensors go back to the kernel and RSS
   tracks live memory rather than the allocator's free lists. (tracemalloc does not see torch's CPU
   allocations; getrusage's maxrss cannot be reset and would include the setup.)
5. Prints markdown tables and replaces the text between the ``<!-- bench:begin -->`` /
   ``<!-- bench:end -->`` markers of ``--write`` (default docs/benchmarks.md; ``--write -``: nothing).

Budget: the whole run should stay near 10 minutes on the 2-core CPU machine. One HVP of the width-16
CNN on all 4,000 images costs 1-2 s there (versus ~12 ms for the MLP), so the CNN runs on a subset
(``--cnn-samples``, 256 images by default) and only λmax and the trace (``--cnn-tasks``). Tasks timed
while other processes used more than ``--max-foreign-load`` cores are timed again (``--retries``).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import hashlib
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
MLP_CKPT = ROOT / "sample_checkpoints" / "mlp-d4-r000.safetensors"
CNN_SAMPLE = ROOT / "sample_checkpoints" / "cnn-w8.safetensors"
CNN_TRAIN = [
    "train",
    "--model",
    "cnn",
    "--width",
    "16",
    "--hidden",
    "64",
    "--dataset",
    "mnist-5k",
    "--epochs",
    "2",
    "--optimizer",
    "sgd",
    "--lr",
    "0.01",
    "--momentum",
    "0.9",
    "--device",
    "cpu",
    "--quiet",
    "--name",
    "cnn",
]
TASKS = ("lambda_max", "top3", "trace", "density")
TASK_TITLES = {
    "lambda_max": "λmax to 1e-6 relative",
    "top3": "top-3 eigenvalues to 1e-6 relative",
    "trace": "trace (and ‖H‖_F) at the error of curvlinops' Hutch++ with 45 HVPs",
    "density": "SLQ spectral density, one run of 100 Lanczos steps",
}
EIG_TARGET = 1e-6
TRACE_MATVECS = 45
# lscape's Krylov-deflated Hutch++ reaches the error curvlinops' Hutch++ has with 45 products with 30
# (20 Lanczos steps + 10 probes): the row the trace target is judged on. Its 45-product setting (the
# probe default) and plain Hutch++ are shown beside it.
LSCAPE_TRACE_MATVECS = 30
TRACE_ERROR_KEYS = ("lscape-trace", "lscape-trace-45", "cl-hutchpp")  # also run on --trace-error-seeds
SLQ_STEPS = 100
MARK_BEGIN, MARK_END = "<!-- bench:begin -->", "<!-- bench:end -->"


# ---------------------------------------------------------------------------------------------------------
# The problem: one checkpoint, its data, and the loss every tool differentiates.


def data_root() -> Path:
    env = os.environ.get("LSCAPE_DATA")
    return Path(env) if env else Path.home() / ".cache" / "lscape" / "data"


def mean_loss(out: torch.Tensor, y: torch.Tensor, kind: str) -> torch.Tensor:
    """The checkpoint's loss, mean over samples (lscape's convention; MSE sums over the outputs)."""
    if kind == "ce":
        return F.cross_entropy(out, y)
    return (out - F.one_hot(y, out.shape[-1]).to(out.dtype)).pow(2).sum(-1).mean()


class MeanLoss(nn.Module):
    """The same loss as a module with ``reduction="mean"`` (curvlinops reads that attribute)."""

    reduction = "mean"

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def forward(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return mean_loss(out, y, self.kind)


@dataclass
class Problem:
    name: str
    path: Path
    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    loss: str
    label: str

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def crit(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return mean_loss(out, y, self.loss)

    def clear_grads(self) -> None:
        for p in self.model.parameters():
            p.grad = None


def load_problem(name: str, path: Path, samples: int | None, dtype: torch.dtype = torch.float32) -> Problem:
    from lscape_cli import datasets
    from lscape_cli.models.loading import load_model

    lm = load_model(path, dtype=dtype)
    meta = lm.checkpoint.meta
    splits = datasets.load(datasets.DatasetSpec.from_dict(meta["dataset"]), data_root(), dtype=dtype)
    x, y = splits.x["train"], splits.y["train"]
    if samples is not None:
        x, y = x[:samples], y[:samples]
    cfg = meta["model"]["config"]
    if meta["model"]["name"] == "mlp":
        arch = f"MLP depth {cfg['depth']} width {cfg['width']}"
    else:
        arch = f"SimpleCNN width {cfg['width']} hidden {cfg['hidden']}"
    loss = meta["training"]["loss"]
    p = Problem(name, path, lm.module, x.contiguous(), y.contiguous(), loss, "")
    p.label = (
        f"{arch}, {loss.upper()}, {p.n_params:,} parameters, {x.shape[0]:,} {meta['dataset']['name']} "
        f"training images ({path.name})"
    )
    return p


# ---------------------------------------------------------------------------------------------------------
# Reference values (float64, cached).


def file_sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def reference(path: Path, samples: int | None, ref_matvecs: int, need_min: bool) -> dict[str, Any]:
    """λ1..3, tr(H), ‖H‖_F (and λmin roughly, for curvlinops' density boundaries) in float64, cached."""
    from lscape_cli.core.linalg import spectrum
    from lscape_cli.core.linalg import trace as tr
    from lscape_cli.core.linalg.hvp import HVP, Objective

    cache = Path.home() / ".cache" / "lscape" / "bench-ref" / f"{file_sha(path)}-{samples}-{ref_matvecs}.json"
    ref = json.loads(cache.read_text()) if cache.exists() else {}
    if "trace" in ref and (not need_min or "lambda_min_approx" in ref):
        return ref
    t0 = time.perf_counter()
    p = load_problem("ref", path, samples, torch.float64)
    obj = Objective.from_module(p.model, p.x, p.y, p.loss)
    if "trace" not in ref:
        top = spectrum.lanczos(HVP(obj), k=3, which="largest", tol=1e-10, max_iter=300, seed=123)
        tf = tr.hutchpp(HVP(obj), num_matvecs=ref_matvecs, seed=123)
        ref.update(
            {
                "eigenvalues": top.eigenvalues,
                "eigen_relative_residuals": top.relative_residuals,
                "eigen_matvecs": top.num_matvecs,
                "trace": tf.trace.estimate,
                "trace_stderr": tf.trace.stderr,
                "frobenius": tf.frobenius.estimate,
                "frobenius_stderr": tf.frobenius.stderr,
                "trace_matvecs": ref_matvecs,
            }
        )
    if need_min and "lambda_min_approx" not in ref:
        bottom = spectrum.lanczos(HVP(obj), k=1, which="smallest", tol=1e-3, max_iter=150, seed=123)
        ref["lambda_min_approx"] = bottom.eigenvalues[0]
    ref["seconds"] = ref.get("seconds", 0.0) + time.perf_counter() - t0
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(ref, indent=1))
    return ref


# ---------------------------------------------------------------------------------------------------------
# HVP counting at each peer's operator (a Python call per product: negligible).


class Counter:
    n = 0


def _pyhessian_module() -> Any:
    import pyhessian  # noqa: F401  (the package's __init__ shadows the module name with the class)

    return sys.modules["pyhessian.hessian"]


def install_pyhessian_counter() -> None:
    mod = _pyhessian_module()
    if getattr(mod, "_bench_counted", False):
        return
    orig = mod.hessian_vector_product

    def counted(gradsH: Any, params: Any, v: Any) -> Any:  # noqa: N803
        Counter.n += 1
        return orig(gradsH, params, v)

    mod.hessian_vector_product = counted
    mod._bench_counted = True


def eigenthings_op(p: Problem) -> Any:
    import hessian_eigenthings as he

    op = he.HessianOperator(p.model, [(p.x, p.y)], he.supervised_loss(p.crit))
    orig = op.matvec

    def matvec(v: torch.Tensor) -> torch.Tensor:
        Counter.n += 1
        return orig(v)

    op.matvec = matvec
    return op


def curvlinops_op(p: Problem, check: bool = False) -> Any:
    from curvlinops import HessianLinearOperator

    op = HessianLinearOperator(
        p.model, MeanLoss(p.loss), list(p.model.parameters()), [(p.x, p.y)], check_deterministic=check
    )
    orig = op._matmat

    def matmat(m: list[torch.Tensor]) -> list[torch.Tensor]:
        Counter.n += m[0].shape[-1]
        return orig(m)

    op._matmat = matmat
    return op


_PLANS: dict[int, Any] = {}  # one memory plan per problem, as `lscape probe` makes once per run


def lscape_op(p: Problem) -> Any:
    """The operator `lscape probe` builds: chunked and retained by the measured memory plan."""
    from lscape_cli.core.linalg.hvp import HVP, Objective, plan

    obj = Objective.from_module(p.model, p.x, p.y, p.loss)
    pl = _PLANS.setdefault(id(p), plan(obj))
    return HVP(pl.apply(obj), retain_chunks=pl.retain_chunks)


# ---------------------------------------------------------------------------------------------------------
# Entries: one (tool, configuration, task) each. ``run`` returns the estimate; HVPs are counted outside.


@dataclass
class Entry:
    key: str
    tool: str
    config: str
    task: str
    kind: str  # "lscape" (judged), "variant" (other lscape settings), "tuned" (what a user would set for
    # the target), "oracle" (hindsight), "default"
    run: Callable[[Problem, int], dict[str, Any]]
    once: bool = False  # too slow to repeat: one timed run
    memory: bool = True
    cnn: bool = True  # also on the CNN
    memory_like: str | None = None  # same code path as this entry (more iterations): its memory is shown


def lscape_entries(c: dict[str, Any]) -> list[Entry]:
    from lscape_cli.core.linalg import density, spectrum
    from lscape_cli.core.linalg import trace as tr

    def eig(k: int, stop: str) -> Callable[[Problem, int], dict[str, Any]]:
        def run(p: Problem, seed: int) -> dict[str, Any]:
            r = spectrum.lanczos(lscape_op(p), k=k, tol=EIG_TARGET, seed=seed, stop=stop)
            return {"eigenvalues": r.eigenvalues, "hvps": r.num_matvecs}

        return run

    def trace(method: str, matvecs: int) -> Callable[[Problem, int], dict[str, Any]]:
        def run(p: Problem, seed: int) -> dict[str, Any]:
            r = tr.TRACE_METHODS[method](lscape_op(p), num_matvecs=matvecs, seed=seed)
            return {"trace": r.trace.estimate, "frobenius": r.frobenius.estimate, "hvps": matvecs}

        return run

    def slq(p: Problem, seed: int) -> dict[str, Any]:
        d = density.slq(lscape_op(p), num_runs=1, num_steps=SLQ_STEPS, seed=seed)
        density.density_curve(d)
        return {"top_node": float(d.nodes.max()), "hvps": d.num_matvecs}

    bound = "Lanczos, error-bound stop min(r, r²/gap) ≤ 1e-6·λ (probe default)"
    residual = "Lanczos, residual stop r ≤ 1e-6·λ (--stop residual)"
    return [
        Entry("lscape-lmax", "lscape", bound, "lambda_max", "lscape", eig(1, "bound")),
        Entry("lscape-lmax-res", "lscape", residual, "lambda_max", "variant", eig(1, "residual"), cnn=False),
        Entry(
            "lscape-top3",
            "lscape",
            bound.replace("Lanczos", "Lanczos k=3"),
            "top3",
            "lscape",
            eig(3, "bound"),
        ),
        Entry(
            "lscape-top3-res",
            "lscape",
            residual.replace("Lanczos", "Lanczos k=3"),
            "top3",
            "variant",
            eig(3, "residual"),
            cnn=False,
        ),
        Entry(
            "lscape-trace",
            "lscape",
            f"krylov-hutch++ {LSCAPE_TRACE_MATVECS} HVPs (20 Lanczos + 10 probes) → trace and ‖H‖_F",
            "trace",
            "lscape",
            trace("krylov-hutch++", LSCAPE_TRACE_MATVECS),
        ),
        Entry(
            "lscape-trace-45",
            "lscape",
            f"krylov-hutch++ {TRACE_MATVECS} HVPs (probe default)",
            "trace",
            "variant",
            trace("krylov-hutch++", TRACE_MATVECS),
        ),
        Entry(
            "lscape-hutchpp",
            "lscape",
            f"Hutch++ {TRACE_MATVECS} HVPs (--trace-method hutch++)",
            "trace",
            "variant",
            trace("hutch++", TRACE_MATVECS),
            cnn=False,
        ),
        Entry(
            "lscape-slq", "lscape", f"slq 1 run × {SLQ_STEPS} steps, full reorth.", "density", "lscape", slq
        ),
    ]


def eigenthings_entries(c: dict[str, Any]) -> list[Entry]:
    import hessian_eigenthings as he

    def power(k: int, max_iter: int) -> Callable[[Problem, int], dict[str, Any]]:
        def run(p: Problem, seed: int) -> dict[str, Any]:
            op = eigenthings_op(p)
            if k == 1:
                lam = he.power_iteration_one(op, max_iter=max_iter, seed=seed)[0]
                return {"eigenvalues": [lam]}
            r = he.deflated_power_iteration(op, k=k, max_iter=max_iter, seed=seed)
            return {"eigenvalues": r.eigenvalues.tolist()}

        return run

    def lanczos(k: int, steps: int | None, oracle: bool = False) -> Callable[[Problem, int], dict[str, Any]]:
        def run(p: Problem, seed: int) -> dict[str, Any]:
            # oracle: the start vector its step count was calibrated with (seed 0) in every round
            r = he.lanczos(eigenthings_op(p), k=k, max_iter=steps, seed=0 if oracle else seed)
            return {"eigenvalues": sorted(r.eigenvalues.tolist(), reverse=True)}

        return run

    def trace(num: int) -> Callable[[Problem, int], dict[str, Any]]:
        def run(p: Problem, seed: int) -> dict[str, Any]:
            return {
                "trace": he.trace(eigenthings_op(p), num_matvecs=num, method="hutch++", seed=seed).estimate
            }

        return run

    def slq(p: Problem, seed: int) -> dict[str, Any]:
        r = he.spectral_density(eigenthings_op(p), num_runs=1, lanczos_steps=SLQ_STEPS, seed=seed)
        return {"top_node": float(torch.nan_to_num(r.raw_eigenvalues, nan=-math.inf).max())}

    s1, s3 = c["eig_lanczos_steps_1"], c["eig_lanczos_steps_3"]
    return [
        Entry(
            "eig-power-default",
            "hessian-eigenthings",
            "power_iteration_one defaults (tol 1e-4, max_iter 100)",
            "lambda_max",
            "default",
            power(1, 100),
        ),
        Entry(
            "eig-power-tuned",
            "hessian-eigenthings",
            "power_iteration_one tol 1e-4, max_iter 1000",
            "lambda_max",
            "tuned",
            power(1, 1000),
            cnn=False,
            memory=False,
            memory_like="eig-power-default",
        ),
        Entry(
            "eig-lanczos-default",
            "hessian-eigenthings",
            "lanczos(k=1) defaults (2·k = 2 steps)",
            "lambda_max",
            "default",
            lanczos(1, None),
        ),
        Entry(
            "eig-lanczos-30",
            "hessian-eigenthings",
            "lanczos(k=1, max_iter=30)",
            "lambda_max",
            "tuned",
            lanczos(1, 30),
        ),
        Entry(
            "eig-lanczos-oracle",
            "hessian-eigenthings",
            f"lanczos(k=1, max_iter={s1}): the fewest steps that reach 1e-6, known only in hindsight",
            "lambda_max",
            "oracle",
            lanczos(1, s1, True),
        ),
        Entry(
            "eig-power3-default",
            "hessian-eigenthings",
            "deflated_power_iteration(k=3) defaults (tol 1e-4, max_iter 100 each)",
            "top3",
            "default",
            power(3, 100),
        ),
        Entry(
            "eig-power3-tuned",
            "hessian-eigenthings",
            "deflated_power_iteration(k=3), max_iter 1000 each",
            "top3",
            "tuned",
            power(3, 1000),
            cnn=False,
            memory=False,
            memory_like="eig-power3-default",
        ),
        Entry(
            "eig-lanczos3-default",
            "hessian-eigenthings",
            "lanczos(k=3) defaults (2·k = 6 steps)",
            "top3",
            "default",
            lanczos(3, None),
        ),
        Entry(
            "eig-lanczos3-30",
            "hessian-eigenthings",
            "lanczos(k=3, max_iter=30)",
            "top3",
            "tuned",
            lanczos(3, 30),
        ),
        Entry(
            "eig-lanczos3-oracle",
            "hessian-eigenthings",
            f"lanczos(k=3, max_iter={s3}): the fewest steps that reach 1e-6, known only in hindsight",
            "top3",
            "oracle",
            lanczos(3, s3, True),
        ),
        Entry(
            "eig-trace-45",
            "hessian-eigenthings",
            f"trace(hutch++, num_matvecs={TRACE_MATVECS}); no ‖H‖_F",
            "trace",
            "tuned",
            trace(TRACE_MATVECS),
        ),
        Entry(
            "eig-trace-default",
            "hessian-eigenthings",
            "trace() defaults (hutch++, 100 → 99 HVPs)",
            "trace",
            "default",
            trace(100),
            cnn=False,
        ),
        Entry(
            "eig-slq",
            "hessian-eigenthings",
            f"spectral_density(num_runs=1, lanczos_steps={SLQ_STEPS})",
            "density",
            "tuned",
            slq,
        ),
    ]


def curvlinops_entries(c: dict[str, Any]) -> list[Entry]:
    import curvlinops as cl
    from scipy.sparse.linalg import eigsh

    def eig(k: int, tol: float, check: bool) -> Callable[[Problem, int], dict[str, Any]]:
        def run(p: Problem, seed: int) -> dict[str, Any]:
            op = curvlinops_op(p, check=check)
            vals = eigsh(op.to_scipy(), k=k, which="LA", tol=tol, return_eigenvectors=False)
            return {"eigenvalues": sorted(vals.tolist(), reverse=True)}

        return run

    def trace(fro: bool, hutchpp: bool) -> Callable[[Problem, int], dict[str, Any]]:
        def run(p: Problem, seed: int) -> dict[str, Any]:
            torch.manual_seed(seed)
            op = curvlinops_op(p)
            fn = cl.hutchpp_trace if hutchpp else cl.hutchinson_trace
            out = {"trace": float(fn(op, TRACE_MATVECS))}
            if fro:
                out["frobenius"] = math.sqrt(float(cl.hutchinson_squared_fro(op, TRACE_MATVECS)))
            return out

        return run

    def slq(bounds: tuple[float, float] | None) -> Callable[[Problem, int], dict[str, Any]]:
        def run(p: Problem, seed: int) -> dict[str, Any]:
            torch.manual_seed(seed)
            op = curvlinops_op(p, check=bounds is None)
            cl.lanczos_approximate_spectrum(op, ncv=SLQ_STEPS, boundaries=bounds)
            return {}

        return run

    return [
        Entry(
            "cl-eigsh-default",
            "curvlinops",
            "eigsh(k=1) defaults (tol 0), operator check on",
            "lambda_max",
            "default",
            eig(1, 0.0, True),
            cnn=False,
            memory=False,
            memory_like="cl-eigsh-tuned",
        ),
        Entry(
            "cl-eigsh-tuned",
            "curvlinops",
            "eigsh(k=1, tol=1e-6), check_deterministic=False",
            "lambda_max",
            "tuned",
            eig(1, 1e-6, False),
        ),
        Entry(
            "cl-eigsh3-default",
            "curvlinops",
            "eigsh(k=3) defaults (tol 0), operator check on",
            "top3",
            "default",
            eig(3, 0.0, True),
            memory=False,
            memory_like="cl-eigsh3-tuned",
        ),
        Entry(
            "cl-eigsh3-tuned",
            "curvlinops",
            "eigsh(k=3, tol=1e-6), check_deterministic=False",
            "top3",
            "tuned",
            eig(3, 1e-6, False),
        ),
        Entry(
            "cl-hutchpp",
            "curvlinops",
            f"hutchpp_trace({TRACE_MATVECS}); trace only",
            "trace",
            "tuned",
            trace(False, True),
        ),
        Entry(
            "cl-hutchpp-fro",
            "curvlinops",
            f"hutchpp_trace({TRACE_MATVECS}) + hutchinson_squared_fro({TRACE_MATVECS})",
            "trace",
            "tuned",
            trace(True, True),
            cnn=False,
        ),
        Entry(
            "cl-hutchinson",
            "curvlinops",
            f"hutchinson_trace({TRACE_MATVECS})",
            "trace",
            "tuned",
            trace(False, False),
            cnn=False,
        ),
        Entry(
            "cl-slq-bounds",
            "curvlinops",
            f"lanczos_approximate_spectrum(ncv={SLQ_STEPS}), boundaries given (no reorth.)",
            "density",
            "tuned",
            slq((c["lambda_min"], c["lambda_max"])),
        ),
        Entry(
            "cl-slq-default",
            "curvlinops",
            f"lanczos_approximate_spectrum(ncv={SLQ_STEPS}) defaults (eigsh estimates the boundaries)",
            "density",
            "default",
            slq(None),
            once=True,
            memory=False,
        ),
    ]


def pyhessian_entries(c: dict[str, Any]) -> list[Entry]:
    def make(p: Problem, seed: int) -> Any:
        from pyhessian import hessian

        install_pyhessian_counter()
        torch.manual_seed(seed)
        p.clear_grads()  # it accumulates into .grad: a second call would differentiate 2x the loss
        return hessian(p.model, p.crit, data=(p.x, p.y), cuda=False)

    def eig(k: int, tol: float, max_iter: int) -> Callable[[Problem, int], dict[str, Any]]:
        def run(p: Problem, seed: int) -> dict[str, Any]:
            try:
                vals, _ = make(p, seed).eigenvalues(maxIter=max_iter, tol=tol, top_n=k)
            finally:
                p.clear_grads()
            return {"eigenvalues": sorted(vals, reverse=True)}

        return run

    def trace(max_iter: int, tol: float) -> Callable[[Problem, int], dict[str, Any]]:
        def run(p: Problem, seed: int) -> dict[str, Any]:
            try:
                samples = make(p, seed).trace(maxIter=max_iter, tol=tol)
            finally:
                p.clear_grads()
            return {"trace": sum(samples) / len(samples)}

        return run

    def slq(p: Problem, seed: int) -> dict[str, Any]:
        try:
            make(p, seed).density(iter=SLQ_STEPS, n_v=1)
        finally:
            p.clear_grads()
        return {}

    m = c["pyhessian_trace_probes"]
    return [
        Entry(
            "pyh-default",
            "PyHessian",
            "eigenvalues() defaults (maxIter 100, tol 1e-3)",
            "lambda_max",
            "default",
            eig(1, 1e-3, 100),
        ),
        Entry(
            "pyh-tuned",
            "PyHessian",
            "eigenvalues(tol=0, maxIter=200): 200 iterations (its relative-change stop stalls in float32)",
            "lambda_max",
            "tuned",
            eig(1, 0.0, 200),
            cnn=False,
            memory=False,
            memory_like="pyh-default",
        ),
        Entry(
            "pyh3-default", "PyHessian", "eigenvalues(top_n=3) defaults", "top3", "default", eig(3, 1e-3, 100)
        ),
        Entry(
            "pyh3-tuned",
            "PyHessian",
            "eigenvalues(top_n=3, tol=0, maxIter=200): 200 iterations each",
            "top3",
            "tuned",
            eig(3, 0.0, 200),
            cnn=False,
            memory=False,
            memory_like="pyh3-default",
        ),
        Entry(
            "pyh-trace-default",
            "PyHessian",
            "trace() defaults (maxIter 100, tol 1e-3: stops early)",
            "trace",
            "default",
            trace(100, 1e-3),
        ),
        Entry(
            "pyh-trace-tuned",
            "PyHessian",
            f"trace(maxIter={m}, tol=0): Hutchinson probes for ~1% expected error",
            "trace",
            "tuned",
            trace(m, 0.0),
            cnn=False,
            memory=False,
            memory_like="pyh-trace-default",
        ),
        Entry(
            "pyh-slq",
            "PyHessian",
            f"density(iter={SLQ_STEPS}, n_v=1)",
            "density",
            "default",
            slq,
            once=True,
            memory=False,
        ),
    ]


def all_entries(c: dict[str, Any]) -> list[Entry]:
    return lscape_entries(c) + eigenthings_entries(c) + curvlinops_entries(c) + pyhessian_entries(c)


# ---------------------------------------------------------------------------------------------------------
# Calibration: the peers' cheapest settings that reach the target, from their own iterates (not timed).


def calibrate(p: Problem, ref: dict[str, Any]) -> dict[str, Any]:
    import hessian_eigenthings as he

    lam = ref["eigenvalues"]
    c: dict[str, Any] = {
        "lambda_max": lam[0] * 1.001,
        "lambda_min": ref.get("lambda_min_approx", 0.0) * 1.001,
    }
    # eigenthings' Lanczos: fewest steps m whose T_m (a leading block of one 60-step run) gives λ1 / λ1..3
    # to EIG_TARGET. Its lanczos(k, max_iter=m) runs exactly these m steps from the same seeded start.
    # The products come from lscape's operator wrapped for eigenthings (same Hessian, half the cost of its
    # own operator, which rebuilds the gradient graph for every product).
    n = 40
    op = lscape_op(p)
    from lscape_cli.core.linalg.hvp import flatten, unflatten

    with op:
        lam_op = he.LambdaOperator(lambda v: flatten(op(unflatten(v, op.params))), size=p.n_params)
        v0 = torch.randn(
            p.n_params, generator=torch.Generator().manual_seed(0)
        )  # = he.lanczos(seed=0)'s start
        td = he.lanczos_tridiagonal(lam_op, v0, n, reorthogonalize=True)
    a, b = td.alphas.double(), td.betas.double()
    for k in (1, 3):
        steps = n
        for m in range(k, td.iterations + 1):
            t = torch.diag(a[:m]) + torch.diag(b[: m - 1], 1) + torch.diag(b[: m - 1], -1)
            theta = torch.linalg.eigvalsh(t).flip(0)[:k].tolist()
            if max(abs(x - r) / abs(r) for x, r in zip(theta, lam, strict=False)) <= EIG_TARGET:
                steps = m
                break
        c[f"eig_lanczos_steps_{k}"] = max(steps, 2 * k)  # its default would be 2k anyway
    # PyHessian's trace is Hutchinson only. Rademacher probes have variance 2(‖H‖_F² − Σ H_ii²) ≤ 2‖H‖_F²,
    # so m = 2‖H‖_F² / (0.01 tr H)² probes give at most ~1% RMS error, the level of Hutch++ with 45 HVPs.
    c["pyhessian_trace_probes"] = min(2000, math.ceil(2 * ref["frobenius"] ** 2 / (0.01 * ref["trace"]) ** 2))
    return c


# ---------------------------------------------------------------------------------------------------------
# Timing.


def _busy_ticks() -> int:
    """CPU ticks spent busy on the whole machine (all processes, /proc/stat)."""
    f = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return f[0] + f[1] + f[2] + f[5] + f[6] + f[7]  # user nice system irq softirq steal


def _own_seconds() -> float:
    r = os.times()
    return r.user + r.system + r.children_user + r.children_system


class ForeignLoad:
    """CPU used by other processes while we time, in cores: (machine busy − our own) / wall."""

    def __init__(self) -> None:
        self.t, self.busy, self.own = time.perf_counter(), _busy_ticks(), _own_seconds()

    def cores(self) -> float:
        wall = time.perf_counter() - self.t
        busy = (_busy_ticks() - self.busy) / os.sysconf("SC_CLK_TCK")
        return max(0.0, busy - (_own_seconds() - self.own)) / max(wall, 1e-9)


def wait_idle(limit: float, log: Callable[[str], None]) -> float:
    """Wait (up to ``limit`` s) until other processes use < 0.25 cores over 5 s; return that load."""
    t0 = time.perf_counter()
    while True:
        fl = ForeignLoad()
        time.sleep(5)
        load = fl.cores()
        if load < 0.25 or time.perf_counter() - t0 > limit:
            if load >= 0.25:
                log(f"other processes still use {load:.2f} cores; timing anyway (see the load column)")
            return load
        log(f"waiting for the machine: other processes use {load:.2f} cores")


def run_entry(e: Entry, p: Problem, seed: int) -> dict[str, Any]:
    gc.collect()
    Counter.n = 0
    t0 = time.perf_counter()
    try:
        out = e.run(p, seed)
        ok, err = True, None
    except Exception as exc:  # a crash is a result (PyHessian's density on torch 2.x)
        out, ok = {}, False
        err = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".strip()
    seconds = time.perf_counter() - t0
    p.clear_grads()
    out.setdefault("hvps", Counter.n if Counter.n else None)
    return {"seconds": seconds, "ok": ok, "error": err, "seed": seed, **out}


def warm_up(p: Problem) -> None:
    """One product through each tool's HVP path, so no tool pays a first-call cost in the timed runs."""
    from pyhessian import hessian

    v = torch.randn(p.n_params)
    op = lscape_op(p)
    with op:
        op.hvp_many([op.params])
    eigenthings_op(p).matvec(v)
    cop = curvlinops_op(p)
    _ = cop @ v
    _ = cop @ torch.stack([v, v], 1)
    install_pyhessian_counter()
    h = hessian(p.model, p.crit, data=(p.x, p.y), cuda=False)
    _pyhessian_module().hessian_vector_product(h.gradsH, h.params, [torch.ones_like(q) for q in h.params])
    del h
    p.clear_grads()


def time_task(
    task: str, entries: list[Entry], p: Problem, repeats: int, log: Callable[[str], None]
) -> dict[str, list[dict[str, Any]]]:
    runs: dict[str, list[dict[str, Any]]] = {e.key: [] for e in entries}
    fl = ForeignLoad()
    for r in range(repeats):
        order = entries[r % len(entries) :] + entries[: r % len(entries)]
        for e in order:
            if e.once and r > 0:
                continue
            res = run_entry(e, p, seed=r)
            runs[e.key].append(res)
            log(
                f"  [{p.name} {task} round {r + 1}/{repeats}] {e.tool:20s} {e.key:22s} "
                f"{res['seconds']:8.3f} s  hvps={res.get('hvps')}  {'' if res['ok'] else res['error']}"
            )
    runs["_foreign_load"] = fl.cores()  # type: ignore[assignment]
    log(f"  [{p.name} {task}] other processes used {runs['_foreign_load']:.2f} cores meanwhile")
    return runs


# ---------------------------------------------------------------------------------------------------------
# Memory: one fresh subprocess per entry.


def _status_kb(key: str) -> int:
    m = re.search(rf"^{key}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    return int(m.group(1)) if m else -1


def memory_child(spec: dict[str, Any]) -> None:
    torch.set_num_threads(spec["threads"])
    p = load_problem(spec["model"], Path(spec["path"]), spec["samples"])
    entry = next(e for e in all_entries(spec["calib"]) if e.key == spec["key"])
    p.crit(p.model(p.x), p.y).backward()  # warm-up: allocator, thread pool, kernels
    p.clear_grads()
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    base = _status_kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    res = run_entry(entry, p, 0)
    peak = _status_kb("VmHWM")
    print(
        "BENCH-MEMORY "
        + json.dumps(
            {
                "key": spec["key"],
                "base_kb": base,
                "peak_kb": peak,
                "extra_mb": (peak - base) / 1024,
                "ok": res["ok"],
            }
        )
    )


def measure_memory(specs: list[dict[str, Any]], log: Callable[[str], None], jobs: int) -> dict[str, float]:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "PYTHONWARNINGS": "ignore"}

    def one(spec: dict[str, Any]) -> tuple[str, float | None]:
        proc = subprocess.run(
            [sys.executable, __file__, "--memory-child", json.dumps(spec)],
            capture_output=True,
            text=True,
            env=env,
            timeout=900,
        )
        for line in proc.stdout.splitlines():
            if line.startswith("BENCH-MEMORY "):
                d = json.loads(line[len("BENCH-MEMORY ") :])
                log(f"  [memory {spec['model']}] {spec['key']:22s} +{d['extra_mb']:8.1f} MB")
                return spec["key"], d["extra_mb"]
        log(f"  [memory {spec['model']}] {spec['key']}: failed\n{proc.stderr[-2000:]}")
        return spec["key"], None

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return dict(pool.map(one, specs))


# ---------------------------------------------------------------------------------------------------------
# Summaries and tables.


def rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


def summarize(
    e: Entry,
    runs: list[dict[str, Any]],
    ref: dict[str, Any],
    mem: float | None,
    extra: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    ok = [r for r in runs if r["ok"]]
    s: dict[str, Any] = {
        "key": e.key,
        "tool": e.tool,
        "config": e.config,
        "kind": e.kind,
        "task": e.task,
        "runs": len(runs),
        "memory_mb": mem,
        "memory_borrowed": e.memory_like is not None,
        "seconds": statistics.median(r["seconds"] for r in runs) if runs else None,
        "ok": bool(ok) and len(ok) == len(runs),
        "error": next((r["error"] for r in runs if not r["ok"]), None),
    }
    hv = [r["hvps"] for r in ok if r.get("hvps") is not None]
    s["hvps"] = statistics.median(hv) if hv else None
    lam = ref["eigenvalues"]
    if e.task in ("lambda_max", "top3") and ok:
        k = 1 if e.task == "lambda_max" else 3
        errs = [max(rel(v, r) for v, r in zip(x["eigenvalues"][:k], lam[:k], strict=True)) for x in ok]
        s["rel_error"] = max(errs)  # worst round: a method "reaches" the target only if every round does
        s["accurate"] = s["rel_error"] <= EIG_TARGET
        s["estimate"] = ok[0]["eigenvalues"][:k]
    elif e.task == "trace" and ok:
        s["rel_error"] = math.sqrt(statistics.fmean(rel(x["trace"], ref["trace"]) ** 2 for x in ok))
        if all("frobenius" in x for x in ok):
            s["fro_error"] = math.sqrt(
                statistics.fmean(rel(x["frobenius"], ref["frobenius"]) ** 2 for x in ok)
            )
        s["estimate"] = statistics.median(x["trace"] for x in ok)
        many = ok + [x for x in extra or [] if x["ok"]]
        if extra:  # untimed extra seeds: RMS error and spread over every seed
            s["seeds"] = len(many)
            s["rel_error_seeds"] = math.sqrt(
                statistics.fmean(rel(x["trace"], ref["trace"]) ** 2 for x in many)
            )
            s["spread_seeds"] = statistics.stdev(x["trace"] for x in many) / abs(ref["trace"])
            if all("frobenius" in x for x in many):
                s["fro_error_seeds"] = math.sqrt(
                    statistics.fmean(rel(x["frobenius"], ref["frobenius"]) ** 2 for x in many)
                )
                s["fro_spread_seeds"] = statistics.stdev(x["frobenius"] for x in many) / abs(ref["frobenius"])
    elif e.task == "density" and ok and all("top_node" in x for x in ok):
        s["rel_error"] = max(rel(x["top_node"], lam[0]) for x in ok)
    return s


def fmt(v: float | None, spec: str) -> str:
    return "–" if v is None else format(v, spec)


def verdicts(task: str, rows: list[dict[str, Any]]) -> list[str]:
    """The issue's targets for one task, checked on the measured rows."""
    me = next((r for r in rows if r["kind"] == "lscape"), None)
    peers = [r for r in rows if r["tool"] != "lscape" and r["ok"] and r["seconds"] is not None]
    if me is None or not me["ok"]:
        return ["lscape did not run"]
    out = []
    if task in ("lambda_max", "top3"):
        if not me.get("accurate"):
            out.append(f"lscape missed the accuracy target ({me['rel_error']:.1e})")
        for kinds, what in (
            (("tuned", "default"), "fastest accurate peer"),
            (("oracle",), "hindsight-tuned peer"),
        ):
            acc = [r for r in peers if r.get("accurate") and r["kind"] in kinds]
            if not acc:
                out.append(f"no {what} reached the accuracy target")
                continue
            best = min(acc, key=lambda r: r["seconds"])
            ratio = best["seconds"] / me["seconds"]
            met = ratio >= 2 and me.get("accurate")
            why = "" if me.get("accurate") else ", lscape itself is not at 1e-6"
            out.append(
                f"speed vs {what}: {best['tool']} ({best['config']}) {best['seconds']:.3f} s / lscape "
                f"{me['seconds']:.3f} s → **{ratio:.2f}×** (target ≥ 2× at 1e-6: "
                f"{'met' if met else 'MISSED'}{why})"
            )
    elif task == "trace":
        hpp = [r for r in peers if r["key"] in ("cl-hutchpp", "cl-hutchpp-fro")]
        cl = next((r for r in hpp if r["key"] == "cl-hutchpp"), None)
        if cl is not None and "seeds" in me and "seeds" in cl:
            out.append(
                f"accuracy over {me['seeds']} seeds (timed rounds + untimed seeds): trace RMS error lscape "
                f"{me['rel_error_seeds']:.2%} vs curvlinops Hutch++ {cl['rel_error_seeds']:.2%}; spread "
                f"(std / tr) {me['spread_seeds']:.2%} vs {cl['spread_seeds']:.2%}; lscape's ‖H‖_F RMS error "
                f"{me['fro_error_seeds']:.2%} (curvlinops needs another {TRACE_MATVECS} products for it)"
            )
        for r in hpp:
            ratio = r["seconds"] / me["seconds"]
            what = "trace only" if r["key"] == "cl-hutchpp" else "trace + ‖H‖_F"
            out.append(
                f"speed vs curvlinops Hutch++ ({what}): {r['seconds']:.3f} s / {me['seconds']:.3f} s → "
                f"**{ratio:.2f}×** (target ≥ 1.5×: {'met' if ratio >= 1.5 else 'MISSED'}); RMS error "
                f"over the timed rounds lscape {me['rel_error']:.2%} vs {r['rel_error']:.2%}"
            )
        fast = [
            r for r in peers if r.get("rel_error") is not None and r["rel_error"] <= 1.5 * me["rel_error"]
        ]
        if fast:
            best = min(fast, key=lambda r: r["seconds"])
            out.append(
                f"fastest peer with RMS error ≤ 1.5× lscape's: {best['tool']} ({best['config']}) "
                f"{best['seconds']:.3f} s → {best['seconds'] / me['seconds']:.2f}×"
            )
    elif task == "density":
        done = [r for r in peers if r["kind"] == "tuned"]
        if done:
            best = min(done, key=lambda r: r["seconds"])
            ratio = best["seconds"] / me["seconds"]
            out.append(
                f"speed vs fastest peer ({best['tool']}): {best['seconds']:.3f} s / {me['seconds']:.3f} s "
                f"→ **{ratio:.2f}×** (target ≥ 1×: {'met' if ratio >= 1 else 'MISSED'})"
            )
    mems = [r for r in peers if r.get("memory_mb") is not None]
    if me.get("memory_mb") is not None and mems:
        light = min(mems, key=lambda r: r["memory_mb"])
        met = me["memory_mb"] <= light["memory_mb"]
        out.append(
            f"memory: lscape +{me['memory_mb']:.0f} MB vs lightest peer {light['tool']} ({light['config']}) "
            f"+{light['memory_mb']:.0f} MB (target ≤: {'met' if met else 'MISSED'})"
        )
        acc = [
            r
            for r in mems
            if r.get("accurate")
            or (
                task == "trace" and r.get("rel_error") is not None and r["rel_error"] <= 1.5 * me["rel_error"]
            )
        ]
        if acc and task != "density":
            la = min(acc, key=lambda r: r["memory_mb"])
            out.append(f"lightest accurate peer: {la['tool']} ({la['config']}) +{la['memory_mb']:.0f} MB")
    return out


def table(task: str, rows: list[dict[str, Any]], ref: dict[str, Any], repeats: dict[str, int]) -> str:
    me = next((r for r in rows if r["kind"] == "lscape"), None)
    err_head = {
        "lambda_max": "rel. error (worst round)",
        "top3": "max rel. error λ1..3 (worst round)",
        "trace": "trace RMS rel. error",
        "density": "top Ritz value rel. error",
    }[task]
    extra = " | ‖H‖_F RMS rel. error" if task == "trace" else ""
    lines = [
        f"| tool | configuration | median s | × lscape | HVPs | {err_head}{extra} | peak extra RSS MB |",
        "|---|---|---:|---:|---:|---:|" + ("---:|" if extra else "") + "---:|",
    ]
    order = {"lscape": 0, "variant": 1, "tuned": 2, "oracle": 3, "default": 4}
    for r in sorted(rows, key=lambda r: (order[r["kind"]], r["tool"], r["seconds"] or 0)):
        name = f"**{r['tool']}**" if r["tool"] == "lscape" else r["tool"]
        if not r["ok"]:
            err = f"crash: {r['error']}"
        else:
            err = fmt(r.get("rel_error"), ".1e" if task != "trace" else ".2%")
            if task in ("lambda_max", "top3") and r.get("accurate") is False:
                err += " ✗"
        ratio = "–" if (me is None or r["seconds"] is None) else f"{r['seconds'] / me['seconds']:.2f}"
        runs = "" if r["runs"] == repeats[task] else f" ({r['runs']} run)"
        cells = [name, r["config"] + runs, fmt(r["seconds"], ".3f"), ratio, fmt(r["hvps"], ".0f"), err]
        if extra:
            cells.append(fmt(r.get("fro_error"), ".2%") if r.get("fro_error") is not None else "–")
        cells.append(
            ("≈" if r.get("memory_borrowed") and r.get("memory_mb") is not None else "")
            + fmt(r.get("memory_mb"), ".0f")
        )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    from _machine import cpu_name

    cpu = cpu_name()
    from importlib.metadata import version

    import scipy

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "scipy": scipy.__version__,
        "threads": torch.get_num_threads(),
        "peers": {n: version(n) for n in ("pyhessian", "hessian-eigenthings", "curvlinops-for-pytorch")},
        "lscape_commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip(),
    }


def report(results: dict[str, Any]) -> str:
    m = results["machine"]
    out = [
        f"Generated by `benchmarks/bench_probe.py` on {results['date']} (lscape commit {m['lscape_commit']}, "
        f"working tree may differ). Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} on "
        f"{m['threads']} threads, Python {m['python']}, scipy {m['scipy']}; peers: "
        + ", ".join(f"{k} {v}" for k, v in m["peers"].items())
        + ". "
        f"Load average before/after: {results['load_before']} / {results['load_after']}. "
        f"Total wall time {results['wall_seconds'] / 60:.1f} min.",
        "",
    ]
    for _name, prob in results["problems"].items():
        ref = prob["reference"]
        out += [
            f"### {prob['label']}",
            "",
            f"Reference (float64): λ1..3 = {', '.join(f'{v:.6f}' for v in ref['eigenvalues'])} "
            f"(Lanczos, {ref['eigen_matvecs']} HVPs, Ritz residuals ≤ "
            f"{max(ref['eigen_relative_residuals']):.0e} relative); tr(H) = {ref['trace']:.4f} ± "
            f"{ref['trace_stderr']:.4f}, ‖H‖_F = {ref['frobenius']:.4f} ± {ref['frobenius_stderr']:.4f} "
            f"(Hutch++, {ref['trace_matvecs']} HVPs). Calibrated peer settings: "
            f"{json.dumps(prob['calibration'])}.",
            "",
        ]
        for task in prob["tasks"]:
            rows = prob["rows"][task]
            reps = prob["repeats"]
            load = prob["foreign_load"][task]
            out += [
                f"#### {TASK_TITLES[task]}",
                "",
                f"{reps[task]} interleaved rounds; other processes used {load:.2f} of {m['cores']} cores "
                "meanwhile.",
                "",
                table(task, rows, ref, reps),
                "",
            ]
            out += [f"- {v}" for v in verdicts(task, rows)] + [""]
    return "\n".join(out)


def write_doc(path: Path, text: str) -> None:
    doc = path.read_text() if path.exists() else f"# Benchmarks\n\n{MARK_BEGIN}\n{MARK_END}\n"
    if MARK_BEGIN not in doc:
        doc += f"\n{MARK_BEGIN}\n{MARK_END}\n"
    head, rest = doc.split(MARK_BEGIN, 1)
    tail = rest.split(MARK_END, 1)[1]
    path.write_text(f"{head}{MARK_BEGIN}\n{text}\n{MARK_END}{tail}")


# ---------------------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3, help="rounds per task (medians)")
    ap.add_argument(
        "--trace-repeats", type=int, default=5, help="rounds for the trace (RMS error over seeds)"
    )
    ap.add_argument(
        "--trace-error-seeds",
        type=int,
        default=20,
        help="untimed extra seeds for the trace error of lscape and curvlinops' Hutch++",
    )
    ap.add_argument("--models", default="mlp,cnn")
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--cnn", choices=("train", "sample"), default="train")
    ap.add_argument("--cnn-samples", type=int, default=256, help="training images for the CNN (all: 4000)")
    ap.add_argument("--cnn-tasks", default="lambda_max,trace")
    ap.add_argument(
        "--ref-matvecs", type=int, default=1002, help="float64 Hutch++ products for the reference"
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--wait-idle",
        type=float,
        default=120,
        help="before each task, wait up to this many seconds for other processes to go quiet",
    )
    ap.add_argument(
        "--max-foreign-load",
        type=float,
        default=0.3,
        help="re-time a task if other processes used more cores than this meanwhile",
    )
    ap.add_argument(
        "--retries", type=int, default=2, help="re-timings per task at most (the quietest is kept)"
    )
    ap.add_argument("--memory-jobs", type=int, default=2, help="memory subprocesses at once")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument(
        "--write",
        default=str(ROOT / "docs" / "benchmarks.md"),
        help="markdown file whose generated part (between the markers) is replaced; '-' writes nothing",
    )
    ap.add_argument("--json", type=Path, default=None, help="write every run's numbers here")
    ap.add_argument("--render", type=Path, default=None, help="re-render the tables of a --json file only")
    ap.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        memory_child(json.loads(args.memory_child))
        return
    if args.render:
        text = report(json.loads(args.render.read_text()))
        print(text)
        if args.write != "-":
            write_doc(Path(args.write), text)
        return

    import warnings

    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    load_before = [round(v, 2) for v in os.getloadavg()]
    log(f"load average before: {load_before}")
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "machine": machine(),
        "load_before": load_before,
        "problems": {},
    }
    tmp = tempfile.TemporaryDirectory(prefix="lscape-bench-")
    models = args.models.split(",")
    specs: list[tuple[str, Path, int | None, list[str]]] = []
    if "mlp" in models:
        specs.append(("mlp", MLP_CKPT, None, args.tasks.split(",")))
    if "cnn" in models:
        if args.cnn == "train":
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "lscape_cli", *CNN_TRAIN, "--out", tmp.name], check=True)
            log(f"trained the CNN in {time.perf_counter() - t0:.1f} s")
            cnn_path = Path(tmp.name) / "cnn.safetensors"
        else:
            cnn_path = CNN_SAMPLE
        cnn_tasks = [t for t in args.cnn_tasks.split(",") if t in args.tasks.split(",")]
        specs.append(("cnn", cnn_path, args.cnn_samples, cnn_tasks))

    for name, path, samples, tasks in specs:
        t0 = time.perf_counter()
        ref = reference(
            path,
            samples,
            args.ref_matvecs if name == "mlp" else min(args.ref_matvecs, 300),
            "density" in tasks,
        )
        log(
            f"[{name}] reference in {time.perf_counter() - t0:.1f} s (cached after the first run): "
            f"{json.dumps({k: ref[k] for k in ('eigenvalues', 'trace', 'frobenius')})}"
        )
        p = load_problem(name, path, samples)
        if name == "cnn" and args.cnn == "train":
            p.label = p.label.replace(
                f"({path.name})",
                "(trained by this script: `lscape " + " ".join(a for a in CNN_TRAIN if a != "--quiet") + "`)",
            )
        if samples is not None:
            p.label += f" (first {samples} of the checkpoint's 4,000)"
        calib = calibrate(p, ref)
        log(f"[{name}] calibration: {calib}")
        warm_up(p)
        entries = [e for e in all_entries(calib) if name == "mlp" or e.cnn]
        repeats = {t: (args.trace_repeats if t == "trace" else args.repeats) for t in tasks}
        runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
        foreign: dict[str, float] = {}
        for task in tasks:
            best: tuple[dict[str, list[dict[str, Any]]], float] | None = None
            for attempt in range(1 + args.retries):
                if args.wait_idle > 0:
                    wait_idle(args.wait_idle, log)
                got = time_task(task, [e for e in entries if e.task == task], p, repeats[task], log)
                load = float(got.pop("_foreign_load"))  # type: ignore[arg-type]
                if best is None or load < best[1]:
                    best = (got, load)
                if load <= args.max_foreign_load:
                    break
                if attempt < args.retries:
                    log(f"  other processes used {load:.2f} cores during {task}: timing it again")
            assert best is not None
            runs[task], foreign[task] = best
        accuracy: dict[str, list[dict[str, Any]]] = {}
        if "trace" in tasks and args.trace_error_seeds > 0:  # untimed: error statistics only
            for e in entries:
                if e.task == "trace" and e.key in TRACE_ERROR_KEYS:
                    seeds = range(100, 100 + args.trace_error_seeds)
                    accuracy[e.key] = [run_entry(e, p, seed=sd) for sd in seeds]
                    log(f"  [{name} trace accuracy] {e.key}: {args.trace_error_seeds} more seeds")
        mem: dict[str, float | None] = {}
        if not args.no_memory:
            mem_specs = [
                {
                    "model": name,
                    "path": str(path),
                    "samples": samples,
                    "key": e.key,
                    "calib": calib,
                    "threads": args.threads,
                }
                for e in entries
                if e.task in tasks and e.memory
            ]
            mem = measure_memory(mem_specs, log, args.memory_jobs)
        rows = {
            task: [
                summarize(
                    e,
                    runs[task][e.key],
                    ref,
                    mem.get(e.key, mem.get(e.memory_like or "")),
                    accuracy.get(e.key),
                )
                for e in entries
                if e.task == task
            ]
            for task in tasks
        }
        results["problems"][name] = {
            "label": p.label,
            "reference": ref,
            "calibration": calib,
            "tasks": tasks,
            "repeats": repeats,
            "rows": rows,
            "runs": runs,
            "foreign_load": foreign,
        }
        del p
        gc.collect()
    results["load_after"] = [round(v, 2) for v in os.getloadavg()]
    results["wall_seconds"] = time.perf_counter() - t_start
    text = report(results)
    print(text)
    if args.write != "-":
        write_doc(Path(args.write), text)
        log(f"updated {args.write}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    tmp.cleanup()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        traceback.print_exc()
        sys.exit(130)
