"""Run inventory (seed 001 Table 1) and per-group aggregates.

One row per run: model and size, dataset and split sizes, optimiser settings, epochs and stop reason,
final losses and accuracies, and the generalisation gap (train accuracy − test accuracy, seed 003; and
test loss − train loss). Values come from the train record, else from the checkpoint header. Runs on
regression data have no accuracy: when no run has one, the accuracy columns are left out.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lscape_cli.report import probes
from lscape_cli.report.cells import (
    DASH,
    Cell,
    Source,
    Table,
    fmt,
    get,
    mean_std_cell,
    number_cell,
    sources_mean_std,
    text_cell,
)
from lscape_cli.report.runs import Run, key_source, sort_key

FINALS = ("train_loss", "val_loss", "test_loss", "train_accuracy", "val_accuracy", "test_accuracy")
GAP_NOTE = {
    "gap_acc": "generalisation gap: train accuracy − test accuracy",
    "gap_loss": "generalisation gap: test loss − train loss",
}


def _src(run: Run, pointer: str) -> Source | None:
    """A source for a value of the run's settings (``/training/lr`` ...)."""
    value = get(run.meta, pointer)
    return None if value is None else Source(run.meta_record, run.meta_prefix + pointer, value)


def run_values(run: Run, rels: dict[str, str]) -> dict[str, Source]:
    """The run's settings-free numbers (final losses, accuracies, epochs), each with its source.

    Probe values depend on how they were measured: :func:`lscape_cli.report.probes.run_values`.
    """
    out: dict[str, Source] = {}
    if run.train is not None:
        r, data = rels[str(run.train.path)], run.train.data
        for name in FINALS:
            p = f"/results/final/{name}"
            if get(data, p) is not None:
                out[name] = Source(r, p, get(data, p))
        for name, p in (
            ("num_parameters", "/results/num_parameters"),
            ("epochs_run", "/results/epochs"),
            ("best_epoch", "/results/best_epoch"),
        ):
            if get(data, p) is not None:
                out[name] = Source(r, p, get(data, p))
        if get(data, "/results/stop_reason") is not None:
            out["stop_reason"] = Source(r, "/results/stop_reason", get(data, "/results/stop_reason"))
    else:
        for name in FINALS:
            if (s := _src(run, f"/metrics/{name}")) is not None:
                out[name] = s
        for name, p in (
            ("epochs_run", "/training/epochs_run"),
            ("best_epoch", "/training/best_epoch"),
            ("stop_reason", "/training/stop_reason"),
        ):
            if (s := _src(run, p)) is not None:
                out[name] = s
    return out


RULES = ("/training/tol", "/training/grad_tol", "/training/patience")
BUDGET_FLAG = "budget stop"


def stop_cell(run: Run, values: dict[str, Source]) -> Cell:
    """The stop reason, flagged when a run given a convergence rule ran out of epochs or steps instead."""
    cell = source_cell(values.get("stop_reason"))
    has_rule = any(get(run.meta, p) is not None for p in RULES)
    if has_rule and cell.text in ("epochs", "max_steps"):
        cell.note = "a convergence rule (tol, grad_tol or patience) was set but the epoch/step budget ran out"
        cell.flag(BUDGET_FLAG)
    return cell


def gap_cell(values: dict[str, Source], kind: str) -> Cell:
    """Train acc − test acc (``gap_acc``) or test loss − train loss (``gap_loss``)."""
    a, b = ("train_accuracy", "test_accuracy") if kind == "gap_acc" else ("test_loss", "train_loss")
    if a not in values or b not in values:
        return Cell(DASH)
    gap = float(values[a].value) - float(values[b].value)
    return number_cell(gap, (values[a], values[b]), GAP_NOTE[kind], "difference")


def gap_value(values: dict[str, Source], kind: str) -> float | None:
    """The gap as a number (``None`` when a value is missing)."""
    return gap_cell(values, kind).sort


def source_cell(s: Source | None) -> Cell:
    """A cell showing one source's value (``–`` for none)."""
    if s is None:
        return Cell(DASH)
    return Cell(fmt(s.value), (s,), sort=_sortable(s.value), value=_sortable(s.value))


def _cell(values: dict[str, Source], name: str) -> Cell:
    return source_cell(values.get(name))


def _sortable(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return v if isinstance(v, int) else float(v)


def _setting(run: Run, pointer: str, rels: dict[str, str]) -> Cell:
    return source_cell(_src(run, pointer))


def _model(run: Run, rels: dict[str, str]) -> Cell:
    """The model by name and size; a model built from a source by its source and arguments."""
    source = _src(run, "/model/config/source")
    if source is not None:  # --model-def / torchvision: mynet.py:build {"channels": 8}
        kwargs = get(run.meta, "/model/config/kwargs")
        text = Path(str(source.value).split(":")[0]).name + (
            ":" + str(source.value).split(":", 1)[1] if ":" in str(source.value) else ""
        )
        if kwargs:
            text += " " + json.dumps(kwargs, sort_keys=True)
        return Cell(text, (source,), note=str(get(run.meta, "/model/config/file") or source.value))
    sources = [
        s for p in ("/model/name", "/model/config/depth", "/model/config/width") if (s := _src(run, p))
    ]
    if not sources:
        return Cell(DASH)
    text = str(sources[0].value)
    extra = [f"{s.pointer.rsplit('/', 1)[1]} {s.value}" for s in sources[1:]]
    return Cell(text + (f" ({', '.join(extra)})" if extra else ""), tuple(sources))


def _dataset(run: Run) -> Cell:
    """The dataset by name; a ``--data`` file by its file name (the full path in the tooltip)."""
    cell = source_cell(_src(run, "/dataset/name"))
    path = _src(run, "/dataset/path")
    if cell.text == "file" and path is not None:
        return Cell(Path(str(path.value)).name, (path,), note=str(path.value))
    return cell


SETTINGS = (
    ("optimizer", "/training/optimizer"),
    ("lr", "/training/lr"),
    ("momentum", "/training/momentum"),
    ("batch", "/training/batch_size"),
    ("weight decay", "/training/weight_decay"),
)


def _has_accuracy(values: list[dict[str, Source]]) -> bool:
    """Whether any run has an accuracy (runs on regression data have none)."""
    return any(name in v for v in values for name in FINALS if name.endswith("_accuracy"))


OUTCOMES = (  # (header, value name), the outcome columns in the order a reader looks for them
    ("test acc", "test_accuracy"),
    ("test loss", "test_loss"),
    ("train acc", "train_accuracy"),
    ("train loss", "train_loss"),
    ("val acc", "val_accuracy"),
    ("val loss", "val_loss"),
)


def inventory(runs: list[Run], rels: dict[str, str], keys: list[str]) -> tuple[Table, Table]:
    """Seed 001 Table 1 for every run: outcomes first, then the settings in a second table.

    ``keys``: the compare/group keys, shown after the run's name in both. Two tables rather than one
    wide one: the outcomes (losses, accuracies, gaps, epochs, stop) fit the page without scrolling.
    """
    return _outcomes(runs, rels, keys), _settings(runs, rels, keys)


def _outcomes(runs: list[Run], rels: dict[str, str], keys: list[str]) -> Table:
    all_values = [run_values(run, rels) for run in runs]
    acc = _has_accuracy(all_values)
    finals = [(h, n) for h, n in OUTCOMES if acc or not n.endswith("_accuracy")]
    best = any("best_epoch" in v for v in all_values)
    columns = ["run", *keys, *(h for h, _ in finals[:2])]
    columns += ["gap (acc)", "gap (loss)"] if acc else ["gap (loss)"]
    columns += [h for h, _ in finals[2:]] + ["epochs", *(["best epoch"] if best else []), "stop"]
    caption = (GAP_NOTE["gap_acc"] + "; " if acc else "") + GAP_NOTE["gap_loss"]
    if best:
        caption += "; best epoch: with --restore-best, the epoch whose state the checkpoint holds"
    table = Table("inventory", "Run inventory: outcomes", columns, caption=caption)
    for run, values in zip(runs, all_values, strict=True):
        row = [run_cell(run), *(source_cell(key_source(run, key)) for key in keys)]
        row += [_cell(values, n) for _, n in finals[:2]]
        row += [gap_cell(values, "gap_acc")] if acc else []
        row.append(gap_cell(values, "gap_loss"))
        row += [_cell(values, n) for _, n in finals[2:]]
        row += [_cell(values, "epochs_run"), *([_cell(values, "best_epoch")] if best else [])]
        row.append(stop_cell(run, values))
        table.rows.append(row)
    return table


def _settings(runs: list[Run], rels: dict[str, str], keys: list[str]) -> Table:
    columns = ["run", *keys, "model", "parameters", "dataset", "train / val / test"]
    columns += [name for name, _ in SETTINGS]
    table = Table("settings", "Run inventory: settings", columns)
    for run in runs:
        values = run_values(run, rels)
        row = [run_cell(run), *(source_cell(key_source(run, key)) for key in keys)]
        row += [_model(run, rels), _cell(values, "num_parameters"), _dataset(run)]
        row.append(_sizes(run, rels))
        row += [_setting(run, p, rels) for _, p in SETTINGS]
        table.rows.append(row)
    return table


def run_cell(run: Run) -> Cell:
    """The run's name, with a visible badge when any of its records is stale."""
    note = "; ".join(run.stale)
    return Cell(run.label, note=note, badge="stale" if run.stale else "")


def _sizes(run: Run, rels: dict[str, str]) -> Cell:
    sources = [s for split in ("train", "val", "test") if (s := _src(run, f"/dataset/sizes/{split}"))]
    if len(sources) != 3:
        return Cell(DASH)
    return Cell(" / ".join(str(s.value) for s in sources), tuple(sources))


GROUP_METRICS = (
    ("train loss", "train_loss"),
    ("val loss", "val_loss"),
    ("test loss", "test_loss"),
    ("test acc", "test_accuracy"),
)
AFTER_PROBES = (("epochs", "epochs_run"),)


def _probe_columns(
    buckets: dict[Any, list[dict[probes.Setting, Source]]],
) -> list[tuple[str, probes.Setting]]:
    """One column per probe quantity and setting, headed by what tells the settings apart."""
    values = [v for vs in buckets.values() for v in vs]
    cols = []
    for quantity in probes.QUANTITIES:
        group = probes.settings(values, quantity)
        cols += [(probes.header(s, group), s) for s in group]
    return cols


def groups(runs: list[Run], rels: dict[str, str], key: str) -> Table:
    """Mean ± std (ddof 1) per value of ``key`` over the runs holding each metric.

    Probe quantities get one column per setting (split, samples, method; ε-sharpness kind, radius and
    directions), so a mean never mixes values measured differently; the caption spells out each setting.
    """
    buckets: dict[Any, list[dict[str, Source]]] = {}
    measured: dict[Any, list[dict[probes.Setting, Source]]] = {}
    for run in runs:
        s = key_source(run, key)
        buckets.setdefault(s.value if s else None, []).append(run_values(run, rels))
        measured.setdefault(s.value if s else None, []).append(probes.run_values(run, rels))
    present = [(h, m) for h, m in GROUP_METRICS if any(m in v for vs in buckets.values() for v in vs)]
    after = [(h, m) for h, m in AFTER_PROBES if any(m in v for vs in buckets.values() for v in vs)]
    probe_cols = _probe_columns(measured)
    acc = _has_accuracy([v for vs in buckets.values() for v in vs])
    settings = "; ".join(f"{h}: {s.describe()}" for h, s in probe_cols)
    table = Table(
        "groups",
        f"Groups by {key}",
        [key, "runs", *(h for h, _ in present), *(h for h, _ in probe_cols), *(h for h, _ in after)]
        + (["gap (acc)"] if acc else []),
        caption="mean ± std (ddof 1) over the runs of each group; each cell lists the records it averages"
        + (f". Probe settings: {settings} ({probes.DUPLICATES})" if settings else ""),
    )
    for value in sorted(buckets, key=sort_key):
        vals = buckets[value]
        row = [text_cell(value), text_cell(len(vals), len(vals))]
        row += [sources_mean_std([v[m] for v in vals if m in v]) for _, m in present]
        row += [sources_mean_std([v[s] for v in measured[value] if s in v]) for _, s in probe_cols]
        row += [sources_mean_std([v[m] for v in vals if m in v]) for _, m in after]
        row += [_gap_mean(vals)] if acc else []
        table.rows.append(row)
    return table


def _gap_mean(vals: list[dict[str, Source]]) -> Cell:
    """Mean ± std of the runs' gaps; sources come in (train accuracy, test accuracy) pairs."""
    cells = [c for c in (gap_cell(v, "gap_acc") for v in vals) if c.sort is not None]
    sources = tuple(s for c in cells for s in c.sources)
    note = "mean ± std of train accuracy − test accuracy"
    return mean_std_cell([c.sort for c in cells if c.sort is not None], sources, note, "mean_std_gap")
