"""Curvature table (seed 001 Tables 2-5, seed 002 Table 1, seed 004): one row per probe record.

Each estimate shows the uncertainty its record holds (eigenvalue error bounds, Hutch++ standard errors,
noise standard errors; mean ± std [min, max] over batches when probed per batch), a tooltip with its
method and budget, and a footnote per row with the evaluation protocol of its record.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lscape_cli.report.cells import DASH, Cell, Source, Table, fmt, get, pm_cell, spread_cell, value_cell
from lscape_cli.report.inventory import run_cell
from lscape_cli.report.runs import Run
from lscape_cli.storage.study import Record

CellFn = Callable[[str, dict[str, Any]], Cell]


def _eig_note(data: dict[str, Any], key: str) -> str:
    e = get(data, f"/results/{key}") or {}
    state = "converged" if e.get("converged") else "NOT converged"
    return (
        f"{e.get('method')} (stop: {e.get('stop')}, tol {e.get('tol')}), {e.get('num_matvecs')} HVPs, "
        f"{state}, seed {e.get('seed')}; ± is the error bound"
    )


def _stoch_note(data: dict[str, Any], key: str) -> str:
    e = get(data, f"/results/{key}") or {}
    return f"{e.get('method')}, {e.get('num_matvecs')} HVPs, seed {e.get('seed')}; ± is one standard error"


def _note_fn(key: str, err: str | None) -> Callable[[dict[str, Any]], str]:
    """The tooltip of a column: eigen-solver state, stochastic budget, or the record's method text."""
    if err == "stderr":
        return lambda d: _stoch_note(d, key)
    if err is not None:
        return lambda d: _eig_note(d, key)
    return lambda d: str(get(d, f"/results/{key}/method") or get(d, f"/results/{key}/note") or "")


def _batched(data: dict[str, Any]) -> bool:
    return get(data, "/results/batches") is not None


def _summary(name: str, note: str) -> CellFn:
    return lambda r, d: spread_cell(r, d, f"/results/batches/summary/{name}", note)


def _eigen_column(i: int) -> CellFn:
    """λ_{i+1}: from top_k (or lambda_max for i = 0), ± its error bound."""

    def cell(r: str, d: dict[str, Any]) -> Cell:
        if _batched(d):
            name = f"lambda_{i + 1}"
            if get(d, f"/results/batches/summary/{name}") is None and i == 0:
                name = "lambda_max"
            return spread_cell(r, d, f"/results/batches/summary/{name}", "mean ± std [min, max] over batches")
        if get(d, "/results/top_k") is not None:
            return pm_cell(
                r,
                d,
                f"/results/top_k/eigenvalues/{i}",
                f"/results/top_k/error_bounds/{i}",
                _eig_note(d, "top_k"),
            )
        if i == 0:
            return pm_cell(
                r,
                d,
                "/results/lambda_max/estimate",
                "/results/lambda_max/error_bound",
                _eig_note(d, "lambda_max"),
            )
        return Cell(DASH)

    return cell


def _simple(key: str, err: str | None, note: Callable[[dict[str, Any]], str], scalar: str) -> CellFn:
    def cell(r: str, d: dict[str, Any]) -> Cell:
        if _batched(d):
            return spread_cell(
                r, d, f"/results/batches/summary/{scalar}", "mean ± std [min, max] over batches"
            )
        if err is None:
            return value_cell(r, d, f"/results/{key}/estimate", note(d))
        return pm_cell(r, d, f"/results/{key}/estimate", f"/results/{key}/{err}", note(d))

    return cell


def _sharpness(i: int) -> CellFn:
    def cell(r: str, d: dict[str, Any]) -> Cell:
        if _batched(d):
            return (
                spread_cell(r, d, "/results/batches/summary/sharpness_max", "max rise; mean over batches")
                if i == 0
                else Cell(DASH)
            )
        rnd = get(d, f"/results/sharpness/{i}/random") or {}
        note = (
            f"max loss rise over {rnd.get('num_directions')} random {get(d, f'/results/sharpness/{i}/kind')} "
            f"directions at radius {rnd.get('eps')}, seed {rnd.get('seed')}; mean rise "
            f"{fmt(rnd.get('s_mean'))} ± {fmt(rnd.get('s_mean_stderr'))}"
        )
        return value_cell(r, d, f"/results/sharpness/{i}/random/s_max", note)

    return cell


def _noise(i: int) -> CellFn:
    def cell(r: str, d: dict[str, Any]) -> Cell:
        n = get(d, "/results/noise") or {}
        note = f"{n.get('method')}, {n.get('samples')} samples, seed {n.get('seed')}; ± is one standard error"
        base = f"/results/noise/curve/{i}"
        return pm_cell(r, d, f"{base}/loss_rise", f"{base}/loss_rise_stderr", note)

    return cell


def _pac(r: str, d: dict[str, Any]) -> Cell:
    if _batched(d):
        return spread_cell(r, d, "/results/batches/summary/pac_bayes_sigma", "mean over batches")
    p = get(d, "/results/pac_bayes/isotropic") or {}
    note = (
        f"largest sigma with {p.get('metric')} rise within {p.get('target')}; "
        f"bracket {p.get('bracket')}, {p.get('status')}"
    )
    return value_cell(r, d, "/results/pac_bayes/isotropic/sigma", note)


def _pac_bound(r: str, d: dict[str, Any]) -> Cell:
    """The PAC-Bayes bound the sigma implies (kl-inverse form), ± its Monte-Carlo standard error."""
    if _batched(d):
        return spread_cell(r, d, "/results/batches/summary/pac_bayes_bound_kl", "mean over batches")
    b = get(d, "/results/pac_bayes/bound") or {}
    note = (
        f"{b.get('formula')}: kl-inverse form (Pinsker form {fmt(b.get('bound'))}); prior centred at "
        f"{b.get('prior_mean')} ({b.get('prior_source')}), ||θ−θ₀|| {fmt(b.get('distance'))}, "
        f"KL {fmt(b.get('kl'))}, m {b.get('m')}, δ {b.get('delta')}, ln G {fmt(b.get('ln_grid_size'))}; "
        f"± is the Monte-Carlo standard error of the train error over {b.get('draws')} draws"
    )
    cell = pm_cell(
        r,
        d,
        "/results/pac_bayes/bound/kl_inverse_bound",
        "/results/pac_bayes/bound/kl_inverse_bound_stderr",
        note,
    )
    if b.get("prior_mean") == "zero":
        cell.badge = "prior at 0"
    return cell


def _stability(r: str, d: dict[str, Any]) -> Cell:
    s = get(d, "/results/stability") or {}
    if s.get("eta_lambda_max") is None:
        return Cell(DASH)
    ptrs = ["/results/stability/eta_lambda_max", "/results/stability/threshold", "/results/stability/stable"]
    sources = tuple(Source(r, p, get(d, p)) for p in ptrs if get(d, p) is not None)
    verdict = {True: "stable", False: "unstable", None: "no verdict"}[s.get("stable")]
    text = f"{fmt(s['eta_lambda_max'])} vs {fmt(s.get('threshold'))}: {verdict}"
    return Cell(
        text, sources, str(s.get("rule", "")), badge="" if s.get("stable") is not False else "unstable"
    )


def _columns(records: list[Record]) -> list[tuple[str, CellFn]]:
    """The columns some record can fill, in a fixed order."""
    datas = [r.data for r in records]

    def has(key: str, scalar: str | None = None) -> bool:
        """Some record holds ``results.<key>``, or its per-batch summary holds ``scalar``."""
        summary = f"/results/batches/summary/{scalar or key}"
        return any(get(d, f"/results/{key}") is not None or get(d, summary) is not None for d in datas)

    k = max(
        [len(get(d, "/results/top_k/eigenvalues") or []) for d in datas] + [1 if has("lambda_max") else 0]
    )
    cols: list[tuple[str, CellFn]] = [(f"λ{i + 1}", _eigen_column(i)) for i in range(k)]
    for header, key, err, scalar in (
        ("trace", "trace", "stderr", "trace"),
        ("‖H‖_F", "frobenius", "stderr", "frobenius"),
        ("λmin", "lambda_min", "error_bound", "lambda_min"),
        ("condition number", "condition_number", None, "condition_number"),
        ("effective rank", "effective_rank", None, "effective_rank"),
        ("grad norm", "grad_norm", None, "grad_norm"),
    ):
        if has(key, scalar):
            cols.append((header, _simple(key, err, _note_fn(key, err), scalar)))
    radii = max(len(get(d, "/results/sharpness") or []) for d in datas)
    for i in range(radii):
        eps = next(
            get(d, f"/results/sharpness/{i}/eps")
            for d in datas
            if get(d, f"/results/sharpness/{i}") is not None
        )
        cols.append((f"ε-sharpness (ε={fmt(eps)})", _sharpness(i)))
    if radii == 0 and has("sharpness", "sharpness_max"):
        cols.append(("ε-sharpness", _sharpness(0)))
    sigmas = max(len(get(d, "/results/noise/curve") or []) for d in datas)
    for i in range(sigmas):
        sigma = next(
            get(d, f"/results/noise/curve/{i}/sigma")
            for d in datas
            if get(d, f"/results/noise/curve/{i}") is not None
        )
        cols.append((f"noise loss rise (σ={fmt(sigma)})", _noise(i)))
    if has("pac_bayes", "pac_bayes_sigma"):
        cols.append(("PAC-Bayes σ", _pac))
    if has("pac_bayes/bound", "pac_bayes_bound_kl"):
        cols.append(("PAC-Bayes bound", _pac_bound))
    if any(get(d, "/results/stability/eta_lambda_max") is not None for d in datas):
        cols.append(("η·λmax (stability)", _stability))
    return cols


def protocol(data: dict[str, Any]) -> str:
    """The evaluation protocol of a probe record, in one line."""
    ev = get(data, "/config/evaluation") or {}
    batches = get(data, "/config/num_batches") or 1
    size = get(data, "/config/batch_size")
    if size is None:
        part = "whole split"
    else:
        part = f"{batches} disjoint batch{'es' if batches > 1 else ''} of {size}"
    hvp = get(data, "/results/hvp/strategy") or get(data, "/results/batches/per_batch/0/hvp/strategy")
    first = "/results/batches/per_batch/0" if _batched(data) else "/results"
    method = get(data, f"{first}/lambda_max/method")
    kinds = {s.get("kind") for s in get(data, f"{first}/sharpness") or []}
    return (
        f"split {ev.get('split')} ({ev.get('num_samples')} samples, {part}), {ev.get('mode')} mode, "
        f"{ev.get('loss')} loss, {get(data, '/config/dtype')}, seed {get(data, '/config/seed')}"
        + (f", HVPs by {hvp}" if hvp else "")
        + (f", λmax by {method}" if method else "")
        + (f", {'/'.join(sorted(k for k in kinds if k))} sharpness" if kinds else "")
    )


def curvature(runs: list[Run], rels: dict[str, str]) -> Table | None:
    """One row per probe record of the runs given (in their order)."""
    pairs = [(run, p) for run in runs for p in run.probes]
    if not pairs:
        return None
    cols = _columns([p for _, p in pairs])
    table = Table(
        "curvature",
        "Curvature",
        ["run", "split", *(h for h, _ in cols), "protocol"],
        caption="± after an eigenvalue is its error bound; after a stochastic estimate, one standard error. "
        "Hover a value for its method and budget; the protocol of each row is its footnote.",
    )
    for run, probe in pairs:
        r = rels[str(probe.path)]
        row = [run_cell(run), value_cell(r, probe.data, "/config/evaluation/split")]
        row += [fn(r, probe.data) for _, fn in cols]
        stale = f" STALE: {'; '.join(probe.stale)}" if probe.stale else ""
        table.footnotes.append(f"{r}: {protocol(probe.data)}.{stale}")
        row.append(Cell(f"[{len(table.footnotes)}]", note=protocol(probe.data)))
        table.rows.append(row)
    return table
