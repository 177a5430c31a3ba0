"""Curvature tracked during training: the probe engine run on each restart at chosen epochs.

A :class:`Tracker` holds one fixed evaluation set (the first ``M`` samples of a split, in eval mode)
and one :class:`~lscape_cli.core.probe.engine.ProbeRequest`; :meth:`Tracker.measure` runs
:func:`~lscape_cli.core.probe.engine.run_probe` (the code path of ``lscape probe``, not a second
implementation) at one restart's parameters and keeps, per tracked quantity, exactly the object
``lscape probe`` writes under ``results.<name>``. So the value tracked at the last epoch equals
``lscape probe --samples M --split SPLIT --seed S`` of the final checkpoint up to float rounding.

Quantities (``--track`` grammar, comma-separated): ``lambda_max``, ``top_k:K``, ``trace``, ``frobenius``,
``grad_norm``, ``sharpness:EPS[:EPS...]``, ``noise:SIGMA[:SIGMA...]``. Estimator budgets and tolerances
are ``lscape probe``'s defaults (e.g. Lanczos to a relative error bound of 1e-6, 45 products for the
trace), recorded in the train record's ``config.tracking.request``.

Restarts are probed one after another: the estimators are sequential (Lanczos) or already batch their
products over vectors, and a restart's graph is freed before the next one is built.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any, TypedDict

import torch
from torch import nn

from lscape_cli.core.linalg.hvp import Objective
from lscape_cli.core.probe.engine import ProbeRequest, run_probe
from lscape_cli.core.probe.results import ProbeResults
from lscape_cli.core.samples import span

TRACKABLE = ("lambda_max", "top_k", "trace", "frobenius", "grad_norm", "sharpness", "noise")


class TrackingCost(TypedDict):
    """What probing one restart at one epoch cost (a history entry's ``tracking_cost``)."""

    wall_time_s: float
    num_matvecs: int


class TrackingProtocol(TypedDict):
    """:meth:`TrackSpec.to_dict`: what is tracked, how often, on which samples, with which request."""

    quantities: list[str]
    every: int
    split: str
    samples: int | None
    num_samples: int
    selection: str
    mode: str
    seed: int
    request: dict[str, object]  # dataclasses.asdict(ProbeRequest)


class TrackingConfig(TrackingProtocol):
    """:meth:`Tracker.describe`: a train record's ``config.tracking``."""

    loss: str
    max_batch: int


@dataclass(frozen=True)
class TrackSpec:
    """What to track, where and how often."""

    quantities: tuple[str, ...]  # names from TRACKABLE, in the order given
    request: ProbeRequest  # the probe engine's request (budgets, seed)
    every: int = 1  # probe every N epochs, plus the first and each restart's last
    split: str = "train"
    samples: int | None = None  # the first M samples of the split; None: all of it
    mode: str = "eval"  # BatchNorm running statistics, dropout off (as lscape probe)

    def due(self, epoch: int) -> bool:
        """True on epoch 1 and every ``every`` epochs (a restart's last epoch is added by the engine)."""
        return epoch == 1 or epoch % self.every == 0

    def to_dict(self, num_samples: int) -> TrackingProtocol:
        """``config.tracking`` of the train record."""
        return {
            "quantities": list(self.quantities),
            "every": self.every,
            "split": self.split,
            "samples": self.samples,
            "num_samples": num_samples,
            "selection": "first samples of the split, fixed for the whole run",
            "mode": self.mode,
            "seed": self.request.seed,
            "request": asdict(self.request),
        }


def _floats(text: str, name: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(":") if v)
    except ValueError:
        values = ()
    if not values or any(not (math.isfinite(v) and v > 0) for v in values):
        raise ValueError(f"{name} needs finite positive values, e.g. {name}:0.05 (got {text!r})")
    return values


def parse_track(text: str, seed: int = 0) -> tuple[tuple[str, ...], ProbeRequest]:
    """``"lambda_max,top_k:3,sharpness:0.05"`` -> (quantity names, the probe request measuring them)."""
    names: list[str] = []
    fields: dict[str, Any] = {"seed": seed}
    for item in (t.strip() for t in text.split(",")):
        name, _, arg = item.partition(":")
        if name not in TRACKABLE:
            raise ValueError(f"unknown quantity {name!r}; choose from {', '.join(TRACKABLE)}")
        if name in names:
            raise ValueError(f"{name!r} given twice")
        names.append(name)
        if name == "top_k":
            k = int(arg) if arg.isascii() and arg.isdigit() and len(arg) <= 9 else 0
            if k < 1:
                raise ValueError(f"top_k needs a count, e.g. top_k:3 (got {item!r})")
            fields["top_k"] = k
        elif name == "sharpness":
            fields["sharpness_eps"] = _floats(arg, name)
        elif name == "noise":
            fields["noise_sigmas"] = _floats(arg, name)
        elif arg:
            raise ValueError(f"{name} takes no argument (got {item!r})")
        else:
            fields[name] = True
    return tuple(names), ProbeRequest(**fields)


class Tracker:
    """Runs the probe engine on one restart's parameters and keeps the tracked quantities."""

    def __init__(self, spec: TrackSpec, x: torch.Tensor, y: torch.Tensor, loss: str, max_batch: int) -> None:
        m = int(y.shape[0]) if spec.samples is None else min(spec.samples, int(y.shape[0]))
        self.spec, self.x, self.y = spec, span(x, None, m), y[:m]
        self.loss, self.max_batch = loss, max_batch

    @property
    def num_samples(self) -> int:
        """M, the samples every tracked value is measured on."""
        return int(self.y.shape[0])

    def describe(self) -> TrackingConfig:
        """The protocol, for the record's ``config.tracking``."""
        return {**self.spec.to_dict(self.num_samples), "loss": self.loss, "max_batch": self.max_batch}

    def measure(
        self, model: nn.Module, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor]
    ) -> tuple[dict[str, object], TrackingCost]:
        """``{name: probe result}`` at ``params`` and its cost (``wall_time_s``, ``num_matvecs``).

        The model is left in eval mode.
        """
        t0 = time.perf_counter()
        model.eval()
        detached = {n: p.detach() for n, p in params.items()}
        obj = Objective(model, detached, dict(buffers), self.x, self.y, self.loss, self.max_batch)
        out = run_probe(obj, self.spec.request)
        entries: dict[str, object] = dict(out.results)  # quantity -> its ProbeResults entry
        tracked = {name: entries[name] for name in self.spec.quantities}
        cost: TrackingCost = {
            "wall_time_s": time.perf_counter() - t0,
            "num_matvecs": num_matvecs(out.results),
        }
        return tracked, cost


def num_matvecs(results: ProbeResults) -> int:
    """Hessian-vector products a probe run spent.

    λmax and top-k share one Lanczos run, trace and Frobenius one set of products.
    """
    eig = results.get("lambda_max") or results.get("lambda_min")
    tr = results.get("trace")
    return int(eig["num_matvecs"] if eig else 0) + int(tr["num_matvecs"] if tr else 0)


def check_split(split: str) -> None:
    """Refuse a split name other than train, val or test (ValueError)."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"unknown split {split!r}; use train, val or test")


def make_spec(
    track: str, every: int = 1, split: str = "train", samples: int | None = None, seed: int = 0
) -> TrackSpec:
    """A :class:`TrackSpec` from the ``--track*`` options (ValueError on a bad value)."""
    check_split(split)
    if every < 1 or (samples is not None and samples < 1):
        raise ValueError("--track-every and --track-samples must be positive")
    quantities, request = parse_track(track, seed)
    return TrackSpec(quantities, request, every, split, samples)


def make_tracker(spec: TrackSpec, splits: Any, cfg: Any) -> Tracker:
    """The tracker of a training run: ``spec.split`` of ``splits``, the run's loss and chunk size."""
    if splits.y[spec.split].shape[0] == 0:
        raise ValueError(f"the {spec.split} split is empty; track another split or give it samples")
    return Tracker(spec, splits.x[spec.split], splits.y[spec.split], cfg.loss, cfg.max_batch)
