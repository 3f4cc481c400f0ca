"""The report's tables: seed aggregation and cell formatting, Markdown tables, and the tables that lead with the
answer -- the paper claims gathered from every experiment folder and the pivots of a comparison's selection.

:func:`~varsmooth.metrics.aggregate` (mean and sample std over seeds), :func:`format_value`, :func:`mean_std` and
:func:`markdown_table` are the formatting every table of the package uses (plots aggregate with the same function).
:func:`claim_rows` reads the ``claims`` list each experiment writes into ``summary.json``
(:mod:`varsmooth.experiments.claims`) and returns plain rows (dicts of strings) for :func:`markdown_table` and the
HTML table; :func:`pivot_tables` pivots the ``table`` of a comparison's summary (setting x method, mean ± std over
seeds, the best of each row in bold).
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..metrics import aggregate, as_number


def format_value(value: Any) -> str:
    """A table cell: floats (and float-looking strings) to 4 significant digits, everything else as text."""
    if value is None:
        return ""
    if isinstance(value, bool) or isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, str):
        num = as_number(value)
        looks_float = any(c in value.lower() for c in ".e") and num is not None and not value.isalpha()
        return f"{num:.4g}" if looks_float else value
    if isinstance(value, (list, tuple, dict)):
        text = json.dumps(value, default=str)
        return text if len(text) <= 160 else text[:157] + "..."
    if isinstance(value, np.generic):
        return format_value(value.item())
    return str(value)


def mean_std(mean: float, std: float, n: int) -> str:
    """``"0.9123 ± 0.0041"``: both to the decimals of the std's second significant digit; the mean alone for n = 1."""
    if n <= 1:
        return f"{mean:.4g}"
    if not (math.isfinite(std) and math.isfinite(mean)) or std == 0:
        return f"{mean:.4g} ± {std:.2g}"
    decimals = min(max(1 - math.floor(math.log10(float(f"{std:.2g}"))), 0), 10)  # 2 significant digits of std
    return f"{mean:.{decimals}f} ± {std:.{decimals}f}"


def is_numeric_column(rows: Sequence[Mapping[str, Any]], col: str) -> bool:
    cells = [r.get(col) for r in rows if r.get(col) not in (None, "")]
    return bool(cells) and all(as_number(c) is not None or " ± " in str(c) for c in cells)


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """A GitHub-flavoured Markdown table of ``rows`` (dicts) restricted to ``columns``.

    Cells go through :func:`format_value`; ``|`` in a cell is escaped; numeric columns are right-aligned
    (``---:``). Returns the table with a trailing newline.
    """

    def cell(v: Any) -> str:
        return format_value(v).replace("|", "\\|").replace("\n", " ")

    align = ["---:" if is_numeric_column(rows, c) else "---" for c in columns]
    lines = ["| " + " | ".join(cell(c) for c in columns) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def results_table(
    rows: Sequence[Mapping[str, Any]], *, max_rows: int = 100, over: str = "seed", value: str = "value"
) -> tuple[list[dict], list[str], str | None]:
    """The results table the report shows: ``(rows, columns, note)``.

    With ``over`` and ``value`` columns the rows are aggregated (:func:`aggregate`) into ``mean ± std`` and ``n``
    columns; otherwise they are shown as they are. Tables longer than ``max_rows`` are cut, and ``note`` says so.
    """
    columns = list(dict.fromkeys(k for r in rows for k in r))
    if over in columns and value in columns:
        keys = [c for c in columns if c not in (over, value) and any(r.get(c) not in (None, "") for r in rows)]
        agg = aggregate(rows, over=over, value=value, keys=keys)
        table = [
            {**{k: a[k] for k in keys}, "mean ± std": mean_std(a["mean"], a["std"], a["n"]), "n": a["n"]} for a in agg
        ]
        columns, what = [*keys, "mean ± std", "n"], f"mean ± std over {over} (sample std)"
    else:
        table, what = [dict(r) for r in rows], None
    note = what
    if len(table) > max_rows:
        cut = f"showing the first {max_rows} of {len(table)} rows; the full data is in results.csv"
        note = f"{what}; {cut}" if what else cut
        table = table[:max_rows]
    return table, columns, note



CLAIM_COLUMNS = ("experiment", "figure", "claim", "setting", "verdict", "numbers")


def seeds_needed(numbers: Mapping[str, Any]) -> str:
    """How to get a verdict when a claim saw fewer seeds than its rule needs (``numbers["min_seeds"]``, recorded by
    :mod:`varsmooth.experiments.claims`): ``"a verdict needs >= 2 seeds: --seeds 0 1"``; "" otherwise."""
    need = numbers.get("min_seeds")
    have = len(numbers.get("seeds") or []) if "seeds" in numbers else numbers.get("n_seeds")
    if not isinstance(need, int) or not isinstance(have, int) or have >= need:
        return ""
    return f"a verdict needs >= {need} seeds: --seeds {' '.join(str(s) for s in range(need))}"


def claim_numbers(numbers: Mapping[str, Any]) -> str:
    """The numbers behind a verdict in one line: ``"93.5 vs 95.1, diff -1.6 ± 0.3 points, 3 seed(s)"`` (accuracies
    in percent), or the range of a spread rule; then :func:`seeds_needed` when there were too few seeds."""
    hint = f"; {seeds_needed(numbers)}" if seeds_needed(numbers) else ""
    if isinstance(numbers.get("diff_mean"), int | float):
        text = f"{100 * numbers['a_mean']:.1f} vs {100 * numbers['b_mean']:.1f}, diff {100 * numbers['diff_mean']:+.1f}"
        if isinstance(numbers.get("diff_std"), int | float):
            text += f" ± {100 * numbers['diff_std']:.1f}"
        return text + f" points, {len(numbers.get('seeds', []))} seed(s)" + hint
    if isinstance(numbers.get("range"), int | float):
        limit = f"limit {100 * numbers['limit']:.0f}"
        return f"range {100 * numbers['range']:.1f} points ({limit}), {numbers.get('n_seeds')} seed(s)" + hint
    return hint.removeprefix("; ")


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


def claims_table_html(rows: Sequence[Mapping[str, str]], columns: Sequence[str]) -> str:
    """An HTML table of claim rows (strings) with the verdict cell coloured by its first word."""
    body = "".join(
        "<tr>" + "".join(f"<td class=v-{html.escape(r[c].split()[0])}>{html.escape(r[c])}</td>" if c == "verdict"
                         else f"<td>{html.escape(r[c])}</td>" for c in columns) + "</tr>"
        for r in rows
    )  # fmt: skip
    head = "".join(f"<th>{c}</th>" for c in columns)
    return f'<table class="claims"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def claims_section_html(rows: Sequence[Mapping[str, str]]) -> str:
    """The claims table at the top of the page (empty string when no experiment states a claim)."""
    if not rows:
        return ""
    return (
        '<section id="claims"><h2>Paper claims: verdicts</h2><p class="note">each rule is code '
        "(varsmooth.experiments.claims), paired over seeds; fewer than 2 seeds: not testable here</p>"
        f"{claims_table_html(rows, CLAIM_COLUMNS)}</section>"
    )


# ---------------------------------------------------------------------------------------------------------------
# pivots: setting x method of a comparison's selected runs

# (pivot title, key of the metric in a summary table row (None: the row itself), higher is better)
PIVOT_METRICS = (("test accuracy %", None, True), ("test NLL", "nll", False), ("test ECE", "ece", False))
# what the two selection protocols of a comparison mean (docs/design.md, "Selection protocols")
PROTOCOLS = {
    "paper": "baselines at their best grid value on the test set, IVON at fixed settings",
    "fair": "every method's hyperparameters chosen on a noisy validation split",
}
_ROW_FIELDS = {"protocol", "method", "chosen", "mean", "std", "n", "text", "selected_by", "nll", "ece", "values"}


@dataclass
class Pivot:
    """One pivot table: ``rows`` of ``{column: cell text}``; ``bold[i]``: the columns of row i holding its best
    value; ``means[i]``: ``{method: mean}`` behind the cells."""

    title: str
    columns: list[str]
    rows: list[dict[str, str]] = field(default_factory=list)
    bold: list[set[str]] = field(default_factory=list)
    means: list[dict[str, float]] = field(default_factory=list)


def percent_text(cell: Mapping[str, Any]) -> str:
    """An accuracy cell ``{mean, std, n}`` (fractions) in percent: ``"95.1 ± 0.3"`` (``"95.1"`` for one seed)."""
    text = f"{100 * cell['mean']:.1f}"
    std = cell.get("std")
    if isinstance(std, int | float) and cell.get("n", 1) > 1:
        text += f" ± {100 * std:.1f}"
    return text


def pivot_tables(table: Sequence[Mapping[str, Any]], *, chosen: bool = False) -> list[Pivot]:
    """Pivots of a comparison's summary ``table`` rows (``{setting, protocol, method, chosen, mean, std, n, text,
    nll, ece}``, :func:`varsmooth.experiments.selection.compare_table`): one row per (setting, protocol), one column
    per method, cells ``mean ± std`` over seeds, accuracy in percent (with ``chosen``, followed by the chosen
    hyperparameter: ``95.1 ± 0.1 (alpha=0.5)``); one pivot per metric of :data:`PIVOT_METRICS` present. The best
    mean of each row (max accuracy, min NLL and ECE) is marked in ``bold``. [] for rows of another shape."""
    rows = [r for r in table if isinstance(r, Mapping) and {"protocol", "method", "mean"} <= set(r)]
    if not rows:
        return []
    keys = [k for k in dict.fromkeys(k for r in rows for k in r) if k not in _ROW_FIELDS] + ["protocol"]
    methods = list(dict.fromkeys(str(r["method"]) for r in rows))
    pivots = []
    for title, key, higher in PIVOT_METRICS:
        cells = [(r, r if key is None else r.get(key)) for r in rows]
        cells = [(r, c) for r, c in cells if isinstance(c, Mapping) and isinstance(c.get("mean"), int | float)]
        if not cells:
            continue
        pivot = Pivot(title, [*keys, *methods])
        index: dict[tuple, int] = {}
        for r, c in cells:
            rk = tuple(str(r.get(k, "")) for k in keys)
            if rk not in index:
                index[rk] = len(pivot.rows)
                pivot.rows.append(dict(zip(keys, rk, strict=True)))
                pivot.means.append({})
            i = index[rk]
            text = percent_text(c) if key is None else str(c.get("text") or f"{c['mean']:.4g}")
            if chosen and r.get("chosen") not in (None, "", "-"):
                text += f" ({r['chosen']})"
            pivot.rows[i][str(r["method"])] = text
            pivot.means[i][str(r["method"])] = float(c["mean"])
        for means in pivot.means:
            best = (max if higher else min)(means.values())
            pivot.bold.append({m for m, v in means.items() if v == best})
        pivots.append(pivot)
    return pivots


def pivot_markdown(pivot: Pivot) -> str:
    """A pivot as a Markdown table with the best cell of each row in ``**bold**``."""
    head = ["| " + " | ".join(pivot.columns) + " |", "| " + " | ".join("---" for _ in pivot.columns) + " |"]
    body = [
        "| " + " | ".join(f"**{r.get(c, '')}**" if c in bold else r.get(c, "") for c in pivot.columns) + " |"
        for r, bold in zip(pivot.rows, pivot.bold, strict=True)
    ]
    return f"**{pivot.title}** (mean ± std over seeds; best per row in bold)\n\n" + "\n".join(head + body) + "\n"


def pivot_html(pivot: Pivot) -> str:
    """A pivot as an HTML table with the best cell of each row in ``<b>``."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in pivot.columns)
    body = "".join(
        "<tr>" + "".join(
            f"<td class=num><b>{html.escape(r.get(c, ''))}</b></td>" if c in bold
            else f"<td{' class=num' if c in means else ''}>{html.escape(r.get(c, ''))}</td>" for c in pivot.columns
        ) + "</tr>"
        for r, bold, means in zip(pivot.rows, pivot.bold, pivot.means, strict=True)
    )  # fmt: skip
    return (
        f'<h3>{html.escape(pivot.title)}</h3><table class="pivot"><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table>"
    )
