"""Curvature table (seed 001 Tables 2-5, seed 002 Table 1, seed 004): one row per probe record.

Each estimate shows the uncertainty its record holds (eigenvalue error bounds, Hutch++ standard errors,
noise standard errors; mean ± std [min, max] over batches when probed per batch), a tooltip with its
method and budget, and a footnote per row with the evaluation protocol of its record.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lscape_cli.report.cells import (
    DASH,
    Cell,
    Source,
    Table,
    extreme_cell,
    fmt,
    fmt_err,
    get,
    pm_cell,
    spread_cell,
    value_cell,
)
from lscape_cli.report.inventory import run_cell
from lscape_cli.report.probes import sample_text
from lscape_cli.report.runs import Run, sort_key
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
    text = "note" if key == "condition_number" else "method"  # condition_number has a note, no method
    return lambda d: str(get(d, f"/results/{key}/{text}") or "")


def _batched(data: dict[str, Any]) -> bool:
    return get(data, "/results/batches") is not None


NOT_CONVERGED = "not converged"


def converged(results: Any, key: str, i: int = 0) -> bool | None:
    """Whether an eigen-solver result converged (pair ``i`` of ``top_k``); ``None`` when not recorded."""
    e = get(results, f"/{key}")
    if not isinstance(e, dict):
        return None
    pairs = e.get("converged_pairs")
    if isinstance(pairs, list) and i < len(pairs):
        return bool(pairs[i])
    return None if e.get("converged") is None else bool(e["converged"])


def convergence_flag(data: dict[str, Any], key: str, i: int = 0) -> str:
    """``not converged`` (whole split), ``not converged in k of n batches`` (per batch), or ``""``."""
    if not _batched(data):
        return NOT_CONVERGED if converged(get(data, "/results"), key, i) is False else ""
    per = get(data, "/results/batches/per_batch") or []
    bad = sum(converged(b, key, i) is False for b in per)
    return f"{NOT_CONVERGED} in {bad} of {len(per)} batches" if bad else ""


def _eigen_key(data: dict[str, Any]) -> str:
    first = get(data, "/results/batches/per_batch/0") if _batched(data) else get(data, "/results")
    return "top_k" if get(first, "/top_k") is not None else "lambda_max"


def _summary(name: str, note: str) -> CellFn:
    return lambda r, d: spread_cell(r, d, f"/results/batches/summary/{name}", note)


def _eigen_column(i: int) -> CellFn:
    """λ_{i+1}: from top_k (or lambda_max for i = 0), ± its error bound."""

    def cell(r: str, d: dict[str, Any]) -> Cell:
        shown = _eigen_value(i, r, d)
        return shown.flag(convergence_flag(d, _eigen_key(d), i)) if shown.sources else shown

    return cell


def _eigen_value(i: int, r: str, d: dict[str, Any]) -> Cell:
    """λ_{i+1} of one record, before its convergence flag."""
    if _batched(d):
        name = f"lambda_{i + 1}"
        if get(d, f"/results/batches/summary/{name}") is None and i == 0:
            name = "lambda_max"
        return spread_cell(r, d, f"/results/batches/summary/{name}", "mean ± std [min, max] over batches")
    if get(d, "/results/top_k") is not None:
        if i == 0:
            return extreme_cell(r, d, "/results/top_k", "/0", True, _eig_note(d, "top_k"))
        base, err = f"/results/top_k/eigenvalues/{i}", f"/results/top_k/error_bounds/{i}"
        return pm_cell(r, d, base, err, _eig_note(d, "top_k"))
    if i == 0:
        return extreme_cell(r, d, "/results/lambda_max", "", True, _eig_note(d, "lambda_max"))
    return Cell(DASH)


def _simple(key: str, err: str | None, note: Callable[[dict[str, Any]], str], scalar: str) -> CellFn:
    def cell(r: str, d: dict[str, Any]) -> Cell:
        if _batched(d):
            summary = f"/results/batches/summary/{scalar}"
            shown = spread_cell(r, d, summary, "mean ± std [min, max] over batches")
        elif err is None:
            shown = value_cell(r, d, f"/results/{key}/estimate", note(d))
        elif key == "lambda_min":
            shown = extreme_cell(r, d, f"/results/{key}", "", False, note(d))
        else:
            shown = pm_cell(r, d, f"/results/{key}/estimate", f"/results/{key}/{err}", note(d))
        return shown.flag(convergence_flag(d, key)) if err == "error_bound" and shown.sources else shown

    return cell


def _sharpness_rows(d: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """``(pointer, row)`` of each ε-sharpness radius a record holds (a batched record: its first radius)."""
    if _batched(d):
        row = get(d, "/results/batches/per_batch/0/sharpness/0")
        return [("/results/batches/summary/sharpness_max", row)] if isinstance(row, dict) else []
    rows = get(d, "/results/sharpness") or []
    return [(f"/results/sharpness/{i}", row) for i, row in enumerate(rows) if isinstance(row, dict)]


def same(want: Any, have: Any) -> bool:
    """Whether a recorded value matches what a column asks for (``None``: anything; ``"0.05"`` = 0.05)."""
    if want is None or want == have:
        return True
    if isinstance(have, (int, float)) and not isinstance(have, bool):
        try:
            return float(want) == float(have)
        except (TypeError, ValueError):
            return False
    return str(want) == str(have)


def _sharpness(kind: Any, eps: Any, stat: Any = None) -> CellFn:
    """The ε-sharpness of one kind and radius: S_max, or S_mean ± its standard error (``stat=mean``)."""
    mean = stat == "mean"

    def cell(r: str, d: dict[str, Any]) -> Cell:
        for pointer, row in _sharpness_rows(d):
            if not (same(kind, row.get("kind")) and same(eps, row.get("eps"))):
                continue
            if _batched(d):
                name = "sharpness_mean" if mean else "sharpness_max"
                what = "mean rise" if mean else "max rise"
                base = f"/results/batches/summary/{name}"
                return spread_cell(r, d, base, f"{what}; mean ± std [min, max] over batches")
            rnd = row.get("random") or {}
            n, k = rnd.get("num_directions"), row.get("kind")
            over = f"over {n} random {k} directions at radius {rnd.get('eps')}"
            if mean:
                note = f"mean loss rise {over}, ± its standard error, seed {rnd.get('seed')}"
                return pm_cell(r, d, f"{pointer}/random/s_mean", f"{pointer}/random/s_mean_stderr", note)
            note = (
                f"max loss rise {over}, seed {rnd.get('seed')}; mean rise {fmt(rnd.get('s_mean'))} ± "
                f"{fmt(rnd.get('s_mean_stderr'))}"
            )
            return value_cell(r, d, f"{pointer}/random/s_max", note)
        return Cell(DASH)

    return cell


def _noise(method: Any, sigma: Any) -> CellFn:
    """The loss rise under weight noise of one method and σ (a record without it: –)."""

    def cell(r: str, d: dict[str, Any]) -> Cell:
        n = get(d, "/results/noise") or {}
        if not same(method, n.get("method")):
            return Cell(DASH)
        for i, row in enumerate(n.get("curve") or []):
            if same(sigma, row.get("sigma")):
                note = (
                    f"{n.get('method')}, {n.get('samples')} samples, seed {n.get('seed')}; "
                    "± is one standard error"
                )
                base = f"/results/noise/curve/{i}"
                return pm_cell(r, d, f"{base}/loss_rise", f"{base}/loss_rise_stderr", note)
        return Cell(DASH)

    return cell


def pac_flag(status: Any) -> str:
    """A sigma search's flag: ``""`` when converged, else its status's first words (``above bracket``)."""
    return "" if not status or status == "converged" else str(status).split(" (")[0]


def _pac_batched(r: str, d: dict[str, Any]) -> Cell:
    """Mean over batches, flagged with how many batches' sigma is a bracket end rather than a root."""
    cell = spread_cell(r, d, "/results/batches/summary/pac_bayes_sigma", "mean over batches")
    per = get(d, "/results/batches/per_batch") or []
    flags = [pac_flag(get(b, "/pac_bayes/isotropic/status")) for b in per]
    for flag in dict.fromkeys(f for f in flags if f):
        cell.flag(f"{flag} in {flags.count(flag)} of {len(per)} batches" if len(per) > 1 else flag)
    return cell


def _pac(r: str, d: dict[str, Any]) -> Cell:
    if _batched(d):
        return _pac_batched(r, d)
    p = get(d, "/results/pac_bayes/isotropic") or {}
    note = (
        f"largest sigma with {p.get('metric')} rise within {p.get('target')}; "
        f"bracket {p.get('bracket')}, {p.get('status')}"
    )
    cell = value_cell(r, d, "/results/pac_bayes/isotropic/sigma", note)
    return cell.flag(pac_flag(p.get("status")))  # above/below the bracket: sigma is its end, not a root


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
        cell.flag("prior at 0")
    if b.get("vacuous"):
        cell.flag("vacuous")
    return cell


STABILITY_HEADER = "η·λmax (stability)"
STABILITY_NOTE = (
    "η·λmax: the verdict compares the value (the mean over batches when probed per batch) with the "
    "threshold (2, or 2(1+β) with momentum β); uncertain when the threshold lies within lr × the λmax "
    "error bound, or within [min, max] or mean ± 2 std over batches"
)


def stability_verdict(
    stable: bool | None, mean: float, lo: float, hi: float, std: float | None, threshold: float
) -> str:
    """``stable``/``unstable`` from the mean, ``uncertain`` when the threshold lies within the spread.

    ``[lo, hi]``: the range the value may take (error bound, or min and max over batches); ``std``: its
    standard deviation over batches, whose ± 2 band also counts. ``stable`` is the record's own verdict;
    ``None`` (an adaptive optimiser, whose threshold is shown for reference only) gives ``no verdict``.
    """
    if stable is None:
        return "no verdict"
    bands = [(lo, hi)] + ([(mean - 2 * std, mean + 2 * std)] if std else [])
    if any(a <= threshold <= b for a, b in bands):
        return "uncertain"
    return "stable" if mean < threshold else "unstable"


def _numbers(*values: Any) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _stability_cell(
    text: str, sources: tuple[Source, ...], verdict: str, note: str, parts: tuple[Any, Any, Any]
) -> Cell:
    """``parts``: the value, its ± and the threshold (the CSV's numbers; the verdict is its own column)."""
    value, err, threshold = parts
    cell = Cell(text, sources, note, value=value, err=err or None)
    cell.extra = (("threshold", threshold), ("verdict", verdict))
    return cell.flag("unstable" if verdict == "unstable" else "")


def _stability(r: str, d: dict[str, Any]) -> Cell:
    """η·λmax against its threshold, with the verdict and which λmax it uses (whole split or batches)."""
    if _batched(d):
        return _stability_batched(r, d)
    s = get(d, "/results/stability") or {}
    if s.get("eta_lambda_max") is None:
        return Cell(DASH, note=str(s.get("note") or ""))
    eta, thr, lr = s["eta_lambda_max"], s["threshold"], s.get("lr")
    err = get(d, "/results/lambda_max/error_bound")
    near = get(d, "/results/lambda_max/nearest_eigenvalue_bound")
    spread = float(lr * err) if _numbers(lr, err) else 0.0
    below = float(lr * near) if spread and _numbers(near) else spread  # λmax ≥ θ − near is certain
    ptrs = [
        "/results/stability/eta_lambda_max",
        "/results/lambda_max/error_bound",
        "/results/lambda_max/nearest_eigenvalue_bound",
        "/results/stability/threshold",
    ]
    sources = tuple(Source(r, p, get(d, p)) for p in ptrs if get(d, p) is not None)
    verdict = stability_verdict(s.get("stable"), eta, eta - below, eta + spread, None, thr)
    pm = (
        ""
        if not spread
        else f" ± {fmt_err(spread)}"
        if below == spread
        else f" (−{fmt_err(below)}/+{fmt_err(spread)})"
    )
    conv = "converged" if get(d, "/results/lambda_max/converged") else "NOT converged"
    note = (
        f"{s.get('rule', '')}; lr {fmt(lr)}; λmax {fmt(s.get('lambda_max'))} of the whole split "
        f"({get(d, '/config/evaluation/num_samples')} samples, {get(d, '/results/lambda_max/method')}, "
        f"{conv}); the bounds are lr × λmax's bounds (below: the residual's, above: the certificate)"
    )
    text = f"{fmt(eta)}{pm} vs {fmt(thr)}: {verdict} (λmax of the whole split)"
    cell = _stability_cell(text, sources, verdict, note, (eta, spread, thr))
    if below != spread:  # asymmetric: the CSV carries the interval too
        cell.lo, cell.hi = eta - below, eta + spread
    return cell.flag(f"λmax {flag}" if (flag := convergence_flag(d, "lambda_max")) else "")


def _batch_bounds(d: dict[str, Any]) -> tuple[float, float] | None:
    """The range of η·λmax over batches, each widened by lr × its λmax error bound (None: none recorded)."""
    ends = []
    for b in get(d, "/results/batches/per_batch") or []:
        st, err = b.get("stability") or {}, get(b, "/lambda_max/error_bound")
        eta, lr = st.get("eta_lambda_max"), st.get("lr")
        if _numbers(eta, lr, err):
            ends.append((eta - lr * err, eta + lr * err))
    return (min(a for a, _ in ends), max(b for _, b in ends)) if ends else None


def _stability_batched(r: str, d: dict[str, Any]) -> Cell:
    """η·λmax per batch: mean ± std [min, max], the verdict from the mean, uncertain within the spread.

    One batch: its value ± lr × its λmax error bound, as for a whole split.
    """
    per = [b.get("stability") or {} for b in get(d, "/results/batches/per_batch") or []]
    summary = get(d, "/results/batches/summary/eta_lambda_max") or {}
    first = per[0] if per else {}
    if summary.get("mean") is None or first.get("threshold") is None:
        return Cell(DASH, note=str(first.get("note") or ""))
    thr, mean, std = first["threshold"], summary["mean"], summary.get("std")
    lo, hi = summary["min"], summary["max"]
    bounds = _batch_bounds(d)
    if bounds is not None:
        lo, hi = min(lo, bounds[0]), max(hi, bounds[1])
    sources: tuple[Source, ...]
    err_shown: float | None = None
    if len(per) == 1:
        err = get(d, "/results/batches/per_batch/0/lambda_max/error_bound")
        value = "/results/batches/summary/eta_lambda_max/mean"
        sources = (Source(r, value, mean),)
        if bounds is not None:
            sources += (Source(r, "/results/batches/per_batch/0/lambda_max/error_bound", err),)
        err_shown = (bounds[1] - bounds[0]) / 2 if bounds is not None else None
        shown = fmt(mean) + (f" ± {fmt_err(err_shown)}" if err_shown is not None else "")
    else:
        spread = spread_cell(r, d, "/results/batches/summary/eta_lambda_max")
        sources, shown, err_shown = spread.sources, spread.text, spread.err
    sources += (Source(r, "/results/batches/per_batch/0/stability/threshold", thr),)
    verdict = stability_verdict(first.get("stable"), mean, lo, hi, std, thr)
    below = sum(p.get("stable") is True for p in per)
    text = f"{shown} vs {fmt(thr)}: {verdict} (λmax per batch, {sample_text(d)})"
    note = (
        f"{first.get('rule', '')}; lr {fmt(first.get('lr'))}; λmax of each of {sample_text(d)} "
        f"({'± is lr × its error bound' if len(per) == 1 else 'mean ± std [min, max] over batches'}); "
        f"{below} of {len(per)} batches below the threshold"
    )
    cell = _stability_cell(text, sources, verdict, note, (mean, err_shown, thr))
    return cell.flag(f"λmax {flag}" if (flag := convergence_flag(d, "lambda_max")) else "")


SIMPLE = {  # results key: (header, uncertainty key, per-batch summary name)
    "trace": ("trace", "stderr", "trace"),
    "frobenius": ("‖H‖_F", "stderr", "frobenius"),
    "lambda_min": ("λmin", "error_bound", "lambda_min"),
    "condition_number": ("condition number", None, "condition_number"),
    "effective_rank": ("effective rank", None, "effective_rank"),
    "grad_norm": ("grad norm", None, "grad_norm"),
}
FIELDS = {  # the probe fields a paper table may ask for (lscape report --table), and their headers
    "lambda_max": "λmax",
    **{k: h for k, (h, _, _) in SIMPLE.items()},
    "sharpness": "ε-sharpness",
    "noise": "noise loss rise",
    "pac_bayes_sigma": "PAC-Bayes σ",
    "pac_bayes_bound": "PAC-Bayes bound",
    "stability": STABILITY_HEADER,
}


def field_column(name: str, options: dict[str, str]) -> CellFn | None:
    """The cell function of a probe field (``lambda_3``, ``sharpness`` with ``kind``/``eps``, ...).

    ``None`` when ``name`` is no probe field. Options other than ``kind``, ``eps``, ``sigma`` and
    ``noise_method`` select records and are the caller's.
    """
    if name == "lambda_max" or (name.startswith("lambda_") and name[7:].isdigit() and int(name[7:]) > 0):
        return _eigen_column(0 if name == "lambda_max" else int(name[7:]) - 1)
    if name in SIMPLE:
        _, err, scalar = SIMPLE[name]
        return _simple(name, err, _note_fn(name, err), scalar)
    fixed: dict[str, CellFn] = {
        "pac_bayes_sigma": _pac,
        "pac_bayes_bound": _pac_bound,
        "stability": _stability,
    }
    if name in fixed:
        return fixed[name]
    if name == "sharpness":
        return _sharpness(options.get("kind"), options.get("eps"), options.get("stat"))
    if name == "noise":
        return _noise(options.get("noise_method"), options.get("sigma"))
    return None


def _columns(records: list[Record]) -> list[tuple[str, CellFn]]:
    """The columns some record can fill, in a fixed order."""
    datas = [r.data for r in records]

    def has(key: str, scalar: str | None = None) -> bool:
        """Some record holds ``results.<key>``, or its per-batch summary holds ``scalar``."""
        summary = f"/results/batches/summary/{scalar or key}"
        return any(get(d, f"/results/{key}") is not None or get(d, summary) is not None for d in datas)

    def batched_k(d: dict[str, Any]) -> int:
        """How many λ_i a per-batch summary holds (``lambda_1``, ``lambda_2``, ...)."""
        summary = get(d, "/results/batches/summary") or {}
        return max([int(n[7:]) for n in summary if n.startswith("lambda_") and n[7:].isdigit()] + [0])

    k = max(
        [len(get(d, "/results/top_k/eigenvalues") or []) for d in datas]
        + [batched_k(d) for d in datas]
        + [1 if has("lambda_max") else 0]
    )
    cols: list[tuple[str, CellFn]] = [(f"λ{i + 1}", _eigen_column(i)) for i in range(k)]
    for key, (header, err, scalar) in SIMPLE.items():
        if has(key, scalar):
            cols.append((header, _simple(key, err, _note_fn(key, err), scalar)))
    radii = dict.fromkeys((row.get("kind"), row.get("eps")) for d in datas for _, row in _sharpness_rows(d))
    for kind, eps in sorted(radii, key=lambda t: (str(t[0]), sort_key(t[1]))):
        cols.append((f"ε-sharpness ({kind}, ε={fmt(eps)})", _sharpness(kind, eps)))
    sigmas = dict.fromkeys(
        (get(d, "/results/noise/method"), row.get("sigma"))
        for d in datas
        for row in get(d, "/results/noise/curve") or []
    )
    for method, sigma in sorted(sigmas, key=lambda t: (str(t[0]), sort_key(t[1]))):
        aware = "magnitude-aware, " if "magnitude-aware" in str(method) else ""
        cols.append((f"noise loss rise ({aware}σ={fmt(sigma)})", _noise(method, sigma)))
    if has("pac_bayes", "pac_bayes_sigma"):
        cols.append(("PAC-Bayes σ", _pac))
    if has("pac_bayes/bound", "pac_bayes_bound_kl"):
        cols.append(("PAC-Bayes bound", _pac_bound))
    if any(
        get(d, "/results/stability") is not None
        or get(d, "/results/batches/per_batch/0/stability") is not None
        for d in datas
    ):
        cols.append((STABILITY_HEADER, _stability))
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


SPECTRUM = ("trace", "‖H‖_F", "λmin", "condition number", "effective rank", "grad norm")
MAX_COLUMNS = 7  # value columns one table shows; more are split into spectrum and flatness tables


def _is_spectrum(header: str) -> bool:
    return header in SPECTRUM or (header.startswith("λ") and header[1:].isdigit())


def curvature(runs: list[Run], rels: dict[str, str]) -> list[Table]:
    """One row per probe record of the runs given (in their order).

    With more than :data:`MAX_COLUMNS` quantities, two tables with the same rows: the spectrum
    (eigenvalues, trace, norms) and the flatness measures (ε-sharpness, noise, PAC-Bayes, stability), so
    neither needs scrolling sideways.
    """
    pairs = [(run, p) for run in runs for p in run.probes]
    if not pairs:
        return []
    cols = _columns([p for _, p in pairs])
    if (
        len(cols) <= MAX_COLUMNS
        or all(_is_spectrum(h) for h, _ in cols)
        or not any(_is_spectrum(h) for h, _ in cols)
    ):
        parts = [("curvature", "Curvature", cols)]
    else:
        parts = [
            ("curvature", "Curvature: spectrum", [c for c in cols if _is_spectrum(c[0])]),
            (
                "flatness",
                "Curvature: flatness, PAC-Bayes and stability",
                [c for c in cols if not _is_spectrum(c[0])],
            ),
        ]
    return [_table(key, title, part, pairs, rels) for key, title, part in parts]


def _table(
    key: str,
    title: str,
    cols: list[tuple[str, CellFn]],
    pairs: list[tuple[Run, Record]],
    rels: dict[str, str],
) -> Table:
    table = Table(
        key,
        title,
        ["run", "split", *(h for h, _ in cols), "protocol"],
        caption="(−a/+b) after λmax or λmin: below and above the value, a certain from the residual, b the "
        "extreme-eigenvalue certificate; ± after another eigenvalue is its error bound; after a stochastic "
        "estimate, one standard error. Hover a value for its method and budget; the protocol of each row is "
        "its footnote." + (f" {STABILITY_NOTE}." if any(h == STABILITY_HEADER for h, _ in cols) else ""),
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
