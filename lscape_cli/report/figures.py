"""The report's own figures, from train and probe records (seed 003 Figs. 1-5).

- training curves: loss and accuracy per epoch on train/val/test, one panel per group;
- tracked quantities: every scalar a train record's ``history[i]["tracked"]`` holds (the objects
  ``lscape probe`` writes under ``results.<name>``), one panel per quantity, ± stderr as a band;
- generalisation gap (train acc − test acc) versus final λmax and test loss versus ε-sharpness.
"""

from __future__ import annotations

from typing import Any

from lscape_cli.plotting import report as plots
from lscape_cli.report import probes
from lscape_cli.report.cells import fmt
from lscape_cli.report.document import Image
from lscape_cli.report.inventory import gap_value, run_values
from lscape_cli.report.runs import RUN_KEY, Run, key_source, sort_key

STYLES = ("-", "--", ":", "-.")


def colour_key(run: Run, key: str | None) -> Any:
    """The value a run is coloured by (``all runs`` without a key)."""
    if key is None:
        return "all runs"
    if key == RUN_KEY:
        return run.label
    s = key_source(run, key)
    return s.value if s else None


def _keys(runs: list[Run], key: str | None) -> list[Any]:
    return sorted({colour_key(r, key) for r in runs}, key=sort_key)


def _history(run: Run) -> list[dict[str, Any]]:
    return list((run.train.data.get("results") or {}).get("history") or []) if run.train else []


def _curve_panels(
    groups: dict[Any, list[Run]], colour: str | None, metric: str, gkey: str | None
) -> list[plots.Panel]:
    panels = []
    for g, runs in groups.items():
        title = f"{gkey} = {g}" if gkey else "all runs"
        panel = plots.Panel(title, "epoch", metric)
        for run in runs:
            hist = _history(run)
            for split, style in plots.SPLIT_STYLE.items():
                pts = [
                    (h["epoch"], h[f"{split}_{metric}"])
                    for h in hist
                    if h.get(f"{split}_{metric}") is not None
                ]
                if pts:
                    xs, ys = zip(*pts, strict=True)
                    key = colour_key(run, colour)
                    panel.series.append(plots.Series(key, list(xs), list(ys), style, run=run.label))
        if panel.series:
            panels.append(panel)
    return panels


def training_curves(groups: dict[Any, list[Run]], colour: str | None, gkey: str | None) -> list[Image]:
    """Loss and accuracy per epoch (train solid, val dashed, test dotted), one panel per group.

    The group panels share their y range, so groups compare at a glance.
    """
    runs = [r for rs in groups.values() for r in rs]
    out = []
    for metric, title in (("loss", "Loss per epoch"), ("accuracy", "Accuracy per epoch")):
        panels = _curve_panels(groups, colour, metric, gkey)
        if panels:
            fig = plots.grid(panels, _keys(runs, colour), colour or "", splits=True, share_y=True)
            out.append(
                Image(
                    f"curves-{metric}.png", title, plots.png(fig), "train: solid, val: dashed, test: dotted"
                )
            )
    return out


def tracked_scalars(obj: Any) -> list[tuple[str, float | None, float | None]]:
    """``(suffix, estimate, stderr)`` for each scalar in a probe-style result object.

    ε-sharpness (the first radius): ``max`` (S_max) and ``mean`` (S_mean ± its standard error).
    """
    if isinstance(obj, list):  # sharpness: one row per radius
        obj = obj[0] if obj else {}
        if not isinstance(obj, dict):
            return []
        rnd = obj.get("random") or {}
        return [("max", rnd.get("s_max"), None), ("mean", rnd.get("s_mean"), rnd.get("s_mean_stderr"))]
    if not isinstance(obj, dict):
        return [("", obj, None)] if isinstance(obj, (int, float)) else []
    if isinstance(obj.get("eigenvalues"), list):
        return [(f"λ{i + 1}", v, None) for i, v in enumerate(obj["eigenvalues"])]
    if isinstance(obj.get("curve"), list) and obj["curve"]:  # noise: the first sigma
        row = obj["curve"][0]
        return [(f"σ={row.get('sigma')}", row.get("loss_rise"), row.get("loss_rise_stderr"))]
    if "estimate" in obj:
        return [("", obj["estimate"], obj.get("stderr"))]
    return []


def tracked_title(name: str, obj: Any) -> str:
    """A tracked quantity's panel title with its parameters (method; ε-sharpness: kind, ε, directions)."""
    if isinstance(obj, list) and obj and isinstance(obj[0], dict):
        row = obj[0]
        n = (row.get("random") or {}).get("num_directions")
        return (
            f"ε-sharpness ({row.get('kind')}, ε={fmt(row.get('eps'))}, {n} directions)\n"
            "S_max solid, S_mean dashed (band: ± stderr)"
        )
    if isinstance(obj, dict) and isinstance(obj.get("curve"), list) and obj["curve"]:
        return f"{name}: loss rise at σ={fmt(obj['curve'][0].get('sigma'))} ({obj.get('method')})"
    method = obj.get("method") if isinstance(obj, dict) else None
    if name == "top_k":
        return f"top_k ({method}): λ1 solid, λ2 dashed, λ3 dotted"
    return f"{name} ({method})" if method else name


SUFFIX_STYLE = {"": "-", "max": "-", "mean": "--"}


def _tracked_panels(runs: list[Run], colour: str | None) -> list[plots.Panel]:
    panels: dict[str, plots.Panel] = {}
    for run in runs:
        series: dict[tuple[str, str], list[tuple[float, float | None, float | None]]] = {}
        for h in _history(run):
            for name, obj in (h.get("tracked") or {}).items():
                if name not in panels:
                    ylabel = "loss rise" if name in ("noise", "sharpness") else name
                    panels[name] = plots.Panel(tracked_title(name, obj), "epoch", ylabel)
                for suffix, est, err in tracked_scalars(obj):
                    series.setdefault((name, suffix), []).append((h["epoch"], est, err))
        for (name, suffix), pts in series.items():
            style = STYLES[int(suffix[1:]) - 1] if suffix[1:].isdigit() else SUFFIX_STYLE.get(suffix, "-")
            key = colour_key(run, colour)
            s = plots.Series(key, [p[0] for p in pts], [p[1] for p in pts], style, run=run.label)
            if any(p[2] is not None for p in pts):
                s.low = [None if p[1] is None or p[2] is None else p[1] - p[2] for p in pts]
                s.high = [None if p[1] is None or p[2] is None else p[1] + p[2] for p in pts]
            panels[name].series.append(s)
    return list(panels.values())


def tracked(runs: list[Run], colour: str | None) -> list[Image]:
    """Every tracked quantity over epochs, one panel each (± stderr as a band when recorded)."""
    panels = _tracked_panels(runs, colour)
    if not panels:
        return []
    fig = plots.grid(panels, _keys(runs, colour), colour or "")
    return [
        Image(
            "tracked.png", "Quantities tracked during training", plots.png(fig), "band: ± one standard error"
        )
    ]


PerRun = list[tuple[Any, str, dict[str, Any], dict[probes.Setting, Any]]]  # colour, run, values, probes


def _versus_panel(
    per_run: PerRun, setting: probes.Setting, group: list[probes.Setting]
) -> plots.Panel | None:
    """One point per run measured under ``setting``: gap vs λmax, or test loss vs ε-sharpness."""
    pts = []
    for key, label, v, m in per_run:
        y = gap_value(v, "gap_acc") if setting.quantity == "lambda_max" else _test_loss(v)
        if y is not None and setting in m:
            pts.append((float(m[setting].value), y, key, label))
    if not pts:
        return None
    keys = probes.distinguishing(group)
    if setting.quantity == "lambda_max":
        title, xlabel, ylabel = "gap vs final λmax", "final λmax", "train acc − test acc"
    else:
        title, xlabel, ylabel = "test loss vs ε-sharpness", "ε-sharpness (max rise)", "test loss"
    title += f"\n{setting.describe(keys)}" if keys else ""
    panel = plots.Panel(title, f"{xlabel}\n{_wrap(setting.describe())}", ylabel)
    panel.points = [(x, y, k) for x, y, k, _ in pts]
    panel.labels = [lab for _, _, _, lab in pts]  # direct labels: which point is which run
    return panel


def _test_loss(values: dict[str, Any]) -> float | None:
    return float(values["test_loss"].value) if "test_loss" in values else None


def _wrap(text: str, width: int = 56) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))


def versus_panels(
    runs: list[Run], rels: dict[str, str], colour: str | None
) -> list[tuple[probes.Setting, plots.Panel]]:
    """The panels of :func:`versus`, each with the one probe setting its points were measured under."""
    per_run = [
        (colour_key(r, colour), r.label, run_values(r, rels), probes.run_values(r, rels)) for r in runs
    ]
    out = []
    for quantity in ("lambda_max", "sharpness_max"):
        group = probes.settings([m for _, _, _, m in per_run], quantity)
        for setting in group:
            panel = _versus_panel(per_run, setting, group)
            if panel is not None:
                out.append((setting, panel))
    return out


def versus(runs: list[Run], rels: dict[str, str], colour: str | None) -> list[Image]:
    """Gap (train acc − test acc) vs final λmax, and test loss vs ε-sharpness: one point per run.

    One panel per probe setting (split, samples, method; ε-sharpness kind, radius, directions): values
    measured differently never share axes. Each panel's x label spells out its setting.
    """
    panels = versus_panels(runs, rels, colour)
    if not panels:
        return []
    fig = plots.grid([p for _, p in panels], _keys(runs, colour), colour or "", ncols=2)
    used = "; ".join(f"{s.name}: {s.describe()}" for s, _ in panels)
    caption = f"one point per run; one panel per probe setting ({used}; {probes.DUPLICATES})"
    return [Image("versus.png", "Generalisation versus curvature", plots.png(fig), caption)]
