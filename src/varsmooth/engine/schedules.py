"""Learning-rate schedules of the paper (App. C.2), as pure functions of the position in training.

- ``step``: SGD step decay, ``lr * gamma ** (number of milestones <= epoch)``; the paper's baselines (ERM, LS, OLS,
  SAM) use lr 0.05 with gamma = 0.1 at epochs 100 and 150 of 200 (``milestones`` are 0-based epoch indices at
  which the decay takes effect, i.e. ``torch.optim.lr_scheduler.MultiStepLR`` stepped once per epoch).
- ``cosine``: linear warm-up over ``warmup_epochs`` then cosine annealing to 0 at the end of the schedule; the
  paper's IVON uses 5 warm-up epochs of 200. With ``unit="step"`` (default) the factor changes every optimizer
  step, the warm-up rising as ``(s + 1) / W`` over the first ``W = round(warmup_epochs * steps_per_epoch)`` steps
  and the cosine being ``0.5 (1 + cos(pi (s - W) / (T - W)))`` over the remaining steps; with ``unit="epoch"``
  the same formulas run over epochs (the factor is constant within an epoch).
- ``constant``: factor 1.

Because the factor is a pure function of ``(epoch, step)``, resuming needs no scheduler state beyond the position.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from enum import Enum

from ..errors import InputError


class Schedule(str, Enum):
    STEP = "step"
    COSINE = "cosine"
    CONSTANT = "constant"


class ScheduleUnit(str, Enum):
    STEP = "step"
    EPOCH = "epoch"


def parse_schedule(name: str) -> Schedule:
    try:
        return Schedule(name)
    except ValueError:
        raise InputError(f"unknown schedule {name!r}; allowed: {', '.join(s.value for s in Schedule)}") from None


def lr_factor(
    schedule: str,
    *,
    epoch: int,
    step: int,
    steps_per_epoch: int,
    total_epochs: int,
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
    warmup_epochs: float = 0.0,
    unit: str = "step",
) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based) of epoch ``epoch`` (0-based)."""
    kind = parse_schedule(schedule)
    if kind is Schedule.CONSTANT:
        return 1.0
    if kind is Schedule.STEP:
        return float(gamma ** sum(1 for m in milestones if epoch >= m))
    if ScheduleUnit(unit) is ScheduleUnit.STEP:
        pos, total, warm = (
            epoch * steps_per_epoch + step,
            total_epochs * steps_per_epoch,
            warmup_epochs * steps_per_epoch,
        )
    else:
        pos, total, warm = epoch, total_epochs, warmup_epochs
    warm = int(round(warm))
    if pos < warm:
        return (pos + 1) / warm
    span = max(total - warm, 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(pos - warm, span) / span))
