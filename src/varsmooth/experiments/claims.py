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

Every rule needs at least :data:`MIN_SEEDS` paired seeds (recorded as ``numbers["min_seeds"]``); fewer gives *not
testable here* (the smoke presets), and the report says how many seeds a verdict needs.
A claim is a plain dict (``claim``, ``figure``, ``setting``, ``rule``, ``verdict``, ``numbers``) so that it goes
into ``summary.json`` as is, and the report and the README read it from there.

Each comparison experiment states the claims it tests as ``summary.json["claims"]`` entries: the functions at the
end of this module (:func:`comparison_claims`, :func:`fixed_hessian_claims`, :func:`hessian_init_claims`) take what
the experiment already selected (per-seed test accuracies, ``{seed: acc}``) and return :func:`claim` dicts whose
``numbers`` also hold ``chosen`` (the hyperparameters of both sides) and ``rows`` (the ``results.csv`` columns that
pick each side's runs), so a reader can recompute the verdict from ``results.csv``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import Enum
from typing import Any

import numpy as np

from .selection import select

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
    numbers = {**_diff_numbers(seeds, x, y), "margin": margin, "min_seeds": MIN_SEEDS}
    if len(seeds) < MIN_SEEDS:
        return Verdict.NOT_TESTABLE, numbers
    return (Verdict.AGREES if numbers["diff_mean"] >= margin else Verdict.DISAGREES), numbers


def comparable(a: Mapping[Any, float], b: Mapping[Any, float], *, margin: float = 0.01) -> tuple[Verdict, dict]:
    """Is A level with B, ``|mean(a - b)| <= margin`` over paired seeds?"""
    seeds, x, y = _paired(a, b)
    numbers = {**_diff_numbers(seeds, x, y), "margin": margin, "min_seeds": MIN_SEEDS}
    if len(seeds) < MIN_SEEDS:
        return Verdict.NOT_TESTABLE, numbers
    return (Verdict.AGREES if abs(numbers["diff_mean"]) <= margin else Verdict.DISAGREES), numbers


def spread_at_most(by_setting: Mapping[Any, Mapping[Any, float]], *, limit: float) -> tuple[Verdict, dict]:
    """Over settings ``{setting: {seed: acc}}``, is ``max - min`` of the per-setting means ``<= limit``?"""
    means = {str(k): float(np.mean(list(v.values()))) for k, v in by_setting.items() if v}
    n_seeds = min((len(v) for v in by_setting.values()), default=0)
    numbers = {"means": means, "range": (max(means.values()) - min(means.values())) if means else None,
               "limit": limit, "n_seeds": n_seeds, "min_seeds": MIN_SEEDS}  # fmt: skip
    if n_seeds < MIN_SEEDS or len(means) < 2:
        return Verdict.NOT_TESTABLE, numbers
    return (Verdict.AGREES if numbers["range"] <= limit else Verdict.DISAGREES), numbers


def claim(text: str, figure: str, setting: str, rule: str, result: tuple[Verdict, dict]) -> dict[str, Any]:
    """One claim record for ``summary.json``."""
    verdict, numbers = result
    return {"claim": text, "figure": figure, "setting": setting, "rule": rule, "verdict": verdict.value,
            "numbers": numbers}  # fmt: skip


MARGIN = 0.01  # one point of accuracy
OUTPERFORMS_RULE = "outperforms(a, b, margin=0.01): mean over paired seeds of test_acc(a) - test_acc(b) >= 0.01"
COMPARABLE_RULE = "comparable(a, b, margin=0.01): |mean over paired seeds of test_acc(a) - test_acc(b)| <= 0.01"


def _with(c: dict[str, Any], **numbers: Any) -> dict[str, Any]:
    c["numbers"].update(numbers)
    return c


def _hp(chosen: str | Mapping[str, Any]) -> dict[str, Any]:
    """Hyperparameters as a dict, from a dict (a table row's ``hp``) or its text ``"alpha=0.1, h0=0.5"`` (``"-"``:
    none; a part without ``=`` names a setting and is skipped)."""
    if isinstance(chosen, Mapping):
        return dict(chosen)
    return dict(part.split("=", 1) for part in str(chosen).split(", ") if "=" in part)


def comparison_claims(
    table: Sequence[Mapping[str, Any]], *, setting: str, figure: str, sam_figure: str | None = None
) -> list[dict[str, Any]]:
    """ "IVON outperforms the best LS" and "IVON is comparable to the best SAM", per ``setting`` value and protocol.

    ``table``: :func:`.selection.compare_table` rows (``setting``, ``protocol``, ``method``, ``chosen``, ``values``).
    IVON is its mean (``"IVON (mean)"``): the paper protocol's fixed setting, or the fair protocol's selection.
    """
    rows = {(str(r[setting]), r["protocol"], r["method"]): r for r in table}
    out = []
    for value, protocol in dict.fromkeys((str(r[setting]), r["protocol"]) for r in table):
        ivon = rows.get((value, protocol, "IVON (mean)"))
        if ivon is None:
            continue
        where = f"{setting}={value}, {protocol} protocol"
        for label, text, rule, fn, fig in (
            ("best LS", "IVON outperforms the best Label Smoothing", OUTPERFORMS_RULE, outperforms, figure),
            ("best SAM", "IVON is comparable to the best SAM", COMPARABLE_RULE, comparable, sam_figure or figure),
        ):
            other = rows.get((value, protocol, label))
            if other is None:
                continue
            c = claim(text, fig, where, rule.replace("(a, b", f"(IVON (mean), {label}"),
                      fn(ivon["values"], other["values"], margin=MARGIN))  # fmt: skip
            method = {"best LS": "ls", "best SAM": "sam"}[label]
            # rows: the results.csv columns that pick each side's runs (one per seed), to recompute the verdict
            sides = {"a": {"method": "ivon", setting: value, **_hp(ivon.get("hp", ivon["chosen"]))},
                     "b": {"method": method, setting: value, **_hp(other.get("hp", other["chosen"]))}}  # fmt: skip
            out.append(_with(c, chosen={"a": ivon["chosen"], "b": other["chosen"]}, protocol=protocol, rows=sides))
    return out


def _column(recs: Sequence[Mapping[str, Any]]) -> str:
    """The corruption column of the records ("corruption", or "noise" in folders written before the rename)."""
    return "corruption" if recs and "corruption" in recs[0] else "noise"


def fixed_hessian_claims(recs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """ "learned h outperforms fixed h" (Fig. 6) per (corruption, ess factor): IVON (``ivon``) against IVON with h
    fixed (``ivon-fixed-h``), each at the h0 with the best mean validation accuracy. ``recs``: the runs' records."""
    col, out = _column(recs), []
    for corruption, ess_factor in dict.fromkeys((r[col], r["ess_factor"]) for r in recs):
        here = [r for r in recs if r[col] == corruption and r["ess_factor"] == ess_factor]
        learned, fixed = (select([r for r in here if r["method"] == m], hp=("h0",), report="test_acc", by="val_acc")
                          for m in ("ivon", "ivon-fixed-h"))  # fmt: skip
        if learned is None or fixed is None:
            continue
        c = claim("IVON with a learned Hessian outperforms IVON with a fixed one (beta2 = 1)", "Fig. 6",
                  f"{corruption}, ess {ess_factor}, h0 chosen on validation",
                  OUTPERFORMS_RULE.replace("(a, b", "(learned h, best fixed h"),
                  outperforms(learned["values"], fixed["values"], margin=MARGIN))  # fmt: skip
        sides = {side: {"method": m, col: corruption, "ess_factor": ess_factor, **sel["chosen"]}
                 for side, m, sel in (("a", "ivon", learned), ("b", "ivon-fixed-h", fixed))}  # fmt: skip
        out.append(_with(c, chosen={"a": learned["chosen"], "b": fixed["chosen"]}, rows=sides))
    return out


def hessian_init_claims(
    recs: Sequence[Mapping[str, Any]], *, h0_from: float, limit: float = 0.10
) -> list[dict[str, Any]]:
    """ "accuracy varies by at most ``limit`` for h0 >= ``h0_from``" (Fig. 10) per (corruption, ess factor), from the
    IVON runs' ``test_acc`` (mean over seeds per h0)."""
    col, out = _column(recs), []
    for corruption, ess_factor in dict.fromkeys((r[col], r["ess_factor"]) for r in recs):
        grid: dict[float, dict[int, float]] = {}
        for r in recs:
            if r[col] == corruption and r["ess_factor"] == ess_factor and float(r["h0"]) >= h0_from and "test_acc" in r:
                grid.setdefault(float(r["h0"]), {})[int(r["seed"])] = float(r["test_acc"])
        c = claim(f"IVON's accuracy varies by at most {100 * limit:.0f} points for h0 >= {h0_from:g}", "Fig. 10",
                  f"{corruption}, ess {ess_factor}",
                  f"spread_at_most(limit={limit:g}): max - min over h0 >= {h0_from:g} of the mean over seeds of "
                  "test_acc <= limit", spread_at_most(grid, limit=limit))  # fmt: skip
        out.append(
            _with(c, rows={"all": {"method": "ivon", col: corruption, "ess_factor": ess_factor}}, h0_from=h0_from)
        )
    return out
