"""`lscape pareto`: seed 000's fit-versus-flatness analysis over many runs, and general Pareto fronts."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from lscape_cli.cli.console import emit_json, err
from lscape_cli.cli.options import JsonOpt, QuietOpt
from lscape_cli.errors import LscapeError

PARETO_SCHEMA = "lscape.pareto/1"
PRODUCERS = {
    "frobenius": "--frobenius",
    "trace": "--trace",
    "lambda_max": "--lambda-max",
    "grad_norm": "--grad-norm",
    "effective_rank": "--density",
    "lambda_min": "--lambda-min",
}


def pareto(
    inputs: Annotated[
        list[Path], typer.Argument(help="probe/train JSON files, or directories searched for them.")
    ],
    group_by: Annotated[
        str, typer.Option(help="Config key to group runs by, e.g. model.depth, training.lr.")
    ] = "model.depth",
    x: Annotated[str, typer.Option("--x", help="Fit metric (minimised).")] = "train_loss",
    y: Annotated[str, typer.Option("--y", help="Flatness metric (minimised).")] = "frobenius",
    target: Annotated[
        str, typer.Option(help="Held-out metric the proxy x + lambda*y should track.")
    ] = "val_loss",
    metric: Annotated[
        list[str] | None,
        typer.Option(
            help="General mode: NAME:min or NAME:max (repeatable); adds fronts and hypervolume over these."
        ),
    ] = None,
    reference: Annotated[
        str | None, typer.Option(help="Hypervolume reference point, comma-separated.")
    ] = None,
    params: Annotated[
        bool, typer.Option("--params/--no-params", help="Parameter-space spread (loads the checkpoints).")
    ] = True,
    align: Annotated[
        bool,
        typer.Option("--align/--no-align", help="Also the spread after aligning each restart to the first."),
    ] = True,
    out: Annotated[Path, typer.Option(help="Output JSON; figures go beside it.")] = Path("pareto.json"),
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Fit-versus-flatness across groups of runs: ellipses, Pareto fronts, lambda_d, rho_RMS and lambda_G.

    Reads probe/train records (joined by checkpoint sha256), groups them by a config key, and writes
    pareto.json plus three figures (pareto-ellipses, pareto-summary, pareto-proxy; PNG and PDF).

    Example:
        lscape pareto runs/ --group-by model.depth --x train_loss --y frobenius --target val_loss
    """
    import numpy as np

    from lscape_cli.core import pareto as P
    from lscape_cli.storage.runs import collect

    t0 = time.perf_counter()
    if not out.parent.is_dir():
        raise LscapeError(
            "output directory does not exist", str(out.parent), "create it or choose another --out"
        )
    runs = collect(inputs)
    _check_homogeneous(runs)
    groups = _group(runs, group_by)
    names = [x, y, target]
    table = {g: np.array([[_metric(r, m) for m in names] for r in rs]) for g, rs in groups.items()}
    per_group = {}
    warnings: list[str] = []
    for g, rs in groups.items():
        summary = P.group_summary(table[g][:, :2])
        summary["runs"] = [str(r.checkpoint) for r in rs]
        summary["target_mean"] = float(table[g][:, 2].mean())
        if params:
            summary["parameters"] = _param_stats(rs, align, warnings)
        per_group[str(g)] = summary
    keys = list(groups)
    means = np.array([table[g].mean(axis=0) for g in keys])
    across = {"groups": [str(g) for g in keys]}
    if len(keys) >= 2:
        across.update(P.global_lambda(means[:, 0], means[:, 1], means[:, 2]))
        warnings.extend([across.pop("warning")] if "warning" in across else [])
    else:
        warnings.append("lambda_G needs at least two groups")
    results: dict[str, Any] = {
        "group_by": group_by,
        "x": x,
        "y": y,
        "target": target,
        "groups": per_group,
        "across_groups": across,
        "num_runs": len(runs),
    }
    if metric:
        results["multi"] = _multi(runs, metric, reference)
    figures = _figures(results, out, keys, table)
    results["figures"] = [str(p.name) for p in figures]
    _write(out, inputs, runs, results, warnings, {"total": time.perf_counter() - t0}, json_out)
    if not quiet and not json_out:
        _print(results, out)


def _metric(run: Any, name: str) -> float:
    value = run.metrics.get(name)
    if value is None:
        flag = PRODUCERS.get(name)
        how = (
            f"run `lscape probe {run.checkpoint} {flag}`"
            if flag
            else "it comes from `lscape train` records or `lscape probe` (check the name)"
        )
        raise LscapeError(f"metric {name!r} missing for a run", str(run.checkpoint), how)
    return float(value)


def _check_homogeneous(runs: list[Any]) -> None:
    for key in ("dataset.name", "training.loss"):
        values = sorted({str(r.config.get(key)) for r in runs})
        if len(values) > 1:
            raise LscapeError(
                f"runs mix {key} values {', '.join(values)}",
                key,
                "analyse one dataset and one loss at a time",
            )


def _group(runs: list[Any], key: str) -> dict[Any, list[Any]]:
    groups: dict[Any, list[Any]] = {}
    for r in runs:
        if key not in r.config:
            known = ", ".join(sorted(k for k in r.config if not k.startswith("dataset.normalization")))
            raise LscapeError(f"unknown group key {key!r}", "--group-by", f"known keys: {known}")
        groups.setdefault(r.config[key], []).append(r)
    return dict(sorted(groups.items(), key=lambda kv: (isinstance(kv[0], str), kv[0])))


def _param_stats(runs: list[Any], align: bool, warnings: list[str]) -> dict[str, Any]:
    import numpy as np

    from lscape_cli.core import pareto as P
    from lscape_cli.storage.checkpoint import load_model

    loaded = [load_model(r.checkpoint) for r in runs]
    flat = np.stack(
        [
            np.concatenate([p.detach().double().numpy().ravel() for p in lm.module.parameters()])
            for lm in loaded
        ]
    )
    stats: dict[str, Any] = dict(P.spreads(flat))
    stats["num_parameters"] = int(flat.shape[1])
    if align and len(loaded) > 1:
        aligned = _aligned(loaded, warnings)
        if aligned is not None:
            stats["spread_after_alignment"] = P.spreads(aligned)["spread_about_centroid"]
    return stats


def _aligned(loaded: list[Any], warnings: list[str]) -> Any:
    """Every restart's parameters permuted onto the first's hidden units (weight matching)."""
    import numpy as np

    from lscape_cli.core import alignment

    def params(lm: Any) -> dict[str, Any]:
        return {n: p.detach() for n, p in lm.module.named_parameters()}

    ref = loaded[0]
    names = list(params(ref))
    rows = [np.concatenate([params(ref)[n].double().numpy().ravel() for n in names])]
    for lm in loaded[1:]:
        try:
            moved = alignment.align(ref.spec, params(ref), params(lm)).params
        except ValueError as exc:  # a family without a known permutation structure
            warnings.append(f"spread_after_alignment omitted: {exc}")
            return None
        rows.append(np.concatenate([moved[n].double().numpy().ravel() for n in names]))
    return np.stack(rows)


def _multi(runs: list[Any], specs: list[str], reference: str | None) -> dict[str, Any]:
    import numpy as np

    from lscape_cli.core import pareto as P

    names, senses = [], []
    for spec in specs:
        name, _, sense = spec.partition(":")
        if sense not in ("min", "max"):
            raise LscapeError(f"invalid metric spec {spec!r}", "--metric", "write NAME:min or NAME:max")
        names.append(name)
        senses.append(sense)
    values = np.array([[_metric(r, m) for m in names] for r in runs])
    ref = None
    if reference:
        ref = [float(v) for v in reference.split(",")]
        if len(ref) != len(names):
            raise LscapeError(
                f"reference has {len(ref)} values for {len(names)} metrics",
                "--reference",
                "give one value per --metric",
            )
    res = P.multi_front(values, senses, ref)
    res["metrics"] = names
    res["runs"] = [str(r.checkpoint) for r in runs]
    return res


def _figures(results: dict[str, Any], out: Path, keys: list[Any], table: dict[Any, Any]) -> list[Path]:
    from lscape_cli.plotting import pareto as plots

    stem = out.with_name(out.name[: -len(".json")] if out.name.endswith(".json") else out.name)
    return plots.all_figures(results, stem, keys, table)


def _write(
    out: Path,
    inputs: list[Path],
    runs: list[Any],
    results: dict[str, Any],
    warnings: list[str],
    timing: dict[str, float],
    json_out: bool,
) -> None:
    from lscape_cli.cli import invocation
    from lscape_cli.storage.records import environment, make_record, to_json, write_record

    config = {
        "inputs": [str(p) for p in inputs],
        "runs": [{"checkpoint": str(r.checkpoint), "sha256": r.sha256, "sources": r.sources} for r in runs],
    }
    record = make_record(
        PARETO_SCHEMA,
        out_path=out,
        command=invocation(),
        inputs={},
        config=config,
        results=results,
        timing_s=timing,
        warnings=warnings,
        env=environment("cpu"),
    )
    write_record(out, record)
    if json_out:
        emit_json(to_json(record))


def _print(results: dict[str, Any], out: Path) -> None:
    from rich.table import Table

    table = Table(title=f"lscape pareto -> {out}")
    for col in (
        results["group_by"],
        "runs",
        f"mean {results['x']}",
        f"mean {results['y']}",
        "front",
        "lambda_d",
        "rho_RMS",
        "spread",
        "aligned spread",
    ):
        table.add_column(col)
    for g, s in results["groups"].items():
        p = s.get("parameters", {})
        lam = s["tls"]["lambda"]
        table.add_row(
            g,
            str(s["n"]),
            f"{s['mean'][0]:.4g}",
            f"{s['mean'][1]:.4g}",
            str(len(s["front_hull_chain"])),
            "-" if lam is None else f"{lam:.4g}",
            _fmt(p.get("rho_rms")),
            _fmt(p.get("spread_about_centroid")),
            _fmt(p.get("spread_after_alignment")),
        )
    err.print(table)
    a = results["across_groups"]
    if "lambda_g" in a:
        imp = a["relative_improvement"]
        err.print(
            f"lambda_G = {a['lambda_g']:.4g}"
            + (" (the scan's upper bound, not a fitted minimum)" if a.get("lambda_G_at_bound") else "")
            + f"; MAE to normalised {results['target']}: "
            f"{a['mae_without_curvature']:.4g} -> {a['mae_with_curvature']:.4g}"
            + ("" if imp is None else f" ({100 * imp:.1f}% lower)")
        )


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.4g}"
