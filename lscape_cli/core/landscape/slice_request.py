"""What a slice is asked for: :class:`SliceRequest`, its checks and the settings the record keeps.

:meth:`SliceRequest.validate` turns a bad value into an :class:`~lscape_cli.errors.LscapeError` that
names the flag of `lscape slice` (the first problem, in flag order).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

from lscape_cli.core.choices import BiasPolicy, Norm, SliceStrategy, ZScale
from lscape_cli.errors import LscapeError


class FileRef(TypedDict):
    """A file a slice read, by name, and its sha256."""

    path: str
    sha256: str


class OtherRef(TypedDict):
    """``--toward``'s checkpoint, by name, and its sha256."""

    checkpoint: str
    sha256: str


class TrajectoryRef(TypedDict):
    """``--pca``'s trajectory, by name, its sha256 and its snapshot count."""

    file: str
    sha256: str
    snapshots: int


class DirectionSettings(TypedDict, total=False):
    """How a slice's directions were made: a record's ``config.directions`` (the keys of its kind).

    A direction file keeps them as its ``settings``; ``lscape probe --save-eigenvectors`` writes its own
    (``source``, ``curvature``, the eigenvalues and the run).
    """

    kind: str  # always there in a record (random, toward, pca, eigen, file)
    count: int
    norm: str
    bias: str
    seed: int
    distribution: str
    orthogonalize: bool
    tol: float
    method: str
    which: str
    other: OtherRef  # toward
    distance: float
    trajectory: TrajectoryRef  # pca
    explained_variance_ratio: list[float]
    singular_values: list[float]
    eigenvalues: list[float]  # eigen (and saved eigenvectors)
    residuals: list[float]
    converged: bool
    iterations: int
    num_matvecs: int
    file: FileRef  # a direction file
    made_as: DirectionSettings  # the file's own settings
    origin: dict[str, str] | None  # the checkpoint the file's directions were made at
    source: str  # saved eigenvectors: "lscape probe"
    curvature: dict[str, object]  # saved eigenvectors: the probe's curvature entry


@dataclass(frozen=True)
class SliceRequest:
    """The settings of one slice (the options of `lscape slice`)."""

    dims: int
    radius: float | None  # None: 1, or the trajectory's reach with --pca (resolved with the directions)
    steps: int
    count: int
    toward: Path | None
    pca: Path | None
    eigen: bool
    directions: Path | None
    norm: str
    bias: str
    orthogonalize: bool
    eigen_tol: float
    seed: int
    memory_budget_mib: int
    strategy: str
    basin_threshold: float
    fit_radius: float | None
    zscale: str
    resume: bool
    plot: bool

    @property
    def kind(self) -> str:
        """The kind of directions: file, toward, pca, eigen or random."""
        if self.directions is not None:
            return "file"
        return "toward" if self.toward else "pca" if self.pca else "eigen" if self.eigen else "random"

    @property
    def needed(self) -> int:
        """Directions the grid needs: 2 for a plane, ``count`` for lines."""
        return 2 if self.dims == 2 else self.count

    def validate(self) -> None:
        """Refuse a bad option with an error that names it (the first problem, in flag order)."""
        self._check_choices()
        self._check_grid()
        self._check_kind()
        for option, value in (
            ("--basin-threshold", self.basin_threshold),
            ("--fit-radius", self.fit_radius),
            ("--eigen-tol", self.eigen_tol),
        ):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise LscapeError(f"{option} must be positive, got {value}", option, "give a positive number")

    def _check_choices(self) -> None:
        Norm.check(self.norm, "--norm")
        BiasPolicy.check(self.bias, "--bias")
        SliceStrategy.check(self.strategy, "--strategy")
        ZScale.check(self.zscale, "--zscale")

    def _check_grid(self) -> None:
        if self.dims not in (1, 2):
            raise LscapeError(
                f"--dims must be 1 or 2, got {self.dims}",
                "--dims",
                "use --dims 1 (lines) or --dims 2 (a plane)",
            )
        if self.radius is not None and not (math.isfinite(self.radius) and self.radius > 0):
            raise LscapeError(
                f"range must be positive, got {self.radius}",
                "--range",
                "give a positive radius, e.g. --range 1.5",
            )
        if self.steps < 2:
            raise LscapeError(
                f"steps must be at least 2, got {self.steps}",
                "--steps",
                "give 2 or more points per axis, e.g. --steps 51",
            )
        if self.count < 1:
            raise LscapeError(
                f"count must be at least 1, got {self.count}",
                "--count",
                "give a positive number of directions",
            )
        if self.count > 1 and self.dims != 1:
            raise LscapeError(
                "--count needs --dims 1", "--count", "add --dims 1 for N independent 1-D directions"
            )

    def _check_kind(self) -> None:
        given = [
            o
            for o, v in (
                ("--toward", self.toward),
                ("--pca", self.pca),
                ("--eigen", self.eigen),
                ("--directions", self.directions),
            )
            if v
        ]
        if len(given) > 1:
            raise LscapeError(
                f"choose one kind of direction, got {' and '.join(given)}", given[1], "pass only one of them"
            )
        if self.toward is not None and self.count > 1:
            raise LscapeError("--toward gives a single direction", "--count", "use --count 1 with --toward")

    def describe(self) -> DirectionSettings:
        """The direction settings for the record."""
        out: DirectionSettings = {"kind": self.kind, "count": self.needed}
        if self.kind in ("random", "toward"):
            out.update(
                {"norm": self.norm, "bias": self.bias, "seed": self.seed, "distribution": "gaussian N(0, I)"}
            )
        if self.kind in ("random", "toward", "file"):
            out["orthogonalize"] = self.orthogonalize
        if self.kind == "eigen":
            out.update({"tol": self.eigen_tol, "seed": self.seed, "method": "lanczos", "which": "largest"})
        return out
