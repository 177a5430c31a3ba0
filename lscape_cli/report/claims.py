"""Paper claims (``--claim``, ``[claims.NAME]``): what a study tests, written in the paper-table language.

A claim is ``NAME=KIND:COLUMNS`` with options after ``;``:

- ``diff:COLUMN;group=KEY;a=V1;b=V2``: mean of COLUMN over the runs with KEY=V1 minus over KEY=V2;
- ``corr:COLUMN1,COLUMN2``: Spearman's rank correlation of two columns over the runs;
- ``mean:COLUMN;value=NUMBER`` (or ``value=NUMBER/KEY``, e.g. ``2/training.lr``, one value over the
  runs): the mean of COLUMN against a threshold;

and for every kind ``expect=>`` or ``expect=<`` (the paper's direction: the sign of a difference or a
correlation, a mean above or below the value), ``where=KEY=VALUE`` (repeatable, as in ``--table``),
``paper=TEXT`` (the paper's number) and ``claim=TEXT`` (the claim in words). Columns are those of
:func:`lscape_cli.report.paper.column_cells`. :mod:`lscape_cli.report.verdicts` computes each verdict.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lscape_cli.errors import LscapeError
from lscape_cli.report.paper import Column, check_name, load_study, parse_column, split_top

KINDS = {"diff": 1, "corr": 2, "mean": 1}  # kind: number of columns
OPTIONS = ("group", "a", "b", "where", "expect", "value", "paper", "claim")
VALUE = re.compile(r"\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(?:/\s*([A-Za-z0-9_.]+)\s*)?")
FIX = "e.g. --claim 'bs=diff:gap_acc;group=training.batch_size;a=4096;b=128;expect=>'"


@dataclass(frozen=True)
class ClaimSpec:
    """One claim: the test (kind, columns, groups, threshold), the expected direction, and its words."""

    name: str
    kind: str  # diff, corr or mean
    columns: tuple[Column, ...]
    expect: str  # ">" or "<"
    group: str | None = None  # diff: the settings key whose values a and b make the two groups
    a: str | None = None
    b: str | None = None
    where: tuple[tuple[str, str], ...] = ()
    value: float | None = None  # mean: the threshold, or its numerator when ``per`` names a key
    per: str | None = None  # mean: value/KEY, the key's one value over the runs
    paper: str = ""
    claim: str = ""
    origin: str = ""  # where the claim was given, for error lines

    def test(self) -> str:
        """The comparison in words, e.g. ``mean test acc: model.depth=4 − model.depth=1 > 0``."""
        titles = [c.title() for c in self.columns]
        if self.kind == "diff":
            return f"mean {titles[0]}: {self.group}={self.a} − {self.group}={self.b} {self.expect} 0"
        if self.kind == "corr":
            return f"Spearman ρ({titles[0]}, {titles[1]}) {self.expect} 0"
        return f"mean {titles[0]} {self.expect} {self.threshold_text()}"

    def threshold_text(self) -> str:
        """The threshold of a ``mean`` claim as written (``20``, ``2/training.lr``)."""
        value = f"{self.value:g}" if self.value is not None else ""
        return f"{value}/{self.per}" if self.per else value


def _check(spec: ClaimSpec) -> ClaimSpec:
    """Refuse a claim whose options do not fit its kind."""
    where = spec.origin
    if spec.expect not in (">", "<"):
        got = f", not {spec.expect!r}" if spec.expect else ""
        raise LscapeError(
            f"a claim needs expect=> or expect=<{got}", where, "expect=> when the paper says larger"
        )
    if spec.kind == "diff" and not (spec.group and spec.a is not None and spec.b is not None):
        missing = [k for k, v in (("group", spec.group), ("a", spec.a), ("b", spec.b)) if not v]
        raise LscapeError(
            f"a diff claim needs {', '.join(missing)}", where, "give group=KEY;a=VALUE1;b=VALUE2"
        )
    if spec.kind != "diff" and (spec.group or spec.a is not None or spec.b is not None):
        raise LscapeError(f"a {spec.kind} claim takes no group, a or b", where, "use where=KEY=VALUE")
    if spec.kind == "mean" and spec.value is None:
        raise LscapeError("a mean claim needs value=NUMBER", where, "e.g. value=20 or value=2/training.lr")
    if spec.kind != "mean" and spec.value is not None:
        raise LscapeError(f"a {spec.kind} claim takes no value", where, "it compares with 0")
    return spec


def _kind_columns(text: str, where: str) -> tuple[str, tuple[Column, ...]]:
    kind, colon, cols = text.partition(":")
    kind = kind.strip()
    if kind not in KINDS or not colon:
        raise LscapeError(
            f"unknown claim kind {kind!r}" if colon else f"cannot read the claim test {text.strip()!r}",
            where,
            "write KIND:COLUMNS with KIND diff, corr or mean",
        )
    return kind, _columns(split_top(cols), kind, where)


def _columns(texts: list[str], kind: str, where: str) -> tuple[Column, ...]:
    columns = tuple(parse_column(c, where) for c in texts)
    if len(columns) != KINDS[kind]:
        raise LscapeError(
            f"a {kind} claim takes {KINDS[kind]} column(s), got {len(columns)}",
            where,
            "corr:COLUMN1,COLUMN2; diff:COLUMN; mean:COLUMN",
        )
    return columns


def _value(text: str | None, where: str) -> tuple[float | None, str | None]:
    if text is None:
        return None, None
    m = VALUE.fullmatch(text)
    if m is None:
        raise LscapeError(f"cannot read value={text}", where, "write value=NUMBER or value=NUMBER/KEY")
    return float(m.group(1)), m.group(2)


def parse_claim(text: str) -> ClaimSpec:
    """``NAME=KIND:COLUMNS;OPTION=VALUE;...`` (the ``--claim`` option)."""
    name, eq, rest = text.partition("=")
    if not eq or not rest.strip():
        raise LscapeError(f"cannot read --claim {text!r}", "--claim", FIX)
    where = f"--claim {check_name(name.strip(), '--claim', 'claim')}"
    test, *opts = rest.split(";")
    kind, columns = _kind_columns(test, where)
    got: dict[str, list[str]] = {k: [] for k in OPTIONS}
    for opt in opts:
        key, eq, value = opt.partition("=")
        if key.strip() not in got or not eq:
            raise LscapeError(f"unknown claim option {opt.strip()!r}", where, f"use {'=, '.join(OPTIONS)}=")
        got[key.strip()].append(value.strip())
    twice = next((k for k, v in got.items() if len(v) > 1 and k != "where"), None)
    if twice is not None:
        raise LscapeError(f"{twice}= is given twice", where, "give it once (only where= repeats)")
    wheres = []
    for item in got["where"]:
        key, eq, value = item.partition("=")
        if not eq:
            raise LscapeError(f"cannot read where {item!r}", where, "write where=KEY=VALUE")
        wheres.append((key.strip(), value.strip()))
    one = {k: (v[0] if v else None) for k, v in got.items()}
    threshold, per = _value(one["value"], where)
    return _check(
        ClaimSpec(
            name.strip(),
            kind,
            columns,
            one["expect"] or "",
            one["group"],
            one["a"],
            one["b"],
            tuple(wheres),
            threshold,
            per,
            one["paper"] or "",
            one["claim"] or "",
            where,
        )
    )


def _text(obj: dict[str, Any], key: str) -> str | None:
    value = obj.get(key)
    return None if value is None else str(value)


def _from_file(name: str, obj: Any, path: str) -> ClaimSpec:
    where = f"{path}: claims.{name}"
    known = {"kind", "columns", "group", "a", "b", "where", "expect", "value", "paper", "claim"}
    if not isinstance(obj, dict) or "kind" not in obj or "columns" not in obj:
        raise LscapeError(
            f"claim {name!r} needs kind and columns", where, "kind = 'diff', columns = 'test_loss'"
        )
    if set(obj) - known:
        raise LscapeError(
            f"unknown key(s) {sorted(set(obj) - known)} in claim {name!r}", where, f"use {sorted(known)}"
        )
    kind = str(obj["kind"]).strip()
    if kind not in KINDS:
        raise LscapeError(f"unknown claim kind {kind!r}", where, "kind is diff, corr or mean")
    cols = obj["columns"]
    texts = (
        split_top(cols) if isinstance(cols, str) else [str(c) for c in cols] if isinstance(cols, list) else []
    )
    w = obj.get("where") or {}
    if not isinstance(w, dict):
        raise LscapeError(
            f"where of claim {name!r} must be a table of KEY = VALUE", where, "where = {'model.name' = 'mlp'}"
        )
    threshold, per = _value(_text(obj, "value"), where)
    pairs = tuple((str(k), str(v)) for k, vs in w.items() for v in (vs if isinstance(vs, list) else [vs]))
    spec = ClaimSpec(
        check_name(name, where, "claim"),
        kind,
        _columns(texts, kind, where),
        str(obj.get("expect") or ""),
        group=_text(obj, "group"),
        a=_text(obj, "a"),
        b=_text(obj, "b"),
        where=pairs,
        value=threshold,
        per=per,
        paper=str(obj.get("paper") or ""),
        claim=str(obj.get("claim") or ""),
        origin=where,
    )
    return _check(spec)


def read_claims(path: Path) -> list[ClaimSpec]:
    """The claims of a TOML (``[claims.NAME]``) or JSON (``{"claims": {"NAME": {...}}}``) study file."""
    data = load_study(path)
    claims = data.get("claims") if isinstance(data, dict) else None
    if claims is None:
        return []
    if not isinstance(claims, dict):
        raise LscapeError("claims must be a table of named claims", str(path), "write [claims.NAME]")
    return [_from_file(str(name), obj, str(path)) for name, obj in claims.items()]


def check_names(specs: list[ClaimSpec]) -> None:
    """Refuse two claims with one name."""
    names = [s.name for s in specs]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise LscapeError(f"two claims named {dup!r}", "--claim", "give each claim its own name")
