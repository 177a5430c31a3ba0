"""Validation of `lscape probe`'s options and its --check expressions."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from lscape_cli.errors import LscapeError

if TYPE_CHECKING:
    from lscape_cli.core.probe.checks import CheckRow


def refs(checks: list[str]) -> set[str]:
    """The quantities the --check expressions name."""
    from lscape_cli.core.probe import checks as chk

    return set().union(*(chk.referenced(e) for e in checks)) if checks else set()


def evaluate(expr: str, scalars: dict[str, float | None], measured: set[str]) -> CheckRow:
    """One --check row evaluated on the measured scalars (a measured name without a value is None)."""
    from lscape_cli.core.probe import checks as chk

    try:
        return chk.evaluate(expr, {**dict.fromkeys(measured), **scalars})
    except chk.CheckError as exc:
        raise LscapeError(str(exc), "--check", "compare finite quantities, e.g. 'lambda_max < 200'") from exc


def check_syntax(expr: str) -> None:
    """Refuse a --check expression that does not parse or names no quantity, before anything runs."""
    from lscape_cli.core.probe import checks as chk
    from lscape_cli.core.probe.engine import CHECK_QUANTITIES, check_source

    try:
        chk.parse(expr)
    except chk.CheckError as exc:
        raise LscapeError(str(exc), "--check", "write a comparison such as 'lambda_max < 200'") from exc
    try:
        chk.require(expr, check_source, CHECK_QUANTITIES)
    except chk.CheckError as exc:
        raise LscapeError(str(exc), "--check", f"the quantities are {', '.join(CHECK_QUANTITIES)}") from exc


def check_measured(checks: list[str], req: Any, y: Any) -> set[str]:
    """The quantities ``req`` measures on targets ``y``; a check naming another is refused before measuring."""
    from lscape_cli.core.objective import task_of
    from lscape_cli.core.probe import checks as chk
    from lscape_cli.core.probe.engine import CHECK_QUANTITIES, check_source, scalar_names

    measured = scalar_names(req, task_of(y) == "regression")
    for expr in checks:
        try:
            chk.require(expr, check_source, CHECK_QUANTITIES, measured)
        except chk.CheckError as exc:
            raise LscapeError(str(exc), "--check", "add that option, or check another quantity") from exc
    return measured


def validate(
    trace_method: str, kind: str, bias: str, metric: str, hvp: str, stop: str, curvature: str
) -> None:
    """Refuse a choice option's unknown value with the option's name (:meth:`ProbeRequest.validate`)."""
    from lscape_cli.core.probe.engine import ProbeRequest

    ProbeRequest(
        trace_method=trace_method,
        sharpness_kind=kind,
        bias=bias,
        pac_bayes_metric=metric,
        hvp_strategy=hvp,
        eig_stop=stop,
        curvature=curvature,
    ).validate()


def validate_power(eig_method: str, top_k: int, lambda_min: bool) -> None:
    """Refuse an unknown --eig-method and power iteration asked for more than lambda_max."""
    from lscape_cli.core import choices as ch

    ch.EigMethod.check(eig_method, "--eig-method")
    if eig_method == "power" and (top_k > 1 or lambda_min):
        raise LscapeError(
            "power iteration gives lambda_max only",
            "--eig-method power",
            "drop --top-k/--lambda-min or use --eig-method lanczos",
        )


def pac_bayes_prior(setup: Any) -> Any:
    """The PAC-Bayes prior centre (:func:`lscape_cli.models.initial.initial_prior`); a zero prior warns."""
    from lscape_cli.cli.console import warn
    from lscape_cli.models.initial import initial_prior

    prior = initial_prior(setup.loaded)
    if prior.warning is not None:
        warn(prior.warning)
        setup.warnings.append(prior.warning)
    return prior


def output_path(
    out: Path | None,
    checkpoint: Path,
    save_eigenvectors: Path | None,
    model_config: Path | None,
    user: Any,
    overwrite: bool,
) -> Path:
    """--out or CKPT.probe.json, refused where it would overwrite an input or the eigenvector file.

    ``user``: the :class:`~lscape_cli.models.user.UserInputs` (the files it names are inputs);
    ``overwrite``: ``--overwrite`` (files lscape did not write may be replaced).
    """
    from lscape_cli.cli.common import default_output
    from lscape_cli.cli.options import user_files
    from lscape_cli.storage.files import allow_overwrite, refuse_overlap

    allow_overwrite(overwrite)
    out_path = out or default_output(checkpoint, "probe.json")
    outputs = [out_path] + ([Path(save_eigenvectors)] if save_eigenvectors is not None else [])
    refuse_overlap(
        outputs,
        [checkpoint, model_config, *user_files(user.model_def, user.data, user.model_args, user.loss_def)],
    )
    return out_path
