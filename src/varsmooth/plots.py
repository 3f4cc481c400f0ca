"""Shared matplotlib plots for the experiments: each writes one PNG atomically and returns its path.

Figures are built with :class:`matplotlib.figure.Figure` directly (Agg canvas, no pyplot), so plotting never
touches global pyplot state or the user's backend and is safe in worker processes. Every plot function has the
form ``f(data..., path, *, labels...) -> Path``; the figure builders ``*_figure`` return the
:class:`~matplotlib.figure.Figure` instead, for callers that want to adjust it before :func:`save_figure`.

Tidy ``rows`` (as in ``results.csv``: one dict per run and metric, values may be strings read back from CSV) are
aggregated over seeds with :func:`varsmooth.report.aggregate` (mean and sample standard deviation, ddof=1).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from .io import atomic_open
from .report import aggregate

DPI = 120
PanelSize = tuple[float, float]


def save_figure(fig: Figure, path: str | os.PathLike, *, dpi: int = DPI) -> Path:
    """Write ``fig`` as PNG to ``path`` atomically and return the path."""
    path = Path(path)
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=dpi, bbox_inches="tight")
    return path


def _filter(rows: Sequence[Mapping[str, Any]], **where: Any) -> list[Mapping[str, Any]]:
    """Rows whose columns equal the given values (compared as strings, so CSV rows and Python rows both work)."""
    keep = {
        k: {str(v) for v in (vals if isinstance(vals, (list, tuple, set)) else [vals])}
        for k, vals in where.items()
        if vals is not None
    }
    return [r for r in rows if all(str(r.get(k)) in vals for k, vals in keep.items())]


def _unique(values) -> list:
    return list(dict.fromkeys(values))


def _grid(n: int, ncols: int, panel: PanelSize, *, sharey: bool = False) -> tuple[Figure, list]:
    """A figure with ``n`` panels on a grid ``ncols`` wide; unused cells are removed, so len(fig.axes) == n."""
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    fig = Figure(figsize=(panel[0] * ncols, panel[1] * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=sharey).ravel()
    for ax in axes[n:]:
        fig.delaxes(ax)
    return fig, list(axes[:n])


# ---------------------------------------------------------------------------------------------------------------
# accuracy vs a baseline's hyperparameter (paper Fig. 5, 8, 9, 10)


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
    rows = _filter(rows, metric=metric, **dict(where or {}))
    x_of = dict(x) if isinstance(x, Mapping) else {m: x for m in baseline_methods}
    missing = [m for m in baseline_methods if m not in x_of]
    if missing:
        raise ValueError(f"no x column given for baseline methods {missing}")
    # One row of panels per distinct x column (LS alpha on top, SAM rho below, as in Fig. 5); one column per panel.
    groups = {
        col: [m for m in baseline_methods if x_of[m] == col] for col in _unique(x_of[m] for m in baseline_methods)
    }
    if not rows:
        raise ValueError(f"no rows to plot (metric={metric!r}, where={dict(where or {})})")
    panels = _unique(str(r[panel]) for r in rows) if panel and panel in rows[0] else [None]
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
    _figure_legend(fig)
    if title:
        fig.suptitle(title)
    return fig


def _figure_legend(fig: Figure) -> None:
    """One legend for the whole figure, right of the panels, with each label once."""
    seen: dict[str, Any] = {}
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(label, handle)
    if seen:
        fig.legend(list(seen.values()), list(seen), loc="outside right upper", fontsize=8)


def _outside_legend(ax) -> None:
    """The axes' legend right of its plot area, so it never covers data (bars, lines, histograms)."""
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)


def _band_keys(rows, method, band_by, method_column) -> list[tuple[str, ...]]:
    return _unique(tuple(str(r.get(c)) for c in band_by) for r in rows if str(r.get(method_column)) == str(method))


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


# ---------------------------------------------------------------------------------------------------------------
# image grid (paper Fig. 1, 3)


def _as_hw_images(images: Any) -> tuple[np.ndarray, bool]:
    """(N, H, W) or (N, C, H, W) / (N, H, W, C) -> (N, H, W) grayscale or (N, H, W, 3) RGB scaled to [0, 1]."""
    arr = np.asarray(images.detach().cpu() if hasattr(images, "detach") else images, dtype=np.float64)
    if arr.ndim == 4 and arr.shape[1] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = arr.transpose(0, 2, 3, 1)
    if arr.ndim == 4 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3:
        return arr, False
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"images must be (N, H, W) or (N, C, H, W) with C in (1, 3), got shape {arr.shape}")
    lo = arr.min(axis=(1, 2, 3), keepdims=True)
    hi = arr.max(axis=(1, 2, 3), keepdims=True)
    return (arr - lo) / np.where(hi > lo, hi - lo, 1.0), True  # normalised features -> displayable [0, 1]


def image_grid_figure(
    images: Any,
    values: Sequence[float],
    *,
    ncols: int = 8,
    title: str | None = None,
    labels: Sequence[str] | None = None,
    value_name: str = "",
    cmap: str = "gray",
) -> Figure:
    """One panel per image with ``value`` (3 decimals) and optional ``labels[i]`` beneath it; see :func:`image_grid`."""
    imgs, rgb = _as_hw_images(images)
    n = len(imgs)
    if len(values) != n or (labels is not None and len(labels) != n):
        raise ValueError(
            f"need one value (and label) per image: {n} images, {len(values)} values"
            + ("" if labels is None else f", {len(labels)} labels")
        )
    if n == 0:
        raise ValueError("image_grid needs at least one image")
    fig, axes = _grid(n, ncols, (1.35, 1.65))
    for i, ax in enumerate(axes):
        ax.imshow(imgs[i], cmap=None if rgb else cmap, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        text = f"{value_name}{' ' if value_name else ''}{float(values[i]):.3f}"
        ax.set_xlabel(text if labels is None else f"{labels[i]}\n{text}", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def image_grid(
    images: Any,
    values: Sequence[float],
    path: str | os.PathLike,
    *,
    ncols: int = 8,
    title: str | None = None,
    labels: Sequence[str] | None = None,
    **options: Any,
) -> Path:
    """Images in a grid ``ncols`` wide with each one's value (e.g. its label noise, 3 decimals) underneath.

    ``images``: array or tensor (N, H, W) grayscale, or (N, C, H, W) with C = 1 or 3 (RGB is min-max scaled per
    image for display); ``values``: (N,); ``labels``: optional N strings shown above the value (e.g. "label 6").
    Options: ``value_name`` (prefix of the value text), ``cmap`` (grayscale colour map).
    """
    return save_figure(image_grid_figure(images, values, ncols=ncols, title=title, labels=labels, **options), path)


# ---------------------------------------------------------------------------------------------------------------
# class-averaged smoothed labels (paper Fig. 4)


def smoothed_label_bars_figure(
    matrices: Mapping[str, Any],
    *,
    classes: Sequence[int] | None = None,
    class_names: Sequence[str] | None = None,
    ncols: int = 5,
    floor: float = 1e-6,
    title: str | None = None,
) -> Figure:
    """One panel per true class; see :func:`smoothed_label_bars`."""
    mats = {name: np.asarray(m, dtype=np.float64) for name, m in matrices.items()}
    shapes = {m.shape for m in mats.values()}
    if not mats or len(shapes) != 1 or len(next(iter(shapes))) != 2 or len(set(next(iter(shapes)))) != 1:
        raise ValueError(f"need one or more (K, K) matrices of the same shape, got shapes {sorted(shapes)}")
    k = next(iter(shapes))[0]
    classes = list(range(min(k, 10)) if classes is None else classes)
    names = list(class_names) if class_names is not None else [str(c) for c in range(k)]
    fig, axes = _grid(len(classes), ncols, (3.0, 2.4), sharey=True)
    width = 0.8 / len(mats)
    pos = np.arange(len(classes))
    for ax, c in zip(axes, classes, strict=True):
        for j, (name, m) in enumerate(mats.items()):
            # log axis: exact zeros (e.g. an OLS class never predicted) are drawn at `floor`
            ax.bar(
                pos + (j - (len(mats) - 1) / 2) * width,
                np.maximum(m[c, classes], floor),
                width,
                color=f"C{j % 10}",
                label=name,
            )
        ax.set_yscale("log")
        ax.set_title(f"class {names[c]}", fontsize=9)
        ax.set_xticks(pos, [names[i] for i in classes], fontsize=7, rotation=90 if len(classes) > 10 else 0)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("smoothed label")
    _figure_legend(fig)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def smoothed_label_bars(
    matrices: Mapping[str, Any],
    path: str | os.PathLike,
    *,
    classes: Sequence[int] | None = None,
    **options: Any,
) -> Path:
    """Class-averaged smoothed labels of several methods as grouped bars on a log y axis (paper Fig. 4).

    ``matrices``: ``{method: (K, K) array}`` where row c is the average smoothed label vector of training examples
    of class c. One panel per class in ``classes`` (default the first min(K, 10)); in each panel, one group of bars
    per label index (restricted to ``classes``), one bar per method. Options: ``class_names`` (K strings),
    ``ncols`` (5), ``floor`` (1e-6: zeros are drawn at this height), ``title``.
    """
    return save_figure(smoothed_label_bars_figure(matrices, classes=classes, **options), path)


# ---------------------------------------------------------------------------------------------------------------
# histograms, lines, bars


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
    _outside_legend(ax)
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
        _outside_legend(ax)
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
    fig = Figure(figsize=(max(4.5, 0.6 * n * max(1, len(values)) ** 0.5 + 2.5), 3.6), layout="constrained")
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
    _outside_legend(ax)
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
    rows = _filter(rows, metric=metric, **dict(where or {}))
    if not rows:
        raise ValueError(f"bar_plot_rows: no rows (metric={metric!r}, where={dict(where or {})})")
    agg = aggregate(rows, over=seed_column, value=value_column, keys=[group, series])
    groups = _unique(str(a[group]) for a in agg)
    names = _unique(str(a[series]) for a in agg)
    table = {(str(a[group]), str(a[series])): a for a in agg}
    means = {s: [table[(g, s)]["mean"] if (g, s) in table else 0.0 for g in groups] for s in names}
    stds = {s: [table[(g, s)]["std"] if (g, s) in table else 0.0 for g in groups] for s in names}
    options.setdefault("xlabel", group)
    return bar_plot(groups, means, path, errors=stds, **options)
