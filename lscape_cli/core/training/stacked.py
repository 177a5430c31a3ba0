"""R copies of one architecture as stacked tensors, and element-wise optimizers over them.

Parameters of the R restarts are stacked along a leading dimension (``name -> (R, *shape)``).
:class:`StackedModel` evaluates them together: ``torch.func.vmap`` of ``functional_call`` over that
dimension, one GEMM for a Linear first layer whose input all restarts share (full-batch steps), and a
Python loop over restarts for models whose BatchNorm updates running statistics in train mode (which
vmap cannot batch). :class:`Optimizer` applies torch.optim's SGD/Adam/AdamW update rules to the stacks
with multi-tensor (``torch._foreach_*``) calls, so each restart follows the trajectory it would follow
alone, up to float rounding of the batched kernels.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
from torch import nn
from torch.func import functional_call, vmap

from lscape_cli.core.attention import hessian_attention
from lscape_cli.core.landscape.surface import AfterFirst, first_layer
from lscape_cli.core.objective import chunked_mean, loss_sum, num_correct


class OptimizerSettings(Protocol):
    """The optimizer's part of a :class:`~lscape_cli.core.training.engine.TrainConfig` (read-only)."""

    @property
    def optimizer(self) -> str:
        """``"sgd"``, ``"adam"`` or ``"adamw"``."""
        ...

    @property
    def momentum(self) -> float:
        """SGD momentum."""
        ...

    @property
    def nesterov(self) -> bool:
        """SGD Nesterov momentum."""
        ...

    @property
    def beta1(self) -> float:
        """Adam's first-moment decay."""
        ...

    @property
    def beta2(self) -> float:
        """Adam's second-moment decay."""
        ...

    @property
    def eps(self) -> float:
        """Adam's denominator floor."""
        ...

    @property
    def weight_decay(self) -> float:
        """L2 added to the gradient (sgd, adam) or decoupled (adamw)."""
        ...


def has_batchnorm(model: nn.Module) -> bool:
    """True when train-mode forward passes mutate running statistics."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


class StackedModel:
    """R copies of one architecture as stacked tensors, evaluated together."""

    def __init__(self, model: nn.Module, states: list[dict[str, torch.Tensor]]) -> None:
        self.model = model
        names = dict(model.named_parameters())
        self.params = {n: torch.stack([s[n] for s in states]).requires_grad_(True) for n in names}
        self.buffers = {n: torch.stack([s[n] for s in states]) for n, _ in model.named_buffers()}
        self.loop_train = has_batchnorm(model)
        self.r = len(states)
        self.first = _first_linear(model)
        self.after = AfterFirst(model)

    def logits(self, x: torch.Tensor, train: bool, per_restart_x: bool) -> torch.Tensor:
        """(R, N, C) outputs; ``x`` is (N, ...) shared or (R, N, ...) per restart."""
        self.model.train(train)
        if train and self.loop_train:  # running-stat updates write into views of the stacked buffers
            outs = []
            for r in range(self.r):
                p = {n: t[r] for n, t in self.params.items()}
                b = {n: t[r] for n, t in self.buffers.items()}
                outs.append(functional_call(self.model, (p, b), (x[r] if per_restart_x else x,)))
            return torch.stack(outs)

        if train and self.first is not None and not per_restart_x:
            return self._shared_first_layer(x)

        def one(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], xb: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = functional_call(self.model, (p, b), (xb,))
            return out

        with hessian_attention(x.device):  # fused attention kernels have no vmap batching rule either
            return vmap(one, in_dims=(0, 0, 0 if per_restart_x else None))(self.params, self.buffers, x)

    def _shared_first_layer(self, x: torch.Tensor) -> torch.Tensor:
        """Full-batch forward of a model whose first layer is Linear: that layer for all R as ONE GEMM.

        ``vmap`` would broadcast the shared input into R batched matrix products (R copies of ``x``);
        one ``(N, D) @ (D, R*H)`` product does the same multiply-adds at a large GEMM's speed, and its
        backward is one GEMM too. Each column of the product is the restart's own ``x @ W_r^T``.
        """
        w = self.params[f"{self.first}.weight"]  # (R, H, D)
        b = self.params.get(f"{self.first}.bias")  # (R, H) or None
        z_in = self.model.first_layer_input(x)  # type: ignore[operator]
        z = z_in @ w.flatten(0, 1).T if b is None else torch.addmm(b.flatten(), z_in, w.flatten(0, 1).T)
        z = z.view(z.shape[0], self.r, -1).transpose(0, 1)  # (R, N, H)
        rest = {f"inner.{n}": t for n, t in self.params.items() if not n.startswith(f"{self.first}.")}
        bufs = {f"inner.{n}": t for n, t in self.buffers.items()}

        def one(p: dict[str, torch.Tensor], bb: dict[str, torch.Tensor], zr: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = functional_call(self.after, (p, bb), (zr,))
            return out

        return vmap(one)(rest, bufs, z)

    @torch.no_grad()
    def evaluate(
        self, x: torch.Tensor, y: torch.Tensor, loss: str, max_batch: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-restart mean loss and accuracy over a split, eval mode, chunked: two (R,) tensors."""

        def fn(xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            out = self.logits(xb, train=False, per_restart_x=False)
            sums = torch.stack([loss_sum(out[r], yb, loss) for r in range(self.r)])
            return sums, num_correct(out, yb, loss)

        return chunked_mean(fn, x, y, max_batch, loss)

    def state(self, r: int) -> dict[str, torch.Tensor]:
        """Restart ``r``'s state_dict in the module's key order, on CPU."""
        merged = {**self.params, **self.buffers}
        return {k: merged[k][r].detach().to("cpu").clone() for k in self.model.state_dict()}


def _first_linear(model: nn.Module) -> str | None:
    """The model's first layer when it is an ``nn.Linear`` that can be factored out, else None."""
    name = first_layer(model)
    return name if name is not None and isinstance(model.get_submodule(name), nn.Linear) else None


class Optimizer:
    """Element-wise optimizers on stacked parameters, following torch.optim's update rules.

    One update is a handful of ``torch._foreach_*`` calls over all parameter tensors (torch.optim's
    multi-tensor arithmetic, e.g. ``addcdiv`` for Adam), not a dozen kernels per tensor. When some
    restarts have stopped, the same arithmetic runs on copies and only the active rows are written back,
    so an active restart's numbers do not depend on whether the others are still running.
    """

    def __init__(self, cfg: OptimizerSettings, params: dict[str, torch.Tensor]) -> None:
        self.cfg = cfg
        self.t = 0
        self.m = {n: torch.zeros_like(p) for n, p in params.items()}
        self.v = {n: torch.zeros_like(p) for n, p in params.items()} if cfg.optimizer != "sgd" else {}

    @torch.no_grad()
    def step(self, params: dict[str, torch.Tensor], active: torch.Tensor, lr: float) -> None:
        """Update the restarts where ``active`` (R,) is True, at rate ``lr``; the rest stay frozen."""
        self.t += 1
        names = list(params)
        ps, gs = [params[n] for n in names], [params[n].grad for n in names]
        ms, vs = [self.m[n] for n in names], [self.v[n] for n in names if n in self.v]
        if bool(active.all()):
            self._update(ps, gs, ms, vs, lr)  # type: ignore[arg-type]
        else:
            new = [[t.clone() for t in ts] for ts in (ps, ms, vs)]
            self._update(new[0], gs, new[1], new[2], lr)  # type: ignore[arg-type]
            for old, upd in zip((ps, ms, vs), new, strict=True):
                for a, b in zip(old, upd, strict=True):
                    a.copy_(torch.where(active.view(-1, *([1] * (a.dim() - 1))), b, a))
        for p in ps:
            p.grad = None

    def _update(
        self,
        ps: list[torch.Tensor],
        gs: tuple[torch.Tensor, ...] | list[torch.Tensor],
        ms: list[torch.Tensor],
        vs: list[torch.Tensor],
        lr: float,
    ) -> None:
        """torch.optim's SGD (momentum, Nesterov) / Adam / AdamW step, in place on the lists."""
        c = self.cfg
        if c.weight_decay and c.optimizer == "adamw":
            torch._foreach_mul_(ps, 1 - lr * c.weight_decay)
        elif c.weight_decay:
            gs = torch._foreach_add(gs, ps, alpha=c.weight_decay)
        if c.optimizer == "sgd":
            if c.momentum:
                if self.t == 1:
                    torch._foreach_copy_(ms, gs)
                else:
                    torch._foreach_mul_(ms, c.momentum)
                    torch._foreach_add_(ms, gs)
                gs = torch._foreach_add(gs, ms, alpha=c.momentum) if c.nesterov else ms
            torch._foreach_add_(ps, gs, alpha=-lr)
            return
        torch._foreach_lerp_(ms, gs, 1 - c.beta1)
        torch._foreach_mul_(vs, c.beta2)
        torch._foreach_addcmul_(vs, gs, gs, 1 - c.beta2)
        denom = torch._foreach_sqrt(vs)
        torch._foreach_div_(denom, math.sqrt(1 - c.beta2**self.t))
        torch._foreach_add_(denom, c.eps)
        torch._foreach_addcdiv_(ps, ms, denom, -(lr / (1 - c.beta1**self.t)))
