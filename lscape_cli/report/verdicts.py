"""Each claim's verdict: lscape's number with its 95% interval over restarts, against the paper's direction.

**agrees** when the interval lies wholly on the side the paper expects (of 0 for a difference or a
correlation, of the threshold for a mean), **disagrees** when it lies wholly on the other side,
**inconclusive** otherwise, always with the reason in words. A claim is inconclusive, naming the run,
whenever a run it uses is at chance (test accuracy not above 1/classes by 3 binomial standard errors of
its test set), lacks a value, or when a group has one run (the spread over restarts is unknown).
The interval is over runs, so it carries each run's estimator noise; the largest relative estimator
uncertainty among the values used (an error bound or standard error the record gives) is shown beside
it, and the reason says when it is as large as the spread over restarts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from lscape_cli.errors import LscapeError
from lscape_cli.report import intervals
from lscape_cli.report.cells import DASH, Cell, Source, Table, fmt, fmt_err
from lscape_cli.report.claims import ClaimSpec
from lscape_cli.report.intervals import Interval
from lscape_cli.report.inventory import run_values
from lscape_cli.report.paper import Column, Joined, column_cells, holds, selected
from lscape_cli.report.runs import Run, key_source

AGREES, DISAGREES, INCONCLUSIVE = "agrees", "disagrees", "inconclusive"
CHANCE_SE = 3  # a run is at chance unless its test accuracy beats 1/classes by this many standard errors
SHOWN = 3  # runs named in a reason before "and K more"
COLUMNS = ["claim", "statement", "paper", "lscape [95% interval]", "n", "estimator ±", "verdict", "reason"]


@dataclass
class Verdict:
    """A claim's number, interval, verdict and reason, and the values behind it."""

    spec: ClaimSpec
    verdict: str
    reason: str
    estimate: float | None
    interval: Interval | None
    n: tuple[int, ...]  # runs per group (diff: a, b), else the runs used
    threshold: float | None = None
    estimator: float | None = None  # largest |±| / |value| among the values used
    estimator_of: str = ""
    sources: tuple[Source, ...] = ()

    def line(self) -> str:
        """``NAME: verdict (reason)``, what ``lscape report`` prints."""
        return f"{self.spec.name}: {self.verdict} ({self.reason})"

    def row(self) -> dict[str, Any]:
        """The CSV and ``--json`` row: numbers and words only."""
        iv = self.interval
        diff = self.spec.kind == "diff"
        return {
            "claim": self.spec.name,
            "kind": self.spec.kind,
            "test": self.spec.test(),
            "statement": self.spec.claim,
            "paper": self.spec.paper,
            "expect": self.spec.expect,
            "threshold": self.threshold,
            "estimate": self.estimate,
            "lo": iv.lo if iv else None,
            "hi": iv.hi if iv else None,
            "dof": iv.dof if iv else None,
            "n": sum(self.n),
            "n_a": self.n[0] if diff else None,
            "n_b": self.n[1] if diff else None,
            "estimator_rel": self.estimator,
            "verdict": self.verdict,
            "reason": self.reason,
        }


@dataclass
class _Values:
    """What a claim reads: per group, the runs with every column's value, and the runs left without one."""

    groups: list[list[tuple[Run, list[Cell]]]]
    missing: list[str] = field(default_factory=list)  # "RUN has no COLUMN"

    def numbers(self, g: int, j: int) -> list[float]:
        return [float(v) for _, cells in self.groups[g] if (v := cells[j].value) is not None]


def _named(items: list[str]) -> str:
    more = len(items) - SHOWN
    return "; ".join(items[:SHOWN]) + (f"; and {more} more" if more > 0 else "")


def _groups(spec: ClaimSpec, runs: list[Run], where: str) -> list[list[Run]]:
    if not runs:
        raise LscapeError("no run meets the claim's where conditions", where, "check where=KEY=VALUE")
    if spec.kind != "diff" or spec.group is None:
        return [runs]
    key = spec.group
    if not any(key_source(r, key) is not None for r in runs) and key != "run":
        raise LscapeError(
            f"no run has the group key {key!r}", where, "group by a settings key, e.g. model.depth"
        )
    out = []
    for want in (spec.a, spec.b):
        members = [r for r in runs if holds(r, key, str(want))]
        if not members:
            have = sorted({str(s.value) for r in runs if (s := key_source(r, key)) is not None})
            fix = f"the runs have {key} {', '.join(have)}" if have else "no run name matches: use a glob"
            raise LscapeError(f"no run has {key}={want}", where, fix)
        out.append(members)
    both = next((r.label for r in out[0] if r in out[1]), None)
    if both is not None:
        raise LscapeError(f"run {both} is in both groups", where, "give a and b that no run shares")
    return out


def _lacking(col: Column, cell: Cell) -> str:
    """A column a run has no number for: its title, and the text shown instead (a setting's word)."""
    return col.title() + ("" if cell.text == DASH else f" as a number ({cell.text!r})")


def _values(spec: ClaimSpec, joined: Joined, where: str) -> _Values:
    fns = [column_cells(col, joined, where) for col in spec.columns]
    groups = _groups(spec, selected(spec.where, joined.runs), where)
    out = _Values([])
    for members in groups:
        kept = []
        for run in members:
            cells = [fn(run) for fn in fns]
            lacking = [
                _lacking(c, cell) for c, cell in zip(spec.columns, cells, strict=True) if cell.value is None
            ]
            if lacking:
                out.missing.append(f"run {run.label} has no {' or '.join(lacking)}")
            else:
                kept.append((run, cells))
        out.groups.append(kept)
    return out


def chance(run: Run, rels: dict[str, str]) -> tuple[str | None, str | None]:
    """``(at chance, rule not applied)``: each a sentence naming the run, or None."""
    acc = run_values(run, rels).get("test_accuracy")
    classes, size = key_source(run, "dataset.num_classes"), key_source(run, "dataset.sizes.test")
    if acc is None or classes is None or not isinstance(acc.value, (int, float)):
        return (
            None,
            f"run {run.label} has no test accuracy (regression losses): the chance rule is not applied",
        )
    if size is None:
        return None, f"run {run.label} does not record its test-set size: the chance rule is not applied"
    p0, n = 1.0 / float(classes.value), int(size.value)
    margin = CHANCE_SE * math.sqrt(p0 * (1 - p0) / n)
    if float(acc.value) > p0 + margin:
        return None, None
    return (
        f"run {run.label} is at chance (test accuracy {acc.value:.3f}, chance {p0:.3f} + "
        f"{CHANCE_SE} s.e. {margin:.3f} on {n} test samples)"
    ), None


def _threshold(spec: ClaimSpec, runs: list[Run], where: str) -> float | None:
    if spec.value is None:
        return None
    if spec.per is None:
        return spec.value
    have = {s.value for r in runs if (s := key_source(r, spec.per)) is not None}
    numbers = [v for v in have if isinstance(v, (int, float)) and not isinstance(v, bool) and v != 0]
    if len(numbers) != 1 or len(have) != 1 or any(key_source(r, spec.per) is None for r in runs):
        got = ", ".join(map(str, sorted(have, key=str))) or "unset"
        raise LscapeError(
            f"value={spec.threshold_text()} needs one non-zero {spec.per} over the claim's runs, got {got}",
            where,
            f"narrow the runs with where={spec.per}=VALUE",
        )
    return spec.value / float(numbers[0])


def _estimator(spec: ClaimSpec, vals: _Values) -> tuple[float | None, str, float]:
    """The largest relative estimator uncertainty, whose it is, and the largest absolute one."""
    best, of, largest = None, "", 0.0
    for members in vals.groups:
        for run, cells in members:
            for col, cell in zip(spec.columns, cells, strict=True):
                if cell.err is None or cell.value is None or cell.value == 0:
                    continue
                rel = abs(cell.err) / abs(cell.value)
                largest = max(largest, abs(cell.err))
                if best is None or rel > best:
                    best, of = rel, f"{col.title()} of run {run.label}"
    return best, of, largest


Computed = tuple[float | None, Interval | None, list[str], float]
UNKNOWN = "the spread over restarts is unknown"


def _diff(spec: ClaimSpec, vals: _Values) -> Computed:
    a, b = vals.numbers(0, 0), vals.numbers(1, 0)
    est = math.fsum(a) / len(a) - math.fsum(b) / len(b) if a and b else None
    few = [f"{len(xs)} run(s) with {spec.group}={v}" for xs, v in ((a, spec.a), (b, spec.b)) if len(xs) < 2]
    if few:
        return est, None, [f"{' and '.join(few)}: {UNKNOWN} (needs 2 or more in each)"], 0.0
    return est, intervals.welch(a, b), [], max(_std(a), _std(b))


def _mean(vals: _Values) -> Computed:
    xs = vals.numbers(0, 0)
    est = math.fsum(xs) / len(xs) if xs else None
    if len(xs) < 2:
        return est, None, [f"{len(xs)} run(s): {UNKNOWN} (needs 2 or more)"], 0.0
    return est, intervals.mean(xs), [], _std(xs)


def _corr(spec: ClaimSpec, vals: _Values) -> Computed:
    x, y = vals.numbers(0, 0), vals.numbers(0, 1)
    rho = intervals.rho(x, y) if len(x) >= 2 else None
    if len(x) >= 2 and rho is None:
        same = f"{spec.columns[0].title()} or {spec.columns[1].title()} is the same in every run"
        return None, None, [same], 0.0
    if len(x) < 5:
        return rho, None, [f"{len(x)} runs: a rank correlation's interval needs 5 or more"], 0.0
    return rho, intervals.spearman(x, y), [], 0.0


def _compute(spec: ClaimSpec, vals: _Values) -> Computed:
    """The estimate, its interval, why there is none, and the std over restarts (0 for a correlation)."""
    if spec.kind == "diff":
        return _diff(spec, vals)
    return _mean(vals) if spec.kind == "mean" else _corr(spec, vals)


def _std(xs: list[float]) -> float:
    m = math.fsum(xs) / len(xs)
    return math.sqrt(math.fsum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def _side(spec: ClaimSpec, iv: Interval, ref: float) -> tuple[str, str]:
    where = f"{fmt(ref)}" if spec.kind == "mean" else "0"
    expected = "above" if spec.expect == ">" else "below"
    if iv.lo > ref or iv.hi < ref:
        side = "above" if iv.lo > ref else "below"
        verdict = AGREES if side == expected else DISAGREES
        extra = "" if verdict == AGREES else f"; the paper expects {expected}"
        return verdict, f"the interval lies {side} {where}{extra}"
    return INCONCLUSIVE, f"the interval contains {where}"


def _flagged(spec: ClaimSpec, vals: _Values) -> list[str]:
    """The flags of the values used (not converged, stale, ...), said in the reason."""
    return [
        f"{col.title()} of run {run.label} is {cell.badge}"
        for members in vals.groups
        for run, cells in members
        for col, cell in zip(spec.columns, cells, strict=True)
        if cell.badge
    ]


def evaluate(spec: ClaimSpec, joined: Joined) -> Verdict:
    """The claim's verdict on these runs (refuses an unknown column, group key or group value)."""
    where = spec.origin or f"--claim {spec.name}"
    vals = _values(spec, joined, where)
    used = [run for members in vals.groups for run, _ in members]
    threshold = _threshold(spec, used, where)
    est, iv, problems, spread = _compute(spec, vals)
    checks = [chance(run, joined.rels) for run in used]
    at_chance, notes = [c for c, _ in checks if c], [n for _, n in checks if n]
    rel, rel_of, largest = _estimator(spec, vals)
    problems = [_named(at_chance)] * bool(at_chance) + [_named(vals.missing)] * bool(vals.missing) + problems
    if problems or iv is None:
        verdict, reason = INCONCLUSIVE, "; ".join(problems)
    else:
        verdict, reason = _side(spec, iv, threshold or 0.0)
    if spread and largest >= spread:
        reason += (
            f"; the estimator dominates: its largest ± ({fmt_err(largest)}) is as large as the std over "
            f"restarts ({fmt_err(spread)})"
        )
    notes += _flagged(spec, vals)
    if notes:
        reason += "; " + _named(notes)
    sources = tuple(s for members in vals.groups for _, cells in members for c in cells for s in c.sources)
    n = tuple(len(members) for members in vals.groups)
    return Verdict(spec, verdict, reason, est, iv, n, threshold, rel, rel_of, sources)


def evaluate_all(specs: list[ClaimSpec], joined: Joined) -> list[Verdict]:
    """Every claim's verdict, in the order given."""
    return [evaluate(spec, joined) for spec in specs]


def _lscape_cell(v: Verdict) -> Cell:
    iv = v.interval
    if v.estimate is None:
        return Cell(DASH)
    text = fmt(v.estimate) + (f" [{fmt(iv.lo)}, {fmt(iv.hi)}]" if iv else "")
    if v.threshold is not None:
        text += f" vs {fmt(v.threshold)}"
    if v.spec.kind == "diff":
        how = f"Welch t interval, {fmt(iv.dof)} degrees of freedom" if iv and iv.dof else "no interval"
    elif v.spec.kind == "mean":
        how = f"Student t interval, {fmt(iv.dof)} degrees of freedom" if iv else "no interval"
    else:
        how = (
            "Spearman ρ, Fisher z interval with standard error √(1.06/(n−3))"
            if iv
            else "Spearman ρ, no interval"
        )
    lo, hi = (iv.lo, iv.hi) if iv else (None, None)
    return Cell(
        text,
        v.sources,
        f"{v.spec.test()}; 95%, {how}",
        "claim",
        sort=v.estimate,
        value=v.estimate,
        lo=lo,
        hi=hi,
    )


def _row(v: Verdict) -> list[Cell]:
    spec = v.spec
    n = " vs ".join(map(str, v.n)) if spec.kind == "diff" else str(sum(v.n))
    est = (
        Cell(f"{100 * v.estimator:.2g}%", note=f"largest: {v.estimator_of}", value=v.estimator)
        if v.estimator is not None
        else Cell(DASH, note="no value used carries an estimator uncertainty")
    )
    return [
        Cell(spec.name, note=spec.test()),
        Cell(spec.claim or spec.test(), note=spec.test()),
        Cell(spec.paper or DASH),
        _lscape_cell(v),
        Cell(n, value=sum(v.n)),
        est,
        Cell(v.verdict),
        Cell(v.reason),
    ]


def table(verdicts: list[Verdict]) -> Table:
    """The Claims table (key ``claims``); its CSV holds the numbers of :meth:`Verdict.row`."""
    caption = (
        "95% intervals over restarts (difference of means: Welch; mean: Student t; rank correlation: "
        "Spearman ρ with Fisher z). agrees: the interval lies wholly on the paper's side; disagrees: "
        "wholly on the other; inconclusive otherwise. Runs at chance (test accuracy not above 1/classes "
        f"by {CHANCE_SE} binomial standard errors) support no verdict. estimator ±: the largest relative "
        "uncertainty (error bound or standard error) of the values used."
    )
    t = Table("claims", "Claims", list(COLUMNS), [_row(v) for v in verdicts], caption)
    t.csv_rows = [v.row() for v in verdicts]
    return t
