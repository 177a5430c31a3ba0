"""The loss a model is trained or evaluated with: a built-in named by ``--loss``, or the user's own.

:func:`parse_loss` reads ``--loss`` (``ce``, ``mse``, ``bce`` and their settings, e.g.
``ce:label_smoothing=0.1``). The user's own loss is ``--loss-def PATH.py:FUNC`` or ``--loss-def
package.module:FUNC``: ``FUNC(outputs, targets)`` returns the batch's mean loss as a 0-dim tensor;
lscape takes it as a mean over the batch's samples and weights chunks and batches by their sample count
(:mod:`lscape_cli.core.losses`). The GGN applies the loss's Hessian in the outputs by autograd; the
Monte-Carlo Fisher, which needs the model's predictive distribution, is refused.

Loss code follows the trust rule of model code (:mod:`lscape_cli.models.user`): it is imported only when
the user names it (``--loss-def``) or accepts the one a checkpoint records (``--trust-model-def``). The
record keeps the source, the file and its sha256 (``loss_definition`` in records, ``training.loss_def``
in checkpoints); a file that changed since is reported as a warning.
"""

from __future__ import annotations

from typing import Any

from lscape_cli.core.losses import Loss, LossOrigin
from lscape_cli.errors import LscapeError

WHERE = "--loss-def"


def parse_loss(loss: str) -> Loss:
    """``--loss`` as a :class:`lscape_cli.core.losses.Loss`, or one ``Error:`` line naming it."""
    from lscape_cli.core.losses import parse
    from lscape_cli.core.objective import LOSSES

    try:
        return parse(loss)
    except ValueError as exc:
        what = f"unknown loss {loss!r}" if str(exc).startswith("unknown loss") else str(exc)
        raise LscapeError(
            what, "--loss", f"choose one of: {', '.join(LOSSES)}, e.g. ce:label_smoothing=0.1"
        ) from exc


def load(source: str, notes: list[str], recorded_sha: str | None = None, where: str = WHERE) -> Loss:
    """Import ``source``'s function under the model code's guard and wrap it as a :class:`Loss`."""
    from lscape_cli.models.user import _factory, guard, make_config, parse_source

    src = parse_source(source, where)
    if src.kind == "torchvision":
        raise LscapeError(f"{source!r} is not a loss function", where, "give PATH.py:FUNC or module:FUNC")
    cfg = make_config(source, {}, where)
    if recorded_sha and cfg.sha256 and recorded_sha != cfg.sha256:
        notes.append(
            f"{cfg.file} changed since the checkpoint was written (sha256 {recorded_sha[:12]}... recorded, "
            f"{cfg.sha256[:12]}... now)"
        )
    with guard(source, notes):
        fn = _factory(src, cfg, where)
    origin: LossOrigin = {"source": source, "file": cfg.file, "sha256": cfg.sha256}
    return Loss("user", fn=fn, source=source, origin=origin)


def resolve(
    loss: str | None, loss_def: str | None, recorded: dict[str, Any] | None, trust: bool, notes: list[str]
) -> Loss | None:
    """The user loss to use: named now (``--loss-def``) or recorded and trusted; None: a built-in.

    ``recorded`` is a checkpoint's ``training.loss_def`` (source, file, sha256). A recorded user loss
    is refused unless named again or trusted, as a recorded user model is.
    """
    if loss_def is not None:
        if loss is not None:
            raise LscapeError("--loss and --loss-def both name the loss", f"{loss} vs {loss_def}", "pass one")
        return load(loss_def, notes, (recorded or {}).get("sha256"))
    if loss is not None or not recorded:
        return None
    source = str(recorded.get("source"))
    if not trust:
        raise LscapeError(
            f"the checkpoint was trained with the user loss {source}",
            WHERE,
            f"pass --loss-def {source} to import it, --trust-model-def to import the recorded file, or "
            "--loss ce|mse|bce for a built-in",
        )
    file = recorded.get("file")
    return load(f"{file}:{source.rpartition(':')[2]}" if file else source, notes, recorded.get("sha256"))
