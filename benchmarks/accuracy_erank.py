"""How many SLQ runs give the effective rank to what accuracy: seeds' spread, jackknife stderr, exact error.

A tiny MLP and a tiny CNN (digits, 256 samples, float64, cross-entropy, at initialisation and after a few
full-batch steps) have a dense Hessian, so the exact effective rank ``exp(-sum p log p)`` is known. For each
number of runs R and Lanczos steps m (probe's defaults: 10 and 80) and 10 seeds, this prints the relative
error of the mean estimate (the quadrature's bias, which more runs do not remove), the spread between
seeds, and the mean reported (jackknife) standard error, all relative to the exact value. Accuracy only.

    OMP_NUM_THREADS=1 python benchmarks/accuracy_erank.py
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch

from lscape_cli import datasets, models
from lscape_cli.core.linalg import density
from lscape_cli.core.linalg.hvp import HVP, Objective, flatten, unflatten
from lscape_cli.core.objective import loss_mean

CASES = {
    "mlp d1 w16": ("mlp", {"depth": 1, "width": 16}),
    "cnn w2 h8": ("cnn", {"width": 2, "hidden": 8}),
}


def _objective(name: str, options: dict[str, int], steps: int) -> Objective:
    splits = datasets.load(datasets.DatasetSpec("digits"), Path(tempfile.mkdtemp()), dtype=torch.float64)
    x, y = splits.x["train"][:256], splits.y["train"][:256]
    torch.manual_seed(0)
    model = models.build(models.make_spec(name, {"input_shape": (1, 8, 8), **options})).double()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(steps):  # a few full-batch steps: away from the initial spectrum
        opt.zero_grad()
        loss_mean(model(x), y, "ce").backward()
        opt.step()
    return Objective.from_module(model.eval(), x, y, "ce", 256)


def _exact(obj: Objective) -> float:
    def f(flat: torch.Tensor) -> torch.Tensor:
        out = torch.func.functional_call(obj.model, (unflatten(flat, obj.params), obj.buffers), (obj.x,))
        return loss_mean(out, obj.y, obj.loss)

    return density.effective_rank(torch.linalg.eigvalsh(torch.func.hessian(f)(flatten(obj.params))))


def main() -> None:
    torch.set_num_threads(1)
    for label, (name, options) in CASES.items():
        for steps in (0, 50):
            obj = _objective(name, options, steps)
            exact = _exact(obj)
            print(f"\n{label}, {steps} SGD steps: n = {HVP(obj).dim}, exact effective rank {exact:.2f}")
            print(" runs | steps | mean error | seed spread | mean jackknife s.e.  (relative to exact)")
            for runs, steps_m in ((5, 80), (10, 80), (20, 80), (40, 80), (20, 40), (20, 160)):
                res = [
                    density.effective_rank_jackknife(density.slq(HVP(obj), runs, steps_m, seed=s))
                    for s in range(10)
                ]
                est = np.array([r["estimate"] for r in res])
                se = np.array([r["stderr"] for r in res])
                print(
                    f" {runs:4d} | {steps_m:5d} | {(est.mean() - exact) / exact:+10.1%} |"
                    f" {est.std(ddof=1) / exact:11.1%} | {se.mean() / exact:8.1%}"
                )


if __name__ == "__main__":
    main()
