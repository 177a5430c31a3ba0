"""`lscape pareto`: seed 000's fit-versus-flatness analysis over many runs, and general Pareto fronts."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from lscape_cli.cli.console import emit_json, err
from lscape_cli.cli.options import (
    JsonOpt,
    ModelArgsOpt,
    ModelDefOpt,
    OverwriteOpt,
    QuietOpt,
    ThreadsOpt,
    TrustModelDefOpt,
    user_inputs,
)
from lscape_cli.storage.files import allow_overwrite, refuse_overlap

if TYPE_CHECKING:
    from lscape_cli.core.pareto.study import ParetoResults


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
    axes: Annotated[
        str,
        typer.Option(
            help="Axes of the ellipse figure: linear, log, or auto (log where values are positive and span "
            "two decades); on a log axis ellipses and means are of log10 values."
        ),
    ] = "auto",
    model_def: ModelDefOpt = None,
    model_args: ModelArgsOpt = None,
    trust_model_def: TrustModelDefOpt = False,
    out: Annotated[Path, typer.Option(help="Output JSON; figures go beside it.")] = Path("pareto.json"),
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    overwrite: OverwriteOpt = False,
    threads: ThreadsOpt = None,
) -> None:
    """Fit-versus-flatness across groups of runs: ellipses, Pareto fronts, lambda_d, rho_RMS and lambda_G.

    Reads probe/train records (joined by checkpoint sha256), groups them by a config key, and writes
    pareto.json plus three figures (pareto-ellipses, pareto-summary, pareto-proxy; PNG and PDF).

    Example:
        lscape pareto runs/ --group-by model.depth --x train_loss --y frobenius --target val_loss
    """
    allow_overwrite(overwrite)
    from lscape_cli.cli.process import invocation
    from lscape_cli.core import choices as ch
    from lscape_cli.core.pareto.study import ParetoRequest, run_pareto
    from lscape_cli.models.loading import load_model
    from lscape_cli.plotting import pareto as plots
    from lscape_cli.storage.pareto_record import write_pareto
    from lscape_cli.storage.records import to_json
    from lscape_cli.storage.runs import collect

    ch.AxisScale.check(axes, "--axes")
    t0 = time.perf_counter()
    refuse_overlap([out], [p for p in inputs if p.is_file()])
    req = ParetoRequest(group_by, x, y, target, tuple(metric or ()), reference, params, align)
    runs = collect(inputs)
    user = user_inputs(model_def, model_args, trust_model_def, None)
    res = run_pareto(runs, req, lambda path: load_model(path, user=user))
    stem = out.with_name(out.name[: -len(".json")] if out.name.endswith(".json") else out.name)
    figures = plots.all_figures(res.results, stem, res.keys, res.table, axes)
    scales = dict(zip(("x", "y"), plots.axis_scales(res.table, axes), strict=True))
    results: ParetoResults = {**res.results, "figures": [p.name for p in figures], "figure_axes": scales}
    timing = {"total": time.perf_counter() - t0}
    record = write_pareto(out, invocation(), inputs, runs, results, res.warnings, timing)
    if json_out:
        emit_json(to_json(record))
    if not quiet and not json_out:
        _print(dict(results), out)


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
