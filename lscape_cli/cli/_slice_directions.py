"""The directions of `lscape slice`, one builder per kind: random, toward, pca, eigen and file.

:class:`Directions` turns the options into the directions (parameter-name -> tensor dicts shaped like
theta), the settings the record keeps under ``config.directions``, and extras: axis labels, the input
files read, facts about the directions and, for ``--pca``, the trajectory's coordinates.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lscape_cli.errors import LscapeError

if TYPE_CHECKING:
    from lscape_cli.cli._slice_run import Run


class Directions:
    """Builds the slice's directions from the options: ``(dirs, info for the record, extras)``.

    ``extras``: ``labels`` (axis labels), ``inputs`` (files read, for the record), ``results`` (facts
    about the directions), and for PCA ``coords`` (T, K) and ``epochs``.
    """

    def __init__(self, run: Run) -> None:
        self.run = run
        self.opts = run.opts
        self.theta = run.theta
        self.extra: dict[str, Any] = {"inputs": {}}

    def build(self) -> tuple[list[Any], dict[str, Any], dict[str, Any]]:
        from lscape_cli.core import directions as D

        build = {
            "random": self._random,
            "toward": self._toward,
            "pca": self._pca,
            "eigen": self._eigen,
            "file": self._file,
        }
        info = self.opts.describe()
        dirs = build[self.opts.kind](info)
        if self.opts.radius is None:
            self.opts.radius = 1.0
        if self.opts.orthogonalize and self.opts.kind in ("toward", "file") and len(dirs) > 1:
            dirs = D.orthogonalize(dirs)
        self.extra["results"] = self._facts(dirs, info)
        return dirs, info, self.extra

    def _axis_names(self) -> list[str]:
        """The axis names: alpha and beta for a plane, d1 .. dK for K lines."""
        return ["alpha", "beta"] if self.opts.dims == 2 else [f"d{i + 1}" for i in range(self.opts.needed)]

    def _norm_label(self) -> str:
        names = {"filter": "filter-normalised", "layer": "layer-normalised", "unit": "unit length"}
        return names.get(self.opts.norm, "unnormalised")

    def _random(self, info: dict[str, Any]) -> list[Any]:
        from lscape_cli.core.directions import random_directions

        k = self.opts.needed
        dirs = random_directions(
            self.theta, k, self.opts.seed, self.opts.norm, self.opts.bias, self.opts.orthogonalize
        )
        self.extra["labels"] = [
            f"{n}: random direction {i + 1} ({self._norm_label()})" for i, n in enumerate(self._axis_names())
        ]
        self.extra["short"] = [f"direction {i + 1}" for i in range(k)]
        self.extra["what"] = f"random Gaussian directions, {self._norm_label()}"
        return dirs

    def _toward(self, info: dict[str, Any]) -> list[Any]:
        from lscape_cli.core.directions import length, random_directions, toward
        from lscape_cli.storage.checkpoint import load_checkpoint
        from lscape_cli.storage.files import sha256_file

        path = self.opts.toward
        assert path is not None
        other = load_checkpoint(path, self.run.model_config)
        state = {n: t for n, t in other.state.items() if n not in self.run.buffers}  # parameters only
        params = self._match(state, path, "checkpoint to slice toward")
        d = toward(self.theta, params)
        info.update(other={"checkpoint": path.name, "sha256": sha256_file(path)}, distance=length(d))
        self.extra["inputs"]["other"] = path
        self.extra["labels"] = [f"alpha: toward {path.name} (1 = that checkpoint)"]
        self.extra["short"] = [f"toward {path.name}"]
        self.extra["what"] = f"1 = {path.name}"
        if self.opts.dims == 1:
            return [d]
        self.extra["labels"].append(f"beta: random direction ({self._norm_label()})")
        return [d, random_directions(self.theta, 1, self.opts.seed, self.opts.norm, self.opts.bias)[0]]

    def _match(self, state: dict[str, Any], path: Path, what: str) -> dict[str, Any]:
        from lscape_cli.core.directions import mismatches

        problems = mismatches(state, self.theta)
        if problems:
            raise LscapeError(
                f"{what} does not match the model: " + " | ".join(problems),
                str(path),
                "use a file made for this architecture",
            )
        return {n: state[n].to(device=t.device, dtype=t.dtype) for n, t in self.theta.items()}

    def _pca(self, info: dict[str, Any]) -> list[Any]:
        import torch

        from lscape_cli.core.directions import pca_directions
        from lscape_cli.storage.checkpoint import load_trajectory
        from lscape_cli.storage.files import sha256_file

        path = self.opts.pca
        assert path is not None
        traj = load_trajectory(path)
        t_count = self._snapshots(traj, path)
        theta = {n: t.detach().to("cpu", torch.float64) for n, t in self.theta.items()}
        snaps = {n: traj.state[n].to(torch.float64) for n in theta}
        res = pca_directions(theta, snaps, self.opts.needed)
        self._check_last_snapshot(theta, snaps)
        coords = res["coords"]
        self._fit_range(float(coords.abs().max()))
        ratios = res["explained_variance_ratio"]
        info.update(
            trajectory={"file": path.name, "sha256": sha256_file(path), "snapshots": t_count},
            method="PCA of theta_t - theta (snapshots centred over t, as Li et al. 2018); unit directions",
            explained_variance_ratio=ratios,
            singular_values=res["singular_values"],
        )
        self.extra.update(
            coords=coords,
            epochs=list(traj.meta.get("epochs") or range(t_count)),
            steps=traj.meta.get("steps"),
            in_span_fraction=res["in_span_fraction"],
            explained=ratios,
        )
        self.extra["inputs"]["trajectory"] = path
        self.extra["labels"] = [
            f"{n}: PC{i + 1} of the trajectory ({100 * r:.1f}% of variance)"
            for i, (n, r) in enumerate(zip(self._axis_names(), ratios, strict=True))
        ]
        self.extra["short"] = [f"PC{i + 1} ({100 * r:.1f}% of variance)" for i, r in enumerate(ratios)]
        self.extra["what"] = f"principal directions of {path.name}, unit length"
        return [
            {n: t.to(device=self.theta[n].device, dtype=self.theta[n].dtype) for n, t in d.items()}
            for d in res["directions"]
        ]

    def _snapshots(self, traj: Any, path: Path) -> int:
        """The trajectory's snapshot count, once its tensors match the model and it has enough of them."""
        first = {n: t[0] for n, t in traj.state.items()}
        self._match(first, path, "trajectory")
        t_count = int(next(iter(traj.state.values())).shape[0])
        if t_count < self.opts.needed + 1:
            raise LscapeError(
                f"{self.opts.needed} principal directions need at least {self.opts.needed + 1} snapshots; "
                f"the trajectory has {t_count}",
                str(path),
                "train with a smaller --save-trajectory interval, or slice fewer directions",
            )
        return t_count

    def _check_last_snapshot(self, theta: dict[str, Any], snaps: dict[str, Any]) -> None:
        last = max(float((snaps[n][-1] - theta[n]).abs().max()) for n in theta)
        scale = max(float(theta[n].abs().max()) for n in theta)
        if last > 1e-6 * scale:
            self.run.warnings.append(
                f"the trajectory's last snapshot differs from the checkpoint (max |diff| {last:.3g}); "
                "directions and coordinates are relative to the checkpoint"
            )

    def _fit_range(self, reach: float) -> None:
        """Without --range, 1.2 x the trajectory's reach rounded up; a warning where the range cuts it off."""
        if self.opts.radius is None:
            self.opts.radius = _nice(1.2 * reach)
        if reach > self.opts.radius:
            self.run.warnings.append(
                f"the trajectory reaches |coordinate| {reach:.3g}, beyond --range {self.opts.radius:g}; "
                f"use --range {reach * 1.1:.3g} to see all of it"
            )

    def _eigen(self, info: dict[str, Any]) -> list[Any]:
        from lscape_cli.core.directions import eigen_directions
        from lscape_cli.core.hvp import Objective

        s, group = self.run.setup, self.run.group
        n = int(s.y.shape[0])
        start, stop = group.bounds(n)
        try:
            obj = Objective.from_module(
                s.loaded.module,
                s.x[start:stop],
                s.y[start:stop],
                s.loss,
                self.run.max_batch,
                shard=group.shard(n),
            )
        except ValueError as exc:
            raise LscapeError(
                str(exc), "--mode", "use --mode eval for models with BatchNorm or dropout"
            ) from exc
        dirs, res = eigen_directions(obj, self.opts.needed, self.opts.seed, self.opts.eigen_tol)
        if not res.converged:
            self.run.warnings.append(
                f"Lanczos did not converge in {res.iterations} steps; residuals {res.residuals}"
            )
        info.update(
            eigenvalues=res.eigenvalues,
            residuals=res.residuals,
            converged=res.converged,
            iterations=res.iterations,
            num_matvecs=res.num_matvecs,
        )
        self.extra["labels"] = [
            f"{n}: Hessian eigenvector {i + 1} (lambda = {lam:.4g})"
            for i, (n, lam) in enumerate(zip(self._axis_names(), res.eigenvalues, strict=True))
        ]
        self.extra["short"] = [
            f"eigenvector {i + 1} (lambda = {lam:.4g})" for i, lam in enumerate(res.eigenvalues)
        ]
        self.extra["what"] = "top Hessian eigenvectors, unit length"
        self.extra["eigenvalues"] = res.eigenvalues
        return dirs

    def _file(self, info: dict[str, Any]) -> list[Any]:
        from lscape_cli.core.directions import mismatches
        from lscape_cli.storage.directions import load_directions
        from lscape_cli.storage.files import sha256_file

        path = self.opts.directions
        assert path is not None
        dirs, meta = load_directions(path)
        if len(dirs) < self.opts.needed:
            raise LscapeError(
                f"direction file holds {len(dirs)} direction(s), this slice needs {self.opts.needed}",
                str(path),
                "slice fewer directions (--dims/--count) or make a file with more",
            )
        for k, d in enumerate(dirs[: self.opts.needed]):
            problems = mismatches(d, self.theta)
            if problems:
                raise LscapeError(
                    f"direction file does not match the model (direction {k}): " + " | ".join(problems),
                    str(path),
                    "use directions made for this architecture, or drop --directions",
                )
        if meta.get("model") != self.run.setup.loaded.spec.to_dict():
            self.run.warnings.append(
                f"{path.name} was made for model {meta.get('model')}; shapes match, so it is used"
            )
        src = meta["directions"]
        info.update(
            file={"path": path.name, "sha256": sha256_file(path)},
            made_as=src.get("settings", {}),
            origin=src.get("origin"),
        )
        self.extra["inputs"]["directions"] = path
        self.extra["labels"] = [
            f"{n}: direction {i + 1} of {path.name} ({src.get('kind', '?')})"
            for i, n in enumerate(self._axis_names())
        ]
        self.extra["short"] = [f"direction {i + 1}" for i in range(self.opts.needed)]
        self.extra["what"] = f"directions from {path.name} ({src.get('kind', '?')})"
        if src.get("kind") == "eigen":
            self._saved_eigen(path.name, src.get("settings", {}))
        return [
            {n: d[n].to(device=t.device, dtype=t.dtype) for n, t in self.theta.items()}
            for d in dirs[: self.opts.needed]
        ]

    def _saved_eigen(self, name: str, settings: dict[str, Any]) -> None:
        """Labels with the eigenvalues saved by `lscape probe --save-eigenvectors` (nothing recomputed)."""
        cur = settings.get("curvature") or {"kind": "hessian"}
        eig = settings.get("eigenvalues") or []
        if len(eig) < self.opts.needed:
            return
        kind = cur.get("kind", "hessian")
        self.extra["labels"] = [
            f"{n}: {kind} eigenvector {i + 1} of {name} (lambda = {lam:.4g})"
            for i, (n, lam) in enumerate(zip(self._axis_names(), eig, strict=False))
        ]
        self.extra["short"] = [
            f"eigenvector {i + 1} (lambda = {eig[i]:.4g})" for i in range(self.opts.needed)
        ]
        if kind == "hessian":  # v^T H v = lambda (blocks too: v is zero outside): the parabola checks it
            self.extra["eigenvalues"] = eig[: self.opts.needed]

    def _facts(self, dirs: list[Any], info: dict[str, Any]) -> dict[str, Any]:
        from lscape_cli.core import directions as D

        facts: dict[str, Any] = {
            "kind": info["kind"],
            "count": len(dirs),
            "digest": D.digest(dirs),
            "lengths": [D.length(d) for d in dirs],
            "theta_norm": D.length(self.theta),
            "cosines": [
                [i, j, D.cosine(dirs[i], dirs[j])] for i in range(len(dirs)) for j in range(i + 1, len(dirs))
            ],
        }
        if info["kind"] == "random" and self.opts.norm == "filter":
            dev = [max(D.filter_norm_ratio(d, self.theta).values(), default=0.0) for d in dirs]
            facts["filter_norm_max_relative_deviation"] = dev
        return facts


def _nice(x: float) -> float:
    """The smallest of 1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8 (times a power of ten) at or above ``x``."""
    scale = 10.0 ** math.floor(math.log10(x)) if x > 0 else 1.0
    return next(m * scale for m in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10) if m * scale >= x * (1 - 1e-12))
