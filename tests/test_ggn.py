"""GGN, Fisher and empirical-Fisher operators, and parameter blocks, against dense float64 references.

References: ``J`` from ``torch.func.jacrev`` of the outputs, the output Hessian from ``torch.func.hessian``
of one sample's loss, per-sample gradients from ``grad`` one sample at a time, the dense Hessian of the
mean loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from lscape_cli import datasets, models
from lscape_cli.core.linalg import blocks, spectrum
from lscape_cli.core.linalg.curvature import GGN, Curvature, curvature_operator
from lscape_cli.core.linalg.hvp import HVP, Objective, flatten, gaussian, unflatten
from lscape_cli.core.objective import loss_mean, loss_sum

N_SAMPLES = 48
CASES = {
    "mlp-ce": {"model": "mlp", "options": {"depth": 1, "width": 6}, "loss": "ce"},
    "mlp-mse": {"model": "mlp", "options": {"depth": 1, "width": 6}, "loss": "mse"},
    "cnn-ce": {"model": "cnn", "options": {"width": 2, "hidden": 6}, "loss": "ce"},
}


@dataclass
class Problem:
    obj: Objective
    jacobian: torch.Tensor  # (N, C, n)
    output_hessian: torch.Tensor  # (N, C, C)
    per_sample_grads: torch.Tensor  # (N, n)
    hessian: torch.Tensor  # (n, n)

    @property
    def obj_dim(self) -> int:
        return sum(t.numel() for t in self.obj.params.values())

    @property
    def ggn(self) -> torch.Tensor:
        j, h = self.jacobian, self.output_hessian
        return torch.einsum("icn,icd,idm->nm", j, h, j) / j.shape[0]

    @property
    def empirical_fisher(self) -> torch.Tensor:
        g = self.per_sample_grads
        return g.T @ g / g.shape[0]


def references(obj: Objective) -> Problem:
    flat = flatten(obj.params)

    def outputs(p: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(obj.model, (unflatten(p, obj.params), obj.buffers), (obj.x,))

    def mean_loss(p: torch.Tensor) -> torch.Tensor:
        return loss_mean(outputs(p), obj.y, obj.loss)

    def sample_loss(p: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        z = torch.func.functional_call(obj.model, (unflatten(p, obj.params), obj.buffers), (x[None],))
        return loss_sum(z, y[None], obj.loss)

    z = outputs(flat).detach()
    jac = torch.func.jacrev(outputs)(flat)  # (N, C, n)
    out_h = torch.stack(
        [
            torch.func.hessian(lambda zi, yi=yi: loss_sum(zi[None], yi[None], obj.loss))(zi)
            for zi, yi in zip(z, obj.y, strict=True)
        ]
    )
    grads = torch.stack(
        [torch.func.grad(sample_loss)(flat, xi, yi) for xi, yi in zip(obj.x, obj.y, strict=True)]
    )
    return Problem(obj, jac, out_h, grads, torch.func.hessian(mean_loss)(flat))


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.Tensor, torch.Tensor]:
    splits = datasets.load(
        datasets.DatasetSpec("digits"), Path(tmp_path_factory.mktemp("data")), dtype=torch.float64
    )
    return splits.x["train"][:N_SAMPLES], splits.y["train"][:N_SAMPLES]


def build(name: str, options: dict, loss: str, data: tuple[torch.Tensor, torch.Tensor]) -> Objective:
    torch.manual_seed(0)
    spec = models.make_spec(name, {"input_shape": (1, 8, 8), **options})
    model = models.build(spec).to(torch.float64).eval()
    return Objective.from_module(model, *data, loss=loss, max_batch=N_SAMPLES)


@pytest.fixture(scope="module", params=list(CASES))
def problem(request: pytest.FixtureRequest, digits: tuple[torch.Tensor, torch.Tensor]) -> Problem:
    case = CASES[request.param]
    return references(build(case["model"], case["options"], case["loss"], digits))


def matrix(op: HVP | GGN) -> torch.Tensor:
    """The operator as a dense matrix, one product per column."""
    eye = torch.eye(op.dim, dtype=torch.float64)
    with op:
        return torch.stack([flatten(op(unflatten(e, op.params))) for e in eye], dim=1)


def test_ggn_equals_dense_jt_h_j(problem: Problem) -> None:
    torch.testing.assert_close(matrix(GGN(problem.obj, Curvature("ggn"))), problem.ggn, atol=1e-10, rtol=0)


def test_empirical_fisher_equals_per_sample_gradient_outer_products(problem: Problem) -> None:
    op = GGN(problem.obj, Curvature("empirical-fisher"))
    torch.testing.assert_close(matrix(op), problem.empirical_fisher, atol=1e-10, rtol=0)


@pytest.mark.parametrize("kind", ["ggn", "fisher", "empirical-fisher"])
def test_curvatures_are_symmetric_psd(problem: Problem, kind: str) -> None:
    m = matrix(GGN(problem.obj, Curvature(kind, mc_samples=2, seed=3)))
    torch.testing.assert_close(m, m.T, atol=1e-10, rtol=0)
    assert torch.linalg.eigvalsh(m).min() > -1e-10 * torch.linalg.eigvalsh(m).max()


def test_fisher_converges_to_the_exact_fisher_ggn(problem: Problem) -> None:
    generator = torch.Generator().manual_seed(5)
    probes = torch.stack([flatten(gaussian(problem.obj.params, generator)) for _ in range(6)], 1)
    exact = problem.ggn @ probes
    errors = []
    for samples in (1, 16, 256):
        op = GGN(problem.obj, Curvature("fisher", mc_samples=samples, seed=0))
        with op:
            got = torch.stack([flatten(op(unflatten(v, op.params))) for v in probes.T], 1)
        errors.append(float(torch.linalg.matrix_norm(got - exact) / torch.linalg.matrix_norm(exact)))
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.25 * errors[0]  # Monte-Carlo error ~ 1/sqrt(S): 16x fewer samples, ~4x the error


@pytest.mark.parametrize(
    ("kind", "retain"), [("ggn", None), ("ggn", 1), ("fisher", 0), ("empirical-fisher", 1)]
)
def test_chunking_changes_nothing(problem: Problem, kind: str, retain: int | None) -> None:
    v = gaussian(problem.obj.params, torch.Generator().manual_seed(1))
    whole = GGN(problem.obj, Curvature(kind, mc_samples=3))(v)
    chunked_obj = Objective.from_module(problem.obj.model, problem.obj.x, problem.obj.y, problem.obj.loss, 20)
    chunked = GGN(chunked_obj, Curvature(kind, mc_samples=3), retain_chunks=retain)(v)
    torch.testing.assert_close(flatten(chunked), flatten(whole), atol=1e-12, rtol=0)


def test_graphs_released_after_with_block(problem: Problem) -> None:
    op = GGN(problem.obj, Curvature("ggn"))
    with op:
        op(gaussian(problem.obj.params, torch.Generator().manual_seed(0)))
        assert op.has_graph
    assert not op.has_graph and op.num_matvecs == 1


@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_ggn_equals_hessian_for_models_linear_in_parameters(
    digits: tuple[torch.Tensor, torch.Tensor], loss: str
) -> None:
    obj = build("linear", {}, loss, digits)  # softmax regression (ce), linear regression (mse)
    ggn = matrix(GGN(obj, Curvature("ggn")))
    torch.testing.assert_close(ggn, matrix(HVP(obj)), atol=1e-10, rtol=0)
    if loss == "mse":  # closed form: (2/N) X~^T X~ per output, X~ = [X, 1], weights row-major (C, d)
        x1 = torch.cat([obj.x.flatten(1), torch.ones(N_SAMPLES, 1, dtype=torch.float64)], 1)
        gram = 2 * x1.T @ x1 / N_SAMPLES
        c, d = obj.params["head.weight"].shape
        torch.testing.assert_close(
            ggn[: c * d, : c * d], torch.kron(torch.eye(c, dtype=torch.float64), gram[:d, :d])
        )
        torch.testing.assert_close(ggn[c * d :, c * d :], gram[d, d] * torch.eye(c, dtype=torch.float64))


def test_ggn_lanczos_matches_dense(problem: Problem) -> None:
    exact = torch.linalg.eigvalsh(problem.ggn)
    res = spectrum.lanczos(GGN(problem.obj, Curvature("ggn")), k=3, tol=1e-10)
    assert res.converged
    got = torch.tensor(res.eigenvalues, dtype=torch.float64)
    torch.testing.assert_close(got, exact.flip(0)[:3], atol=1e-8, rtol=1e-8)


@pytest.mark.parametrize("kind", ["hessian", "ggn"])
def test_block_spectrum_is_the_dense_sub_block_and_interlaces(problem: Problem, kind: str) -> None:
    full = problem.hessian if kind == "hessian" else problem.ggn
    names = list(problem.obj.params)
    offsets = torch.cumsum(torch.tensor([0] + [t.numel() for t in problem.obj.params.values()]), 0)
    lam_full = torch.linalg.eigvalsh(full)
    traces = 0.0
    for owner, group in blocks.layers(names).items():
        idx = torch.cat([torch.arange(offsets[names.index(n)], offsets[names.index(n) + 1]) for n in group])
        sub = torch.linalg.eigvalsh(full[idx][:, idx])
        block_obj = blocks.restrict(problem.obj, blocks.select(problem.obj.params, (rf"{owner}\..*",)))
        op = curvature_operator(block_obj, Curvature(kind))
        res = spectrum.lanczos(op, k=1, which="both", tol=1e-10, max_iter=op.dim)
        assert res.eigenvalues[0] == pytest.approx(float(sub[-1]), rel=1e-7, abs=1e-10)
        assert res.eigenvalues[0] <= float(lam_full[-1]) * (1 + 1e-9)
        assert res.eigenvalues[1] >= float(lam_full[0]) - 1e-9 * float(lam_full.abs().max())
        traces += float(sub.sum())
    assert traces == pytest.approx(float(lam_full.sum()), rel=1e-10)  # block traces add up


def test_select_and_restrict_refuse_bad_blocks(problem: Problem) -> None:
    with pytest.raises(ValueError, match="matches no parameter"):
        blocks.select(problem.obj.params, ("nope.*",))
    with pytest.raises(ValueError, match="not a regular expression"):
        blocks.select(problem.obj.params, ("(",))
    with pytest.raises(ValueError, match="the Hessian's operator"):
        GGN(problem.obj, Curvature("hessian"))


def test_embed_puts_zeros_outside_the_block(problem: Problem) -> None:
    first = next(iter(problem.obj.params))
    full = blocks.embed({first: torch.ones_like(problem.obj.params[first])}, problem.obj.params)
    assert list(full) == list(problem.obj.params)
    assert float(flatten(full).sum()) == problem.obj.params[first].numel()


def test_model_with_unused_parameter(digits: tuple[torch.Tensor, torch.Tensor]) -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used = nn.Linear(64, 10)
            self.unused = nn.Linear(2, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.used(x.flatten(1))

    model = Net().double().eval()
    obj = Objective.from_module(model, *digits, loss="ce")
    v = gaussian(obj.params, torch.Generator().manual_seed(0))
    out = GGN(obj, Curvature("ggn"))(v)
    assert float(flatten({k: out[k] for k in ("unused.weight", "unused.bias")}).abs().sum()) == 0.0
    unused = blocks.restrict(obj, ["unused.weight", "unused.bias"])
    assert float(flatten(GGN(unused, Curvature("ggn"))(unused.params)).abs().sum()) == 0.0


@pytest.mark.parametrize("outputs", [None, 2])
def test_regression_targets_ggn_is_the_least_squares_hessian(outputs: int | None) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(30, 4, generator=g, dtype=torch.float64)
    y = (
        torch.randn(30, generator=g, dtype=torch.float64)
        if outputs is None
        else torch.randn(30, outputs, generator=g, dtype=torch.float64)
    )
    model = nn.Linear(4, outputs or 1).double().eval()
    obj = Objective.from_module(model, x, y, loss="mse")
    ggn = matrix(GGN(obj, Curvature("ggn")))
    torch.testing.assert_close(ggn, matrix(HVP(obj)), atol=1e-12, rtol=0)
    x1 = torch.cat([x, torch.ones(30, 1, dtype=torch.float64)], 1)
    gram = 2 * x1.T @ x1 / 30  # per output; weights row-major (D, 4), then the D biases
    c = outputs or 1
    torch.testing.assert_close(
        ggn[: 4 * c, : 4 * c], torch.kron(torch.eye(c, dtype=torch.float64), gram[:4, :4])
    )
    ef = references(obj).empirical_fisher
    torch.testing.assert_close(matrix(GGN(obj, Curvature("empirical-fisher"))), ef, atol=1e-12, rtol=0)
