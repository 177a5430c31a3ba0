"""Learning-rate schedules and convergence rules of the training engine.

Schedules (``--schedule``), a factor on the base learning rate at optimiser step ``t`` (1-based) of a
budget of ``T`` steps:

- ``constant``: 1.
- ``step:EVERY:GAMMA``: ``GAMMA ** ((epoch - 1) // EVERY)``, the learning rate multiplied by GAMMA every
  EVERY epochs (torch's ``StepLR`` stepped once per epoch).
- ``cosine``: ``(1 + cos(pi (t - 1) / T)) / 2``, from 1 at the first step towards 0 at the budget
  (Loshchilov & Hutter 2017, SGDR, without restarts).
- ``linear-warmup:W+BASE``: ``t / W`` for the first W steps, then BASE (``constant``, ``cosine`` or
  ``step:E:G``), a cosine running over the ``T - W`` steps left (Goyal et al. 2017).

Convergence rules (``--tol-rule``; the record's ``stop_reason`` names the one that fired):

- ``step`` (``stop_reason`` ``tol``): ``|l_e - l_{e-1}| < tol`` between consecutive epochs' training losses
  (with full batch an epoch is one step: seed 000's literal ``|l_t - l_{t-1}| < tol``). One oscillating step
  can fire it while the loss is still falling.
- ``window:K`` (``stop_reason`` ``tol_window``): ``|m_new - m_old| < tol * |m_old|`` where ``m_new`` is the
  mean training loss of the last K epochs and ``m_old`` that of the K before (a relative change of the
  smoothed loss, which an oscillation does not fake).
- ``--grad-tol G`` (``stop_reason`` ``grad_tol``), with either rule: the epoch's mean gradient norm < G.
"""

from __future__ import annotations

import math
import re
from collections import deque
from dataclasses import dataclass

BASES = ("constant", "cosine", "step")
MAX_COUNT = 10**9  # a count in a schedule or rule (epochs, steps, a window) beyond any real budget
_DIGITS = re.compile(r"[0-9]{1,10}")


@dataclass(frozen=True)
class Schedule:
    """A parsed ``--schedule``."""

    kind: str = "constant"  # "constant", "cosine" or "step"
    warmup: int = 0  # linear warm-up steps before ``kind`` starts
    every: int = 1  # step: epochs between decays
    gamma: float = 1.0  # step: decay factor

    def factor(self, t: int, epoch: int, total: int) -> float:
        """Multiplier of the base learning rate at step ``t`` (1-based) of epoch ``epoch`` (1-based)."""
        if t <= self.warmup:
            return t / self.warmup
        if self.kind == "step":
            return self.gamma ** ((epoch - 1) // self.every)
        if self.kind == "cosine":
            span = max(1, total - self.warmup)
            return 0.5 * (1.0 + math.cos(math.pi * min(t - 1 - self.warmup, span) / span))
        return 1.0


def _count(text: str) -> int | None:
    """``text`` as a count 1..:data:`MAX_COUNT` written in ASCII digits, else None."""
    if not _DIGITS.fullmatch(text) or not 1 <= int(text) <= MAX_COUNT:
        return None
    return int(text)


def _base(text: str) -> Schedule:
    kind, _, rest = text.partition(":")
    if kind in ("constant", "cosine") and not rest:
        return Schedule(kind)
    if kind == "step":
        every, _, gamma = rest.partition(":")
        try:
            g = float(gamma)
        except ValueError:
            g = math.nan
        e = _count(every)
        if e is None or not (math.isfinite(g) and g > 0):
            raise ValueError(
                f"invalid schedule {text!r}: step:EVERY:GAMMA needs EVERY a count of epochs (1 to "
                f"{MAX_COUNT}) and GAMMA a finite factor > 0, e.g. step:30:0.1"
            )
        return Schedule("step", every=e, gamma=g)
    raise ValueError(f"unknown schedule {text!r}")


def parse_schedule(text: str) -> Schedule:
    """``constant``, ``cosine``, ``step:EVERY:GAMMA`` or ``linear-warmup:STEPS+BASE``."""
    if not text.startswith("linear-warmup:"):
        return _base(text)
    head, plus, base = text.partition("+")
    steps = _count(head.removeprefix("linear-warmup:"))
    if not plus or steps is None:
        raise ValueError(
            f"invalid schedule {text!r}: linear-warmup:STEPS+BASE needs STEPS a count of steps (1 to "
            f"{MAX_COUNT}), e.g. linear-warmup:100+cosine"
        )
    b = _base(base)
    return Schedule(b.kind, warmup=steps, every=b.every, gamma=b.gamma)


@dataclass(frozen=True)
class TolRule:
    """A parsed ``--tol-rule``: ``step`` or ``window:K``."""

    window: int = 0  # 0: the step rule

    @property
    def reason(self) -> str:
        """The ``stop_reason`` this rule records."""
        return "tol_window" if self.window else "tol"


def parse_tol_rule(text: str) -> TolRule:
    """``step`` or ``window:K`` (K from 1 to :data:`MAX_COUNT`)."""
    if text == "step":
        return TolRule()
    kind, _, k = text.partition(":")
    window = _count(k) if kind == "window" else None
    if window is None:
        raise ValueError(
            f"unknown tolerance rule {text!r}: use step or window:K with K a count of epochs (1 to "
            f"{MAX_COUNT}), e.g. window:5"
        )
    return TolRule(window)


class LossWindow:
    """The training losses one restart's tolerance rule looks at."""

    def __init__(self, rule: TolRule) -> None:
        self.rule = rule
        self.losses: deque[float] = deque(maxlen=max(2, 2 * rule.window))

    def push(self, loss: float, tol: float) -> bool:
        """Add this epoch's loss; True when the rule says the run has converged."""
        self.losses.append(loss)
        k = self.rule.window
        if not k:
            return len(self.losses) >= 2 and abs(self.losses[-1] - self.losses[-2]) < tol
        if len(self.losses) < 2 * k:
            return False
        vals = list(self.losses)
        old, new = sum(vals[:k]) / k, sum(vals[k:]) / k
        return abs(new - old) < tol * abs(old)
