"""Keys of the ``lscape.train/1`` record that summarise how a restart ended and what tracking cost.

``results`` gains (documented in docs/formats.md):

- ``stopped_on_budget``: true when the restart stopped because its epoch or step budget ran out
  (``stop_reason`` ``epochs`` or ``max_steps``), not on a convergence rule, patience or divergence.
- ``best_epoch``: with ``--restore-best``, the epoch whose state the checkpoint holds; else null.
- ``tracking`` (null without ``--track``): ``wall_time_s`` (probing all restarts of this process),
  ``share_of_training`` (that over the training wall time, which includes it), ``restart_wall_time_s``
  (this restart's share), ``num_matvecs`` (Hessian-vector products spent on this restart) and
  ``epochs`` (the tracked epochs).
"""

from __future__ import annotations

from typing import Any

BUDGET_REASONS = ("epochs", "max_steps")


def run_summary(res: Any, tracking_s: float, train_s: float) -> dict[str, Any]:
    """``stopped_on_budget``, ``best_epoch`` and ``tracking`` for one restart's ``results``."""
    tracked = [e for e in res.history if "tracked" in e]
    tracking = None
    if tracked:
        tracking = {
            "wall_time_s": tracking_s,
            "share_of_training": tracking_s / train_s if train_s > 0 else None,
            "restart_wall_time_s": res.tracking_s,
            "num_matvecs": sum(int(e["tracking_cost"]["num_matvecs"]) for e in tracked),
            "epochs": [e["epoch"] for e in tracked],
        }
    return {
        "stopped_on_budget": res.stop_reason in BUDGET_REASONS,
        "best_epoch": res.best_epoch,
        "tracking": tracking,
    }
