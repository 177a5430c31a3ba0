"""Every lscape record under some directories, read for ``lscape report``: schemas checked, inputs hashed.

A record is *stale* when a file it names as an input (or, for a train record, the checkpoint it wrote)
is missing or no longer has the sha256 the record holds: its numbers no longer describe what is on disk.
Stale records are kept and flagged, never dropped. JSON files that are not lscape records, or cannot be
read, are skipped and named. A record of a newer schema version than this lscape reads is refused.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lscape_cli.errors import LscapeError
from lscape_cli.storage.files import atomic_dir, atomic_path, check_input, sha256_file

SUPPORTED: dict[str, int] = {"train": 1, "probe": 1, "slice": 1, "connect": 1, "pareto": 1}


@dataclass
class Record:
    """One metric record as read from disk."""

    path: Path  # resolved
    kind: str  # "train", "probe", "slice", "connect" or "pareto"
    data: dict[str, Any]
    stale: list[str] = field(default_factory=list)  # one sentence per missing or changed input
    roots: tuple[Path, ...] = ()  # the report's directories (resolved): the only places files are read from
    skipped: list[str] = field(default_factory=list)  # "path: reason" for each file it names but was not read

    def readable(self, name: object) -> Path | None:
        """The file ``name`` (relative to the record) when it lies inside :attr:`roots`, links resolved.

        Anything else (``../x``, an absolute path, a link out of the study) is noted in :attr:`skipped`
        and never read: a record someone hands over must not pull other files into a shared page.
        """
        if not isinstance(name, str) or not name:
            self.skipped.append(f"{self.path}: names a file {json.dumps(name)[:40]}, not a path")
            return None
        target = (self.path.parent / name).resolve()
        if not any(target.is_relative_to(root) for root in self.roots):
            self.skipped.append(f"{self.path}: names {name}, outside the report's directories (not read)")
            return None
        return target


@dataclass
class Study:
    """The records found, and the JSON files skipped (``"path: reason"``)."""

    records: list[Record]
    skipped: list[str]


class _Hashes:
    """sha256 per resolved path, computed once (a checkpoint is named by its train and probe records)."""

    def __init__(self) -> None:
        self._cache: dict[Path, str | None] = {}

    def get(self, path: Path) -> str | None:
        if path not in self._cache:
            self._cache[path] = sha256_file(path) if path.is_file() else None
        return self._cache[path]


def _json_files(paths: list[Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out += sorted(p.rglob("*.json"))
        elif p.is_file():
            out.append(p)
        else:
            raise LscapeError("input not found", str(p), "pass directories holding lscape records")
    unique: dict[Path, Path] = {}
    for p in out:
        unique.setdefault(p.resolve(), p)
    return list(unique.values())


def _classify(path: Path) -> tuple[str, dict[str, Any]] | str:
    """``(kind, data)`` for an lscape record this version reads, else the reason to skip it."""
    from lscape_cli.storage.jsonio import first_problem, read_json
    from lscape_cli.storage.schemas import load

    try:
        data = read_json(check_input(path, "record"), "record")
    except OSError as exc:
        return f"unreadable ({exc.__class__.__name__}: {exc})"
    except LscapeError as exc:
        return exc.what
    schema = data.get("schema") if isinstance(data, dict) else None
    if not isinstance(schema, str) or not schema.startswith("lscape."):
        return "not an lscape record (no lscape.* schema)"
    kind, _, version = schema[len("lscape.") :].partition("/")
    if kind not in SUPPORTED:
        return f"{schema} records are not part of a report"
    expect = f"lscape.{kind}/{SUPPORTED[kind]}"
    if not version.isdigit() or int(version) != SUPPORTED[kind]:
        newer = version.isdigit() and int(version) > SUPPORTED[kind]
        raise LscapeError(
            f"record schema {schema} is {'newer than' if newer else 'not'} what this lscape reads ({expect})",
            str(path),
            "upgrade lscape to read it" if newer else "re-run the command that wrote it",
        )
    problem = first_problem(data, load(f"{kind}.schema.json"), "")
    if problem is not None and not (problem[1] == "missing" and "." in problem[0]):
        return f"malformed record: {problem[0] or '(top level)'}: {problem[1]}"  # skipped with a warning
    return kind, data  # (a nested key added later in this schema version may be missing: still read)


def _named_files(rec: Record) -> list[tuple[str, dict[str, Any]]]:
    """``(role, {"path", "sha256"})`` for every file the record names (paths relative to it)."""
    named = [(role, e) for role, e in (rec.data.get("inputs") or {}).items() if isinstance(e, dict)]
    results = rec.data.get("results") or {}
    if rec.kind == "train" and isinstance(results.get("checkpoint"), dict):
        named.append(("checkpoint written", results["checkpoint"]))
    if rec.kind == "pareto":
        runs = (rec.data.get("config") or {}).get("runs") or []
        named += [("run", {"path": r["checkpoint"], "sha256": r["sha256"]}) for r in runs]
    return named


def _check(rec: Record, hashes: _Hashes) -> None:
    for role, entry in _named_files(rec):
        target = (rec.path.parent / str(entry.get("path"))).resolve()
        digest = hashes.get(target)
        if digest is None:
            rec.stale.append(f"{role} {entry.get('path')} is missing")
        elif digest != entry.get("sha256"):
            rec.stale.append(
                f"{role} {entry.get('path')} changed since the record was written (sha256 differs)"
            )


def scan(paths: list[Path]) -> Study:
    """Read every lscape record under ``paths`` (recursively), check its inputs, name what is skipped."""
    hashes = _Hashes()
    records: list[Record] = []
    skipped: list[str] = []
    roots = tuple(p.resolve() if p.is_dir() else p.resolve().parent for p in paths)
    for path in _json_files(paths):
        found = _classify(path)
        if isinstance(found, str):
            skipped.append(f"{path}: {found}")
            continue
        rec = Record(path.resolve(), found[0], found[1], roots=roots)
        _check(rec, hashes)
        records.append(rec)
    if not records:
        raise LscapeError(
            f"no lscape records under {' '.join(map(str, paths))}", None, "run lscape train/probe first"
        )
    return Study(records, skipped)


def checkpoint_metadata(path: Path) -> dict[str, Any] | None:
    """The checkpoint's lscape metadata (JSON values parsed), or ``None`` when absent or unreadable.

    Reads the safetensors header directly (8-byte little-endian length, then JSON with a
    ``__metadata__`` map) so that a report never imports torch.
    """
    try:
        with open(path, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n)) if n <= 100_000_000 else {}
    except (OSError, ValueError, struct.error):
        return None
    raw = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(raw, dict) or raw.get("lscape_schema") != "lscape.checkpoint/1":
        return None
    meta: dict[str, Any] = {}
    for key, value in raw.items():
        try:
            meta[key] = json.loads(value)
        except (TypeError, ValueError):
            meta[key] = value
    return meta


def read_bytes(path: Path) -> bytes | None:
    """A figure's bytes, or ``None`` when it is missing."""
    return path.read_bytes() if path.is_file() else None


def _fill_dir(target: Path, files: dict[str, bytes]) -> None:
    """Replace the folder ``target`` by one holding exactly ``files`` (with the command's other outputs)."""
    with atomic_dir(target) as fresh:
        for name, data in files.items():
            (fresh / name).write_bytes(data)


def write_report(
    out: Path, html: str, markdown: str, tables: dict[str, str], figures: dict[str, bytes]
) -> dict[str, Path]:
    """Write a report's files, each replaced atomically; returns the paths written.

    ``out`` (HTML), its Markdown twin, and the ``STEM-tables/`` and ``STEM-figures/`` folders beside it.
    """
    paths = report_paths(out)
    for key in ("tables", "figures"):
        if paths[key].exists() and not paths[key].is_dir():
            raise LscapeError(
                "a file is in the way of the report's folder",
                str(paths[key]),
                "move it or choose another --out",
            )
    _fill_dir(paths["tables"], {k: v.encode() for k, v in tables.items()})
    _fill_dir(paths["figures"], figures)
    for key, text in (("markdown", markdown), ("html", html)):
        with atomic_path(paths[key]) as tmp:
            tmp.write_text(text, encoding="utf-8")
    return paths


def report_paths(out: Path) -> dict[str, Path]:
    """Where a report with HTML ``out`` puts its Markdown, tables and figures."""
    stem = out.name[: -len(out.suffix)] if out.suffix else out.name
    return {
        "html": out,
        "markdown": out.with_name(f"{stem}.md"),
        "tables": out.with_name(f"{stem}-tables"),
        "figures": out.with_name(f"{stem}-figures"),
    }
