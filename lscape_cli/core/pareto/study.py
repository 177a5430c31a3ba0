"""`pareto`'s library call: seed 000's fit-versus-flatness study over many runs, and general fronts.

:func:`run_pareto` groups runs (one checkpoint each, with its configuration and metrics, as
:class:`lscape_cli.storage.runs.Run` collects them) by a configuration key and applies the maths of
:mod:`lscape_cli.core.pareto.fronts` per group and across groups. The ``results`` keys are documented in
docs/formats.md; the checkpoints' parameters, for the spread statistics, come through a loader so this
module never opens a file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypedDict, cast

import numpy as np

from lscape_cli.core.params import Params
from lscape_cli.core.pareto import fronts as P
from lscape_cli.core.pareto.fronts import GroupSummary, MultiFront, Scan
from lscape_cli.errors import LscapeError

PRODUCERS = {
    "frobenius": "--frobenius",
    "trace": "--trace",
    "lambda_max": "--lambda-max",
    "grad_norm": "--grad-norm",
    "effective_rank": "--density",
    "lambda_min": "--lambda-min",
}


class RunLike(Protocol):
    """One checkpoint's flat configuration and metrics (:class:`lscape_cli.storage.runs.Run`)."""

    checkpoint: Path
    config: dict[str, Any]
    metrics: dict[str, float | None]


Loader = Callable[[Path], Any]  # checkpoint -> a loaded model with ``.spec`` and ``.module``


@dataclass(frozen=True)
class ParetoRequest:
    """What to analyse: the grouping key, the fit/flatness/target metrics, the optional general fronts."""

    group_by: str = "model.depth"
    x: str = "train_loss"
    y: str = "frobenius"
    target: str = "val_loss"
    metrics: tuple[str, ...] = ()  # NAME:min or NAME:max
    reference: str | None = None  # hypervolume reference point, comma-separated
    params: bool = True  # parameter-space spread (needs the checkpoints)
    align: bool = True  # also the spread after permutation alignment


class ParamStats(TypedDict, total=False):
    """A group's ``parameters``: the restarts' spread in parameter space (before and after alignment)."""

    rho_rms: float
    spread_about_centroid: float
    num_parameters: int
    spread_after_alignment: float


class Group(GroupSummary, total=False):
    """One group of ``results.groups``: its summary, its runs and their target."""

    runs: list[str]
    target_mean: float
    stopped_on_budget: list[str]
    parameters: ParamStats


class AcrossGroups(TypedDict, total=False):
    """``results.across_groups``: the groups and, with two or more, :class:`.fronts.GlobalLambda`'s keys."""

    groups: list[str]
    lambda_g: float
    objective: float
    mae_without_curvature: float
    mae_with_curvature: float
    relative_improvement: float | None
    scan: Scan
    method: str
    scale: float
    lambda_G_at_bound: bool
    warning: str


class Multi(MultiFront, total=False):
    """``results.multi`` (``--metric``): the general front over the named metrics."""

    metrics: list[str]
    runs: list[str]


class ParetoResults(TypedDict, total=False):
    """``results`` of a ``lscape.pareto/1`` record (details in docs/formats.md)."""

    group_by: str  # the config key runs are grouped by, e.g. model.depth
    x: str  # fit metric
    y: str  # flatness metric
    target: str  # held-out metric the proxy x + lambda*y should track
    groups: dict[str, Group]
    across_groups: AcrossGroups
    num_runs: int
    multi: Multi
    figures: list[str]  # file names beside the record (added by the command)
    figure_axes: dict[str, str]  # x, y: linear or log, the ellipse figure's axes (--axes)


@dataclass
class ParetoResult:
    """The record's ``results`` (less ``figures``), its warnings, and the per-group table for the plots."""

    results: ParetoResults
    keys: list[Any]  # the groups, in order
    table: dict[Any, np.ndarray]  # group -> (runs, 3) values of x, y, target
    warnings: list[str] = field(default_factory=list)


def stopped_on_budget(run: RunLike) -> bool:
    """True when a run given a convergence rule (tol, grad_tol, patience) ran out of epochs/steps instead."""
    rules = ("training.tol", "training.grad_tol", "training.patience")
    has_rule = any(run.config.get(k) is not None for k in rules)
    return has_rule and run.config.get("training.stop_reason") in ("epochs", "max_steps")


def run_pareto(runs: Sequence[RunLike], req: ParetoRequest, load: Loader) -> ParetoResult:
    """The study of ``runs`` that ``req`` asks for (``load`` reads a checkpoint when ``req.params``)."""
    _check_homogeneous(runs)
    groups = _group(runs, req.group_by)
    names = [req.x, req.y, req.target]
    table = {g: np.array([[_metric(r, m) for m in names] for r in rs]) for g, rs in groups.items()}
    per_group: dict[str, Group] = {}
    warnings: list[str] = []
    for g, rs in groups.items():
        summary = cast(Group, P.group_summary(table[g][:, :2]))  # the keys below join it
        summary["runs"] = [str(r.checkpoint) for r in rs]
        summary["target_mean"] = float(table[g][:, 2].mean())
        summary["stopped_on_budget"] = [str(r.checkpoint) for r in rs if stopped_on_budget(r)]
        if req.params:
            summary["parameters"] = _param_stats(rs, req.align, warnings, load)
        per_group[str(g)] = summary
    budget = sum(len(s["stopped_on_budget"]) for s in per_group.values())
    if budget:
        warnings.append(
            f"{budget} of {len(runs)} runs stopped on their budget before their convergence rule fired"
        )
    keys = list(groups)
    means = np.array([table[g].mean(axis=0) for g in keys])
    across: AcrossGroups = {"groups": [str(g) for g in keys]}
    if len(keys) >= 2:
        across = {**across, **P.global_lambda(means[:, 0], means[:, 1], means[:, 2])}
        warnings.extend([across.pop("warning")] if "warning" in across else [])  # a boundary lambda_G
    else:
        warnings.append("lambda_G needs at least two groups")
    results: ParetoResults = {
        "group_by": req.group_by,
        "x": req.x,
        "y": req.y,
        "target": req.target,
        "groups": per_group,
        "across_groups": across,
        "num_runs": len(runs),
    }
    if req.metrics:
        results["multi"] = _multi(runs, list(req.metrics), req.reference)
    return ParetoResult(results, keys, table, warnings)


def _metric(run: RunLike, name: str) -> float:
    clash = getattr(run, "conflicts", {}).get(name)
    if clash:
        raise LscapeError(
            f"metric {name!r} has different values in {len(clash)} probe records of one checkpoint "
            f"({', '.join(clash)})",
            str(run.checkpoint),
            "pass the record files to use instead of their folder, or delete the record you do not want",
        )
    value = run.metrics.get(name)
    if value is None:
        flag = PRODUCERS.get(name)
        how = (
            f"run `lscape probe {run.checkpoint} {flag}`"
            if flag
            else "it comes from `lscape train` records or `lscape probe` (check the name)"
        )
        raise LscapeError(f"metric {name!r} missing for a run", str(run.checkpoint), how)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        where = getattr(run, "sources", {}).get(name, str(run.checkpoint))
        raise LscapeError(
            f"metric {name!r} is {json.dumps(value)[:40]}, not a finite number (a fit would fail on it)",
            f"{where} (key {name})",
            "re-run the command that wrote it, or leave that run out",
        )
    return float(value)


def _check_homogeneous(runs: Sequence[RunLike]) -> None:
    for key in ("dataset.name", "training.loss"):
        values = sorted({str(r.config.get(key)) for r in runs})
        if len(values) > 1:
            raise LscapeError(
                f"runs mix {key} values {', '.join(values)}",
                key,
                "analyse one dataset and one loss at a time",
            )


def _group(runs: Sequence[RunLike], key: str) -> dict[Any, list[RunLike]]:
    groups: dict[Any, list[RunLike]] = {}
    for r in runs:
        if key not in r.config:
            known = ", ".join(sorted(k for k in r.config if not k.startswith("dataset.normalization")))
            raise LscapeError(f"unknown group key {key!r}", "--group-by", f"known keys: {known}")
        value = r.config[key]
        groups.setdefault(json.dumps(value) if isinstance(value, (list, dict)) else value, []).append(r)
    return dict(sorted(groups.items(), key=lambda kv: _group_order(kv[0])))


def _group_order(key: Any) -> tuple[int, Any]:
    """Group keys may mix null (e.g. full batch), numbers and strings: null, then numbers, then text."""
    if key is None:
        return (0, 0)
    if isinstance(key, (int, float)) and not isinstance(key, bool):
        return (1, key)
    return (2, str(key))


def _param_stats(runs: list[RunLike], align: bool, warnings: list[str], load: Loader) -> ParamStats:
    loaded = [load(r.checkpoint) for r in runs]
    flat = np.stack(
        [
            np.concatenate([p.detach().double().numpy().ravel() for p in lm.module.parameters()])
            for lm in loaded
        ]
    )
    stats = cast(ParamStats, dict(P.spreads(flat)))  # the keys below join it
    stats["num_parameters"] = int(flat.shape[1])
    if align and len(loaded) > 1:
        aligned = _aligned(loaded, warnings)
        if aligned is not None:
            stats["spread_after_alignment"] = P.spreads(aligned)["spread_about_centroid"]
    return stats


def _aligned(loaded: list[Any], warnings: list[str]) -> Any:
    """Every restart's parameters permuted onto the first's hidden units (weight matching)."""
    from lscape_cli.core.connectivity import alignment
    from lscape_cli.core.connectivity.permutation_trace import spec_for

    def params(lm: Any) -> Params:
        return {n: p.detach() for n, p in lm.module.named_parameters()}

    ref = loaded[0]
    names = list(params(ref))
    rows = [np.concatenate([params(ref)[n].double().numpy().ravel() for n in names])]
    for lm in loaded[1:]:
        try:
            spec = spec_for(ref.module, ref.spec)  # the registry's structure, or traced from the module
            moved = alignment.align(spec, params(ref), params(lm)).params
        except ValueError as exc:  # a family without a known permutation structure
            warnings.append(f"spread_after_alignment omitted: {exc}")
            return None
        rows.append(np.concatenate([moved[n].double().numpy().ravel() for n in names]))
    return np.stack(rows)


def _multi(runs: Sequence[RunLike], specs: list[str], reference: str | None) -> Multi:
    names, senses = [], []
    for spec in specs:
        name, _, sense = spec.partition(":")
        if sense not in ("min", "max"):
            raise LscapeError(f"invalid metric spec {spec!r}", "--metric", "write NAME:min or NAME:max")
        names.append(name)
        senses.append(sense)
    values = np.array([[_metric(r, m) for m in names] for r in runs])
    ref = None
    if reference:
        try:
            ref = [float(v) for v in reference.split(",")]
        except ValueError as exc:
            raise LscapeError(
                f"invalid reference point {reference!r}", "--reference", "give numbers, e.g. 1.0,0.5"
            ) from exc
        if not all(math.isfinite(v) for v in ref):
            raise LscapeError(
                f"reference point must be finite, got {reference!r}", "--reference", "e.g. 1.0,0.5"
            )
        if len(ref) != len(names):
            raise LscapeError(
                f"reference has {len(ref)} values for {len(names)} metrics",
                "--reference",
                "give one value per --metric",
            )
    res = cast(Multi, P.multi_front(values, senses, ref))  # the keys below join it
    res["metrics"] = names
    res["runs"] = [str(r.checkpoint) for r in runs]
    return res
