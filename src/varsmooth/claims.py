"""The paper's claims as data: each experiment states the claim it tests, and a rule in code gives the verdict.

A verdict is one of :class:`Verdict` -- *agrees*, *disagrees*, or *not testable here* (too few seeds, or the runs
the rule needs are missing). The rules compare per-seed test accuracies (fractions in [0, 1]) of two methods run
on the same seeds, so the difference is paired:

- :func:`outperforms`: "A beats B by at least ``margin``" -- agrees when the mean over seeds of ``A - B`` is
  ``>= margin``; disagrees otherwise. The numbers behind it are the two means, the mean difference, the standard
  deviation of the difference over seeds (its spread) and the seeds.
- :func:`comparable`: "A is level with B" -- agrees when ``|mean(A - B)| <= margin``.
- :func:`spread_at_most`: "over a grid, accuracy varies by at most ``limit``" -- agrees when the range of the
  per-setting means is ``<= limit``.

Every rule needs at least :data:`MIN_SEEDS` paired seeds; fewer gives *not testable here* (the smoke presets).
A claim is a plain dict (``claim``, ``figure``, ``setting``, ``rule``, ``verdict``, ``numbers``) so that it goes
into ``summary.json`` as is, and the report and the README read it from there.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Any

import numpy as np

__all__ = ["MIN_SEEDS", "Verdict", "claim", "comparable", "outperforms", "spread_at_most"]

MIN_SEEDS = 2  # a verdict from one seed has no spread


class Verdict(str, Enum):
    AGREES = "agrees"
    DISAGREES = "disagrees"
    NOT_TESTABLE = "not testable here"


def _paired(a: Mapping[Any, float], b: Mapping[Any, float]) -> tuple[list, np.ndarray, np.ndarray]:
    seeds = [s for s in a if s in b]
    return seeds, np.array([a[s] for s in seeds], dtype=np.float64), np.array([b[s] for s in seeds], dtype=np.float64)


def _diff_numbers(seeds: list, x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    d = x - y
    return {
        "a_mean": float(x.mean()) if x.size else None,
        "b_mean": float(y.mean()) if y.size else None,
        "diff_mean": float(d.mean()) if d.size else None,
        "diff_std": float(d.std(ddof=1)) if d.size > 1 else None,
        "seeds": [str(s) for s in seeds],
    }


def outperforms(a: Mapping[Any, float], b: Mapping[Any, float], *, margin: float = 0.01) -> tuple[Verdict, dict]:
    """Does A beat B by ``>= margin`` (mean over paired seeds of ``a[seed] - b[seed]``)? ``a``, ``b``: {seed: acc}."""
    seeds, x, y = _paired(a, b)
    numbers = {**_diff_numbers(seeds, x, y), "margin": margin}
    if len(seeds) < MIN_SEEDS:
        return Verdict.NOT_TESTABLE, numbers
    return (Verdict.AGREES if numbers["diff_mean"] >= margin else Verdict.DISAGREES), numbers


def comparable(a: Mapping[Any, float], b: Mapping[Any, float], *, margin: float = 0.01) -> tuple[Verdict, dict]:
    """Is A level with B, ``|mean(a - b)| <= margin`` over paired seeds?"""
    seeds, x, y = _paired(a, b)
    numbers = {**_diff_numbers(seeds, x, y), "margin": margin}
    if len(seeds) < MIN_SEEDS:
        return Verdict.NOT_TESTABLE, numbers
    return (Verdict.AGREES if abs(numbers["diff_mean"]) <= margin else Verdict.DISAGREES), numbers


def spread_at_most(by_setting: Mapping[Any, Mapping[Any, float]], *, limit: float) -> tuple[Verdict, dict]:
    """Over settings ``{setting: {seed: acc}}``, is ``max - min`` of the per-setting means ``<= limit``?"""
    means = {str(k): float(np.mean(list(v.values()))) for k, v in by_setting.items() if v}
    n_seeds = min((len(v) for v in by_setting.values()), default=0)
    numbers = {"means": means, "range": (max(means.values()) - min(means.values())) if means else None,
               "limit": limit, "n_seeds": n_seeds}  # fmt: skip
    if n_seeds < MIN_SEEDS or len(means) < 2:
        return Verdict.NOT_TESTABLE, numbers
    return (Verdict.AGREES if numbers["range"] <= limit else Verdict.DISAGREES), numbers


def claim(text: str, figure: str, setting: str, rule: str, result: tuple[Verdict, dict]) -> dict[str, Any]:
    """One claim record for ``summary.json``."""
    verdict, numbers = result
    return {"claim": text, "figure": figure, "setting": setting, "rule": rule, "verdict": verdict.value,
            "numbers": numbers}  # fmt: skip
