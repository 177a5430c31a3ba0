"""Per-run probe values, each with the settings it was measured under.

A checkpoint is often probed more than once with different settings (seed 002: λmax by Lanczos and by
power iteration; ε-sharpness plain and adaptive at two radii). Values measured differently are not
comparable, so nothing picks "the" probe record of a run: every value carries its :class:`Setting`
(quantity, split and samples, method, and for ε-sharpness its kind, radius and number of directions),
and figures and group tables keep one panel or column per setting. When one run has several records
with the same setting, the first by record path speaks for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lscape_cli.report.cells import Source, fmt, get
from lscape_cli.report.runs import Run, sort_key

QUANTITIES = ("lambda_max", "trace", "frobenius", "sharpness_max")
NAMES = {"lambda_max": "λmax", "trace": "trace", "frobenius": "‖H‖_F", "sharpness_max": "ε-sharpness"}
DUPLICATES = "a run with several records of one setting: the first by record path"
PLAIN = {  # where a whole-split record holds each quantity
    "lambda_max": "/results/lambda_max/estimate",
    "trace": "/results/trace/estimate",
    "frobenius": "/results/frobenius/estimate",
}

FORMS = {"kind": "{}", "ε": "ε={}", "directions": "{} directions", "split": "{} split", "samples": "{}",
         "method": "{}", "mode": "{} mode", "curvature": "{}", "params": "params {}"}  # fmt: skip


@dataclass(frozen=True)
class Setting:
    """How a value was measured: its quantity and ``(name, value)`` pairs that must agree to compare."""

    quantity: str
    items: tuple[tuple[str, str], ...]

    @property
    def name(self) -> str:
        """The quantity as the report names it (``λmax``)."""
        return NAMES[self.quantity]

    def describe(self, keys: tuple[str, ...] | None = None) -> str:
        """The settings (only ``keys`` when given), e.g. ``adaptive, ε=0.05, 10 directions, test split``."""
        return ", ".join(
            FORMS.get(k, k + " {}").format(v) for k, v in self.items if keys is None or k in keys
        )


def sample_text(data: dict[str, Any]) -> str:
    """The samples a probe record measured on: the whole split, or K disjoint batches of B."""
    size = get(data, "/results/batches/batch_size") or get(data, "/config/batch_size")
    if get(data, "/results/batches") is None or size is None:
        return f"all {fmt(get(data, '/config/evaluation/num_samples'))} samples"
    k = get(data, "/results/batches/num_batches") or get(data, "/config/num_batches") or 1
    return f"{k} batch{'es' if k > 1 else ''} of {size}"


def _common(data: dict[str, Any], curvature: bool) -> list[tuple[str, str]]:
    items = [("split", fmt(get(data, "/config/evaluation/split"))), ("samples", sample_text(data))]
    if get(data, "/config/evaluation/mode") not in (None, "eval"):
        items.append(("mode", fmt(get(data, "/config/evaluation/mode"))))
    cur = get(data, "/config/request/curvature")
    if curvature and cur not in (None, "hessian"):
        items.append(("curvature", fmt(cur)))
    params = get(data, "/config/request/params")
    if curvature and params:
        items.append(("params", "+".join(map(str, params))))
    return items


def _first(data: dict[str, Any]) -> str:
    """Where the first (or only) set of results lives: the record, or its first batch."""
    return "/results/batches/per_batch/0" if get(data, "/results/batches") is not None else "/results"


def _curvature_values(data: dict[str, Any], record: str) -> list[tuple[Setting, Source]]:
    out = []
    batched = get(data, "/results/batches") is not None
    for q in ("lambda_max", "trace", "frobenius"):
        pointer = f"/results/batches/summary/{q}/mean" if batched else PLAIN[q]
        value = get(data, pointer)
        if value is None:
            continue
        method = get(data, f"{_first(data)}/{q}/method")
        items = [*_common(data, True), *([("method", fmt(method))] if method else [])]
        out.append((Setting(q, tuple(items)), Source(record, pointer, value)))
    return out


def _sharpness_setting(data: dict[str, Any], row: dict[str, Any]) -> Setting:
    rnd = row.get("random") or {}
    items = [
        ("kind", fmt(row.get("kind"))),
        ("ε", fmt(row.get("eps"))),
        ("directions", fmt(rnd.get("num_directions"))),
        *_common(data, False),
    ]
    return Setting("sharpness_max", tuple(items))


def _sharpness_values(data: dict[str, Any], record: str) -> list[tuple[Setting, Source]]:
    """One value per radius (whole split); the first radius's mean over batches (batched records)."""
    if get(data, "/results/batches") is not None:
        row = get(data, "/results/batches/per_batch/0/sharpness/0")
        pointer = "/results/batches/summary/sharpness_max/mean"
        value = get(data, pointer)
        if value is None or not isinstance(row, dict):
            return []
        return [(_sharpness_setting(data, row), Source(record, pointer, value))]
    out = []
    for i, row in enumerate(get(data, "/results/sharpness") or []):
        pointer = f"/results/sharpness/{i}/random/s_max"
        if isinstance(row, dict) and get(data, pointer) is not None:
            out.append((_sharpness_setting(data, row), Source(record, pointer, get(data, pointer))))
    return out


def record_values(data: dict[str, Any], record: str) -> list[tuple[Setting, Source]]:
    """Every comparable value of one probe record, with its setting."""
    return _curvature_values(data, record) + _sharpness_values(data, record)


def run_values(run: Run, rels: dict[str, str]) -> dict[Setting, Source]:
    """The run's value for each setting (several records with one setting: the first by path)."""
    out: dict[Setting, Source] = {}
    for probe in sorted(run.probes, key=lambda p: rels[str(p.path)]):
        for setting, source in record_values(probe.data, rels[str(probe.path)]):
            out.setdefault(setting, source)
    return out


def settings(values: list[dict[Setting, Source]], quantity: str) -> list[Setting]:
    """The settings of ``quantity`` some run has, in a stable order."""
    found = {s for v in values for s in v if s.quantity == quantity}
    return sorted(found, key=lambda s: [(k, sort_key(_number(v))) for k, v in s.items])


def _number(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def distinguishing(group: list[Setting]) -> tuple[str, ...]:
    """The setting names whose values differ within ``group`` (what tells its members apart)."""
    names = list(dict.fromkeys(k for s in group for k, _ in s.items))
    return tuple(k for k in names if len({dict(s.items).get(k) for s in group}) > 1)


def header(setting: Setting, group: list[Setting]) -> str:
    """The quantity's name, with what tells it from the other settings of its quantity."""
    keys = distinguishing(group)
    return f"{setting.name} ({setting.describe(keys)})" if keys else setting.name
