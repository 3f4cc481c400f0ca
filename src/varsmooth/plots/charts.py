"""Histograms, lines and grouped bars."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ..metrics import aggregate
from .base import filter_rows, outside_legend, save_figure, unique


def noise_histogram(
    values_by_method: Mapping[str, Any],
    path: str | os.PathLike,
    *,
    bins: int = 50,
    xlabel: str = "label noise",
    ylabel: str = "examples",
    title: str | None = None,
    logy: bool = False,
) -> Path:
    """Overlaid histograms (shared bins) of per-example values, e.g. label-noise magnitudes, one per method."""
    vals = {k: np.asarray(v, dtype=np.float64).ravel() for k, v in values_by_method.items()}
    allv = np.concatenate([v[np.isfinite(v)] for v in vals.values()]) if vals else np.empty(0)
    if allv.size == 0:
        raise ValueError("noise_histogram needs at least one finite value")
    lo, hi = float(allv.min()), float(allv.max())
    if hi - lo < 1e-12:  # all equal (e.g. LS alone): give the single bar a visible width
        lo, hi = lo - 0.5 * max(abs(lo), 1e-3), hi + 0.5 * max(abs(hi), 1e-3)
    edges = np.linspace(lo, hi, bins + 1)
    fig = Figure(figsize=(5.5, 3.6), layout="constrained")
    ax = fig.subplots()
    for i, (name, v) in enumerate(vals.items()):
        ax.hist(v[np.isfinite(v)], bins=edges, alpha=0.45, color=f"C{i % 10}", label=name)
        ax.hist(v[np.isfinite(v)], bins=edges, histtype="step", color=f"C{i % 10}")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    outside_legend(ax)
    if title:
        ax.set_title(title, fontsize=10)
    return save_figure(fig, path)


def line_plot(
    x: Any,
    ys: Mapping[str, Any],
    path: str | os.PathLike,
    *,
    xlabel: str,
    ylabel: str,
    title: str | None = None,
    logx: bool = False,
    logy: bool = False,
    yerr: Mapping[str, Any] | None = None,
    markers: bool = False,
) -> Path:
    """Lines ``ys[name]`` against ``x`` (shared (n,) array, or ``ys[name] = (x_i, y_i)`` for its own x values);
    ``yerr[name]`` adds error bars."""
    fig = Figure(figsize=(5.5, 3.6), layout="constrained")
    ax = fig.subplots()
    for i, (name, y) in enumerate(ys.items()):
        xi, yi = y if isinstance(y, tuple) else (x, y)
        err = None if yerr is None or name not in yerr else np.asarray(yerr[name], dtype=np.float64)
        ax.errorbar(
            np.asarray(xi, dtype=np.float64),
            np.asarray(yi, dtype=np.float64),
            yerr=err,
            marker="o" if markers else None,
            ms=4,
            capsize=3 if err is not None else 0,
            color=f"C{i % 10}",
            label=str(name),
        )
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if len(ys) > 1:
        outside_legend(ax)
    if title:
        ax.set_title(title, fontsize=10)
    return save_figure(fig, path)


def bar_plot(
    groups: Sequence[Any],
    values: Mapping[str, Sequence[float]],
    path: str | os.PathLike,
    *,
    errors: Mapping[str, Sequence[float]] | None = None,
    xlabel: str = "",
    ylabel: str = "test accuracy",
    title: str | None = None,
) -> Path:
    """Grouped bars: one group per entry of ``groups`` (e.g. kappa values), one bar per series in ``values``
    (``{method: (len(groups),) heights}``), with optional ``errors`` of the same shape (e.g. std over seeds)."""
    n = len(groups)
    for name, v in values.items():
        if len(v) != n:
            raise ValueError(f"bar_plot: series {name!r} has {len(v)} values for {n} groups")
    longest = max((len(str(g)) for g in groups), default=0)  # each group at least as wide as its tick label
    width_in = max(4.5, 0.6 * n * max(1, len(values)) ** 0.5 + 2.5, n * (0.09 * longest + 0.3) + 2.5)
    fig = Figure(figsize=(width_in, 3.6), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / max(1, len(values))
    pos = np.arange(n)
    for j, (name, v) in enumerate(values.items()):
        err = None if errors is None or name not in errors else np.asarray(errors[name], dtype=np.float64)
        ax.bar(
            pos + (j - (len(values) - 1) / 2) * width,
            np.asarray(v, dtype=np.float64),
            width,
            yerr=err,
            capsize=3,
            color=f"C{j % 10}",
            label=str(name),
        )
    ax.set_xticks(pos, [str(g) for g in groups])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    outside_legend(ax)
    if title:
        ax.set_title(title, fontsize=10)
    return save_figure(fig, path)


def bar_plot_rows(
    rows: Sequence[Mapping[str, Any]],
    *,
    group: str,
    path: str | os.PathLike,
    series: str = "method",
    metric: str | None = "test_acc",
    where: Mapping[str, Any] | None = None,
    seed_column: str = "seed",
    value_column: str = "value",
    **options: Any,
) -> Path:
    """:func:`bar_plot` from tidy rows: mean ± std over seeds of ``metric`` per (``group``, ``series``) value.
    A missing (group, series) pair is drawn as a zero-height bar with no error. ``options`` go to bar_plot."""
    rows = filter_rows(rows, metric=metric, **dict(where or {}))
    if not rows:
        raise ValueError(f"bar_plot_rows: no rows (metric={metric!r}, where={dict(where or {})})")
    agg = aggregate(rows, over=seed_column, value=value_column, keys=[group, series])
    groups = unique(str(a[group]) for a in agg)
    names = unique(str(a[series]) for a in agg)
    table = {(str(a[group]), str(a[series])): a for a in agg}
    means = {s: [table[(g, s)]["mean"] if (g, s) in table else 0.0 for g in groups] for s in names}
    stds = {s: [table[(g, s)]["std"] if (g, s) in table else 0.0 for g in groups] for s in names}
    options.setdefault("xlabel", group)
    return bar_plot(groups, means, path, errors=stds, **options)
