"""How `lscape train` names its files, and the hint for a path that misses the rule.

One restart writes ``OUT/NAME.safetensors`` (``NAME.train.json``, ``NAME.trajectory.safetensors``);
``--restarts R`` with R > 1 writes ``OUT/NAME-r000.safetensors`` ... ``NAME-r{R-1}...`` (three digits,
more when R > 1000), so ``NAME.safetensors`` never exists beside them. A path written under the other
rule is the usual cause of a missing checkpoint: :func:`sibling_hint` names the files that do exist.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

TRAIN_SUFFIXES = (".trajectory.safetensors", ".train.json", ".safetensors")  # longest first
_RESTART = re.compile(r"-r([0-9]{3,})")


def restart_width(restarts: int) -> int:
    """Digits of a restart index: 3, or more for 1000 restarts and beyond."""
    return max(3, len(str(restarts - 1)))


def output_stems(out: Path, name: str, restarts: int, chosen: Sequence[int] | None = None) -> list[Path]:
    """File stems per restart: ``OUT/NAME`` for one run, ``OUT/NAME-r000``, ... (by restart) for many.

    ``chosen`` gives the stems of those restarts only (``--shard``); None gives all of them.
    """
    if restarts == 1:
        return [out / name]
    width = restart_width(restarts)
    return [out / f"{name}-r{r:0{width}d}" for r in (range(restarts) if chosen is None else chosen)]


def sibling_hint(path: Path) -> str | None:
    """For a missing ``path`` named like a train output, the files of the same run that exist, or None.

    ``run/model.safetensors`` missing beside ``model-r000.safetensors`` ... ``model-r004.safetensors``
    gives ``"this folder holds model-r000.safetensors ... model-r004.safetensors (lscape train --restarts
    5 names restarts NAME-rNNN): pass one of them"``; ``model-r000.safetensors`` missing beside
    ``model.safetensors`` names that one.
    """
    suffix = next((s for s in TRAIN_SUFFIXES if path.name.endswith(s) and path.name != s), None)
    if suffix is None or not path.parent.is_dir():
        return None
    stem = path.name[: -len(suffix)]
    match = _RESTART.search(stem)
    base = stem[: match.start()] if match is not None and match.end() == len(stem) else stem
    single = path.parent / f"{base}{suffix}"
    found = sorted(_restarts(path.parent, base, suffix).items())
    if found:
        first, last = found[0][1], found[-1][1]
        shown = (
            first if len(found) == 1 else f"{first} and {last}" if len(found) == 2 else f"{first} ... {last}"
        )
        rule = f"lscape train --restarts {found[-1][0] + 1} names restarts NAME-rNNN"
        also = f" and {single.name}" if single.is_file() and single != path else ""
        return f"this folder holds {shown}{also} ({rule}): pass one of them"
    if single != path and single.is_file():
        return (
            f"this folder holds {single.name} (lscape train names a single run NAME, without -rNNN): pass it"
        )
    return None


def _restarts(folder: Path, base: str, suffix: str) -> dict[int, str]:
    """Restart index -> file name of ``BASE-rNNN{suffix}`` in ``folder``."""
    pattern = re.compile(re.escape(base) + r"-r([0-9]{3,})" + re.escape(suffix))
    out = {}
    for p in folder.iterdir():
        m = pattern.fullmatch(p.name)
        if m is not None and p.is_file():
            out[int(m[1])] = p.name
    return out
