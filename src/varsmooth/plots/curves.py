"""Accuracy against a baseline's hyperparameter with IVON as bands (paper Fig. 5, 8, 9, 10)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from ..metrics import aggregate
from .base import figure_legend, filter_rows, save_figure, unique


def accuracy_vs_hyperparameter_figure(
    rows: Sequence[Mapping[str, Any]],
    *,
    x: str | Mapping[str, str],
    baseline_methods: Sequence[str],
    band_methods: Sequence[str] = (),
    metric: str | None = "test_acc",
    panel: str | None = "noise",
    band_by: Sequence[str] = (),
    where: Mapping[str, Any] | None = None,
    xlabels: Mapping[str, str] | None = None,
    ylabel: str = "test accuracy",
    title: str | None = None,
    logx: bool = False,
    method_column: str = "method",
    seed_column: str = "seed",
    value_column: str = "value",
) -> Figure:
    """Mean ± std over seeds of ``metric`` against a hyperparameter; see :func:`accuracy_vs_hyperparameter`."""
    if metric is not None and rows and "metric" not in rows[0]:
        raise ValueError("rows have no 'metric' column; pass metric=None")
    rows = filter_rows(rows, metric=metric, **dict(where or {}))
    x_of = dict(x) if isinstance(x, Mapping) else {m: x for m in baseline_methods}
    missing = [m for m in baseline_methods if m not in x_of]
    if missing:
        raise ValueError(f"no x column given for baseline methods {missing}")
    # One row of panels per distinct x column (LS alpha on top, SAM rho below, as in Fig. 5); one column per panel.
    groups = {
        col: [m for m in baseline_methods if x_of[m] == col] for col in unique(x_of[m] for m in baseline_methods)
    }
    if not rows:
        raise ValueError(f"no rows to plot (metric={metric!r}, where={dict(where or {})})")
    panels = unique(str(r[panel]) for r in rows) if panel and panel in rows[0] else [None]
    colors = {m: f"C{i % 10}" for i, m in enumerate(baseline_methods)}
    # bands are fixed across panels so each keeps its colour; empty band_by cells (e.g. ess of ERM) are not named
    bands = [(b, k) for b in band_methods for k in _band_keys(rows, b, band_by, method_column)]
    band_style = {}
    for bi, (b, k) in enumerate(bands):
        name = ", ".join(f"{c}={v}" for c, v in zip(band_by, k, strict=True) if v not in ("", "None"))
        band_style[(b, k)] = (f"C{(len(baseline_methods) + bi) % 10}", f"{b} ({name})" if name else str(b))
    fig = Figure(figsize=(4.2 * len(panels), 3.3 * len(groups)), layout="constrained")
    axes = fig.subplots(len(groups), len(panels), squeeze=False)
    for gi, (col, methods) in enumerate(groups.items()):
        for pi, pval in enumerate(panels):
            ax = axes[gi, pi]
            prow = [r for r in rows if pval is None or str(r.get(panel)) == pval]
            for m in methods:
                mrows = [r for r in prow if str(r.get(method_column)) == str(m) and str(r.get(col, "")) != ""]
                if not mrows:
                    continue
                agg = aggregate(mrows, over=seed_column, value=value_column, keys=[col])
                agg.sort(key=lambda a: float(a[col]))
                xs = [float(a[col]) for a in agg]
                ax.errorbar(
                    xs,
                    [a["mean"] for a in agg],
                    yerr=[a["std"] for a in agg],
                    marker="o",
                    ms=4,
                    capsize=3,
                    color=colors[m],
                    label=str(m),
                )
            for m, key in bands:
                brows = [
                    r
                    for r in prow
                    if str(r.get(method_column)) == str(m)
                    and all(str(r.get(c)) == v for c, v in zip(band_by, key, strict=True))
                ]
                agg = aggregate(brows, over=seed_column, value=value_column, keys=[])
                if not agg:
                    continue
                one = agg[0]
                color, label = band_style[(m, key)]
                ax.axhspan(one["mean"] - one["std"], one["mean"] + one["std"], color=color, alpha=0.18, lw=0)
                ax.axhline(one["mean"], color=color, ls="--", lw=1.5, label=label)
            if logx:
                ax.set_xscale("log")
            ax.set_xlabel((xlabels or {}).get(col, col))
            if pi == 0:
                ax.set_ylabel(ylabel)
            if pval is not None:
                ax.set_title(f"{panel} = {pval}", fontsize=10)
            ax.grid(alpha=0.3)
    figure_legend(fig)
    if title:
        fig.suptitle(title)
    return fig


def _band_keys(rows, method, band_by, method_column) -> list[tuple[str, ...]]:
    return unique(tuple(str(r.get(c)) for c in band_by) for r in rows if str(r.get(method_column)) == str(method))


def accuracy_vs_hyperparameter(
    rows: Sequence[Mapping[str, Any]],
    *,
    x: str | Mapping[str, str],
    baseline_methods: Sequence[str],
    band_methods: Sequence[str] = (),
    path: str | os.PathLike,
    **options: Any,
) -> Path:
    """Test accuracy against each baseline's hyperparameter, with IVON (and other ``band_methods``) as bands.

    ``rows``: tidy results, dicts with ``method``, ``seed``, ``metric``, ``value`` and the hyperparameter columns.
    ``x``: the hyperparameter column, one for all baselines (``"alpha"``) or per method
    (``{"ls": "alpha", "sam": "rho"}``: one row of panels per column, as in the paper's Fig. 5).
    Baselines are lines with error bars (mean ± std over seeds at each x value); each band method is a horizontal
    dashed line at its mean with a shaded ± std band. One panel per value of ``panel`` (default ``"noise"``).
    Options (keyword): ``metric`` ("test_acc"; None uses every row), ``panel`` ("noise"; None for one panel),
    ``band_by`` (columns that split a band method into several bands, e.g. ``("ess",)``), ``where`` (extra
    ``{column: value or list}`` row filter), ``xlabels`` ({column: label}), ``ylabel``, ``title``, ``logx``,
    ``method_column``, ``seed_column``, ``value_column``.
    """
    fig = accuracy_vs_hyperparameter_figure(
        rows, x=x, baseline_methods=baseline_methods, band_methods=band_methods, **options
    )
    return save_figure(fig, path)
