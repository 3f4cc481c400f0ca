"""Tables of the report that lead with the answer: the paper claims gathered from every experiment folder.

Reads the ``claims`` list each experiment writes into ``summary.json`` (:mod:`varsmooth.claims`) and returns plain
rows (dicts of strings) for :func:`varsmooth.report.markdown_table` and the HTML table.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

CLAIM_COLUMNS = ("experiment", "figure", "claim", "setting", "verdict", "numbers")


def claim_numbers(numbers: Mapping[str, Any]) -> str:
    """The numbers behind a verdict in one line: ``"93.5 vs 95.1, diff -1.6 ± 0.3 points, 3 seeds"`` (accuracies
    in percent), or the range of a spread rule."""
    if isinstance(numbers.get("diff_mean"), int | float):
        text = f"{100 * numbers['a_mean']:.1f} vs {100 * numbers['b_mean']:.1f}, diff {100 * numbers['diff_mean']:+.1f}"
        if isinstance(numbers.get("diff_std"), int | float):
            text += f" ± {100 * numbers['diff_std']:.1f}"
        return text + f" points, {len(numbers.get('seeds', []))} seed(s)"
    if isinstance(numbers.get("range"), int | float):
        limit = f"limit {100 * numbers['limit']:.0f}"
        return f"range {100 * numbers['range']:.1f} points ({limit}), {numbers.get('n_seeds')} seed(s)"
    return ""


def claim_rows(sections: Iterable[tuple[str, Mapping[str, Any]]]) -> list[dict[str, str]]:
    """One row per claim of every ``(experiment title, summary dict)``, in the order given."""
    rows = []
    for title, summary in sections:
        for c in summary.get("claims") or []:
            if isinstance(c, Mapping):
                rows.append({"experiment": title, "figure": str(c.get("figure", "")), "claim": str(c.get("claim", "")),
                             "setting": str(c.get("setting", "")), "verdict": str(c.get("verdict", "")),
                             "numbers": claim_numbers(c.get("numbers") or {})})  # fmt: skip
    return rows
