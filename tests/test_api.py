"""``lscape_cli.core`` is the library a notebook imports: every name it lists loads, and its example works."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import lscape_cli.core as core


def test_every_listed_name_loads_from_its_module() -> None:
    for name in core.__all__:
        assert getattr(core, name) is not None, name
    with pytest.raises(AttributeError):
        _ = core.no_such_name


def test_importing_the_package_loads_no_torch() -> None:
    code = "import sys, lscape_cli.core; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_the_docstring_example_matches_the_dense_hessian() -> None:
    from lscape_cli.core import HVP, Objective, hutchpp, lanczos

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 3)).double()
    x, y = torch.randn(40, 4, dtype=torch.float64), torch.randint(0, 3, (40,))
    obj = Objective.from_module(model, x, y, loss="ce")
    op = HVP(obj)
    top = lanczos(op, k=3)
    tf = hutchpp(op, num_matvecs=45, seed=0)

    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss(v: torch.Tensor) -> torch.Tensor:
        parts, i = {}, 0
        for n, s in zip(names, shapes, strict=True):
            parts[n] = v[i : i + s.numel()].reshape(s)
            i += s.numel()
        logits = torch.func.functional_call(model, parts, (x,))
        return torch.nn.functional.cross_entropy(logits, y)

    eig = torch.linalg.eigvalsh(torch.func.hessian(loss)(flat)).flip(0)
    assert top.converged
    assert top.eigenvalues == pytest.approx(eig[:3].tolist(), rel=1e-6)
    exact = float(eig.sum())
    assert abs(tf.trace.estimate - exact) <= 4 * tf.trace.stderr + 1e-9


def test_the_listed_names_are_the_lazy_table() -> None:
    assert sorted(core.__all__) == sorted(core._WHERE)
