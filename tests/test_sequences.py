"""Token sequences, label smoothing and user losses on a tiny causal transformer, against dense float64.

The references never use lscape's loss code: the mean over non-padding tokens is written out with
``log_softmax``/``gather``, the Hessian is ``torch.func.hessian`` of it, and the GGN is
``Jᵀ (∇²_z L) J`` with ``J`` from ``jacrev`` and the output Hessian of the whole mean loss in ``z``.
The parameter Hessian is ``torch.autograd.functional.hessian`` (a double backward), not
``torch.func.hessian``: forward-over-reverse is wrong through an affine LayerNorm in this torch
(``lscape_cli.core.linalg.hvp.forward_mode_safe``; ``test_forward_mode_is_refused_through_layer_norm``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel

from lscape_cli import api
from lscape_cli.core.linalg import spectrum
from lscape_cli.core.linalg.curvature import GGN, Curvature
from lscape_cli.core.linalg.hvp import HVP, Objective, flatten, unflatten
from lscape_cli.core.losses import Loss
from lscape_cli.models.user import UserInputs

N, T, V = 6, 4, 5


class TinyLM(nn.Module):
    """Embedding, one causal pre-norm transformer layer, a head: ``(N, T)`` ids -> ``(N, T, V)``."""

    def __init__(self, returns: str = "tensor") -> None:
        super().__init__()
        self.embed = nn.Embedding(V, 4)
        self.pos = nn.Parameter(0.3 * torch.randn(T, 4))
        self.block = nn.TransformerEncoderLayer(4, 2, 6, dropout=0.0, batch_first=True, norm_first=True)
        self.head = nn.Linear(4, V)
        self.returns = returns

    def forward(self, x: torch.Tensor) -> object:
        h = self.embed(x) + self.pos[: x.shape[1]]
        mask = nn.Transformer.generate_square_subsequent_mask(x.shape[1], dtype=h.dtype)
        z = self.head(self.block(h, src_mask=mask, is_causal=True))
        return {"tuple": (z, h), "dict": {"logits": z, "hidden": h}}.get(self.returns, z)


def per_sequence_ce(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """A user loss: token cross-entropy summed over each sequence, mean over sequences."""
    return F.cross_entropy(z.flatten(0, 1), y.flatten(), ignore_index=-100, reduction="sum") / z.shape[0]


def reference_loss(loss: Loss) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The mean loss in ``z`` written out by hand (no F.cross_entropy for the built-ins)."""
    if loss.kind == "user":
        return lambda z, y: (
            (-(z.log_softmax(-1).gather(-1, y.clamp(min=0)[..., None])[..., 0]) * (y >= 0)).sum((0, 1))
            / z.shape[0]
        )
    eps = loss.label_smoothing

    def mean(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logp = z.log_softmax(-1)
        keep = y != -100
        nll = -logp.gather(-1, y.clamp(min=0)[..., None])[..., 0]
        per = (1 - eps) * nll - eps * logp.mean(-1)
        return (per * keep).sum() / keep.sum()

    return mean


LOSSES = {
    "ce": Loss("ce"),
    "ce-smoothed": Loss("ce", label_smoothing=0.2),
    "user": Loss("user", fn=per_sequence_ce, source="tests:per_sequence_ce"),
}


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, V, (N, T), generator=g)
    y = torch.randint(0, V, (N, T), generator=g)
    y[0, 2:] = -100  # padding: sequences of unequal length
    y[3, 1:] = -100
    y[5, 3] = -100
    return x, y


def tiny(returns: str = "tensor") -> nn.Module:
    torch.manual_seed(0)
    return TinyLM(returns).double().eval()


def dense(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: Loss
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(H, G)``: the Hessian and the GGN of the mean loss, dense."""
    params = {n: p.detach() for n, p in model.named_parameters()}
    flat = flatten(params)
    ref = reference_loss(loss)

    def outputs(v: torch.Tensor) -> torch.Tensor:
        with sdpa_kernel(SDPBackend.MATH):
            out: torch.Tensor = functional_call(model, unflatten(v, params), (x,))
        return out

    hessian = torch.autograd.functional.hessian(lambda v: ref(outputs(v), y), flat)  # see below
    z = outputs(flat).detach()
    jac = torch.func.jacrev(outputs)(flat).reshape(z.numel(), -1)
    out_h = torch.func.hessian(lambda zz: ref(zz, y))(z).reshape(z.numel(), z.numel())
    return hessian, jac.T @ out_h @ jac


def matrix(op: HVP | GGN) -> torch.Tensor:
    eye = torch.eye(op.dim, dtype=torch.float64)
    with op:
        return torch.stack([flatten(op(unflatten(e, op.params))) for e in eye], dim=1)


@pytest.mark.parametrize("name", list(LOSSES))
def test_hessian_and_ggn_equal_dense_references(data: tuple[torch.Tensor, torch.Tensor], name: str) -> None:
    loss, model = LOSSES[name], tiny()
    hessian, ggn = dense(model, *data, loss)
    for chunk in (N, 4):  # one chunk, and a ragged pair of chunks (4 + 2 sequences)
        obj = Objective.from_module(model, *data, loss, max_batch=chunk)
        h = matrix(HVP(obj))
        torch.testing.assert_close(h, hessian, atol=1e-9, rtol=0)
    g = matrix(GGN(obj, Curvature("ggn")))
    torch.testing.assert_close(g, ggn, atol=1e-9, rtol=0)
    exact = torch.linalg.eigvalsh(hessian)
    res = spectrum.lanczos(
        HVP(Objective.from_module(model, *data, loss, max_batch=4)), k=1, tol=1e-10, seed=0
    )
    assert abs(res.eigenvalues[0] - float(exact[-1])) < 1e-6
    assert abs(float(torch.trace(h)) - float(torch.trace(hessian))) < 1e-6
    res = spectrum.lanczos(GGN(obj, Curvature("ggn")), k=1, tol=1e-10, seed=0)
    assert abs(res.eigenvalues[0] - float(torch.linalg.eigvalsh(ggn)[-1])) < 1e-6


def test_padding_is_left_out_and_tokens_weigh_equally(data: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = data
    model = tiny()
    whole = api.probe(model, (x, y), lambda_max=True, max_batch=N, seed=0)
    chunked = api.probe(model, (x, y), lambda_max=True, max_batch=2, seed=0)
    with torch.no_grad():
        z = model(x)
    keep = y != -100
    assert whole["loss"]["value"] == pytest.approx(float(reference_loss(Loss("ce"))(z, y)), abs=1e-12)
    acc = int(((z.argmax(-1) == y) & keep).sum()) / int(keep.sum())
    assert whole["loss"]["accuracy"] == pytest.approx(acc, abs=1e-12)
    assert chunked["loss"]["value"] == pytest.approx(whole["loss"]["value"], abs=1e-12)
    assert chunked["lambda_max"]["estimate"] == pytest.approx(whole["lambda_max"]["estimate"], abs=1e-8)
    assert whole["hvp"]["attention_backend"] == "math"


@pytest.mark.slow  # 1,024 label draws per token
def test_fisher_draws_one_label_per_token_and_ignores_padding(
    data: tuple[torch.Tensor, torch.Tensor],
) -> None:
    model = tiny()
    _, ggn = dense(model, *data, Loss("ce"))
    generator = torch.Generator().manual_seed(2)
    probes = torch.randn(ggn.shape[0], 4, generator=generator, dtype=torch.float64)
    errors = []
    for samples in (1, 64, 1024):
        obj = Objective.from_module(model, *data, "ce", max_batch=4)
        op = GGN(obj, Curvature("fisher", mc_samples=samples, seed=0))
        with op:
            got = torch.stack([flatten(op(unflatten(v, op.params))) for v in probes.T], 1)
        errors.append(
            float(torch.linalg.matrix_norm(got - ggn @ probes) / torch.linalg.matrix_norm(ggn @ probes))
        )
    assert errors[0] > errors[1] > errors[2] and errors[2] < 0.1


def test_user_loss_refuses_the_monte_carlo_fisher(data: tuple[torch.Tensor, torch.Tensor]) -> None:
    obj = Objective.from_module(tiny(), *data, LOSSES["user"])
    with pytest.raises(ValueError, match="predictive distribution"):
        matrix(GGN(obj, Curvature("fisher")))


def test_api_takes_a_dataloader_with_a_ragged_last_batch(data: tuple[torch.Tensor, torch.Tensor]) -> None:
    from torch.utils.data import DataLoader, TensorDataset

    x, y = data
    loader = DataLoader(TensorDataset(x, y), batch_size=4)  # batches of 4 and 2 sequences
    kw = {"lambda_max": True, "trace": True, "seed": 0}
    by_tensor = api.probe(tiny(), (x, y), **kw)
    by_loader = api.probe(tiny(), loader, **kw)
    for key in ("lambda_max", "trace"):
        assert by_loader[key]["estimate"] == pytest.approx(by_tensor[key]["estimate"], abs=1e-10)
    assert by_loader["loss"]["value"] == pytest.approx(by_tensor["loss"]["value"], abs=1e-12)


def test_api_takes_a_loss_callable_dict_inputs_and_named_outputs(
    data: tuple[torch.Tensor, torch.Tensor],
) -> None:
    x, y = data

    class Keywords(TinyLM):
        def forward(self, input_ids: torch.Tensor) -> object:  # type: ignore[override]
            return super().forward(input_ids)

    torch.manual_seed(0)
    keyworded = Keywords("dict").double().eval()
    batches = [({"input_ids": x[:4]}, y[:4]), ({"input_ids": x[4:]}, y[4:])]
    got = api.probe(
        keyworded, batches, loss=per_sequence_ce, output="logits", lambda_max=True, seed=0, tol=1e-10
    )
    hessian, _ = dense(tiny(), x, y, LOSSES["user"])
    assert got["lambda_max"]["estimate"] == pytest.approx(float(torch.linalg.eigvalsh(hessian)[-1]), abs=1e-6)
    as_tuple = api.probe(tiny("tuple"), (x, y), lambda_max=True, seed=0)  # a tuple: element 0 by default
    assert as_tuple["lambda_max"]["estimate"] == pytest.approx(
        api.probe(tiny(), (x, y), lambda_max=True, seed=0)["lambda_max"]["estimate"], abs=1e-10
    )
    assert (
        not keyworded._forward_hooks and not keyworded._forward_pre_hooks
    )  # the caller's model is untouched


def test_a_loss_returning_a_vector_and_a_missing_output_are_one_line_errors(
    data: tuple[torch.Tensor, torch.Tensor],
) -> None:
    from lscape_cli.errors import LscapeError

    x, y = data
    with pytest.raises(LscapeError, match=r"returned \(\d+,\), not a scalar tensor: --loss-def"):
        api.probe(tiny(), (x, y), loss=lambda z, t: z.sum((1, 2)))
    with pytest.raises(LscapeError, match=r"has no tensor 'scores': --output"):
        api.probe(tiny("dict"), (x, y), output="scores")
    with pytest.raises(LscapeError, match=r"not a tensor: --output"):
        api.probe(tiny("dict"), (x, y))


def test_forward_mode_is_refused_through_layer_norm(data: tuple[torch.Tensor, torch.Tensor]) -> None:
    obj = Objective.from_module(tiny(), *data, "ce")
    assert HVP(obj, "measure").strategy == "double_backward"
    assert HVP(obj, "measure").chosen_by == "layer-norm-double-backward"
    with pytest.raises(ValueError, match="forward-mode"):
        HVP(obj, "fwd_rev")


MODEL_FILE = """
import torch
from torch import nn


class TinyLM(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(5, 4)
        self.pos = nn.Parameter(0.3 * torch.randn(4, 4))
        self.block = nn.TransformerEncoderLayer(4, 2, 6, dropout=0.0, batch_first=True, norm_first=True)
        self.head = nn.Linear(4, 5)

    def forward(self, x):
        h = self.embed(x) + self.pos[: x.shape[1]]
        mask = nn.Transformer.generate_square_subsequent_mask(x.shape[1], dtype=h.dtype)
        return {"logits": self.head(self.block(h, src_mask=mask, is_causal=True))}


def build():
    return TinyLM()
"""
LOSS_FILE = """
import torch.nn.functional as F


def per_sequence_ce(z, y):
    return F.cross_entropy(z.flatten(0, 1), y.flatten(), ignore_index=-100, reduction="sum") / z.shape[0]
"""


@pytest.mark.slow  # about a minute: six commands (the README example runs the same path, tinier)
def test_cli_train_probe_with_a_user_loss_equals_the_dense_references(cli, tmp_path, data) -> None:
    """train, probe (per layer, GGN), slice, connect, report: --loss-def, --output, float64, dense refs."""
    import json

    import numpy as np

    from lscape_cli.models.loading import load_model

    x, y = data
    (tmp_path / "tiny_lm.py").write_text(MODEL_FILE)
    (tmp_path / "tiny_loss.py").write_text(LOSS_FILE)
    xs, ys = torch.cat([x] * 4), torch.cat([y] * 4)  # 24 sequences: 18 to train on, 3 val, 3 test
    np.savez(tmp_path / "d.npz", x=xs.numpy(), y=ys.numpy())
    model, loss = f"{tmp_path}/tiny_lm.py:build", f"{tmp_path}/tiny_loss.py:per_sequence_ce"
    common = ["--model-def", model, "--output", "logits", "--loss-def", loss, "--dtype", "float64"]
    run = cli(
        "train",
        *common,
        "--data",
        str(tmp_path / "d.npz"),
        "--epochs",
        "1",
        "--out",
        str(tmp_path / "r"),
        "--restarts",
        "2",
        "--quiet",
    )
    assert run.exit_code == 0, run.output
    ckpt = str(tmp_path / "r" / "model-r000.safetensors")
    probes = {}
    for kind in ("hessian", "ggn"):
        out = cli(
            "probe",
            ckpt,
            *common,
            "--curvature",
            kind,
            "--lambda-max",
            "--per-layer",
            "--tol",
            "1e-10",
            "--json",
        )
        assert out.exit_code == 0, out.output
        probes[kind] = json.loads(out.stdout)["results"]
    loaded = load_model(
        Path(ckpt), dtype=torch.float64, user=UserInputs(model_def=model, loss_def=loss, output="logits")
    )
    from lscape_cli import datasets

    spec = datasets.DatasetSpec("file", path=str(tmp_path / "d.npz"))
    split = datasets.load(spec, tmp_path, dtype=torch.float64)
    hessian, ggn = dense(
        loaded.module, split.x["train"], split.y["train"], LOSSES["user"]
    )  # the hook picks "logits"
    for kind, matrix_ in (("hessian", hessian), ("ggn", ggn)):
        assert probes[kind]["lambda_max"]["estimate"] == pytest.approx(
            float(torch.linalg.eigvalsh(matrix_)[-1]), abs=1e-6
        )
    head = [b for b in probes["hessian"]["per_layer"]["blocks"] if b["block"] == "head"][0]
    n = hessian.shape[0]
    sub = hessian[n - 25 :, n - 25 :]  # the head's weight and bias are the last 25 parameters
    assert head["lambda_max"]["estimate"] == pytest.approx(float(torch.linalg.eigvalsh(sub)[-1]), abs=1e-6)
    assert probes["hessian"]["hvp"]["attention_backend"] == "math"
    with torch.no_grad():
        reference = float(reference_loss(LOSSES["user"])(loaded.module(split.x["train"]), split.y["train"]))
    sliced = cli("slice", ckpt, *common, "--dims", "1", "--steps", "3", "--no-plot", "--json")
    assert sliced.exit_code == 0, sliced.output
    assert json.loads(sliced.stdout)["results"]["grid"]["loss"][0][1] == pytest.approx(reference, abs=1e-10)
    other = str(tmp_path / "r" / "model-r001.safetensors")
    joined = cli("connect", ckpt, other, *common, "--points", "3", "--no-plot", "--json")
    assert joined.exit_code == 0, joined.output
    assert json.loads(joined.stdout)["results"]["linear"]["train"]["loss"][0] == pytest.approx(
        reference, abs=1e-10
    )
    report = cli("report", str(tmp_path / "r"), "--out", str(tmp_path / "r" / "report.html"), "--quiet")
    assert report.exit_code == 0, report.output
