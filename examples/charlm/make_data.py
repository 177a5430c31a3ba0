"""Character-level next-token data from the Python standard library's own source files.

The standard library ships with every Python, so the example needs no download. Each file's text
becomes ASCII codes (other characters become ``?``), cut into windows of ``--context`` characters:
``x[i]`` is a window and ``y[i]`` the same window shifted by one character (the next-character
targets). A file's last window is padded: ``x`` with 0, ``y`` with -100, which lscape leaves out of every
mean (``ignore_index``).

    python examples/charlm/make_data.py --out runs/charlm/text.npz --context 32 --max-sequences 512
"""

from __future__ import annotations

import argparse
import sysconfig
from pathlib import Path

import numpy as np

FILES = ("textwrap.py", "colorsys.py", "bisect.py", "heapq.py", "fnmatch.py")
PAD, IGNORE = 0, -100


def windows(text: str, context: int) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` windows of one text, the last one padded."""
    codes = np.array([min(ord(c), 127) if ord(c) < 128 else ord("?") for c in text], dtype=np.int64)
    count = -(-(len(codes) - 1) // context)
    x = np.full((count, context), PAD, dtype=np.int64)
    y = np.full((count, context), IGNORE, dtype=np.int64)
    for i in range(count):
        chunk = codes[i * context : (i + 1) * context + 1]
        x[i, : len(chunk) - 1], y[i, : len(chunk) - 1] = chunk[:-1], chunk[1:]
    return x, y


def main() -> None:
    """Write the ``.npz`` file (``x`` and ``y``, both ``(N, context)`` int64)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--context", type=int, default=32)
    parser.add_argument("--max-sequences", type=int, default=None)
    args = parser.parse_args()
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    pairs = [windows((stdlib / name).read_text(encoding="utf-8"), args.context) for name in FILES]
    if args.max_sequences is not None:  # each file's last windows (its padded one included)
        share = -(-args.max_sequences // len(FILES))
        pairs = [(x[-share:], y[-share:]) for x, y in pairs]
    x = np.concatenate([p[0] for p in pairs])[: args.max_sequences]
    y = np.concatenate([p[1] for p in pairs])[: args.max_sequences]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, x=x, y=y)
    padding = int((y == IGNORE).sum())
    print(f"{args.out}: {x.shape[0]} sequences of {args.context}, {y.size - padding} tokens, {padding} padding")


if __name__ == "__main__":
    main()
