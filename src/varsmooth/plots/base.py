"""Shared pieces of the plot functions: atomic PNG writing, row filtering, panel grids, legends."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from ..io import atomic_open

DPI = 120
PanelSize = tuple[float, float]


def save_figure(fig: Figure, path: str | os.PathLike, *, dpi: int = DPI) -> Path:
    """Write ``fig`` as PNG to ``path`` atomically and return the path."""
    path = Path(path)
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=dpi, bbox_inches="tight")
    return path


def filter_rows(rows: Sequence[Mapping[str, Any]], **where: Any) -> list[Mapping[str, Any]]:
    """Rows whose columns equal the given values (compared as strings, so CSV rows and Python rows both work)."""
    keep = {
        k: {str(v) for v in (vals if isinstance(vals, (list, tuple, set)) else [vals])}
        for k, vals in where.items()
        if vals is not None
    }
    return [r for r in rows if all(str(r.get(k)) in vals for k, vals in keep.items())]


def unique(values) -> list:
    return list(dict.fromkeys(values))


def panel_grid(n: int, ncols: int, panel: PanelSize, *, sharey: bool = False) -> tuple[Figure, list]:
    """A figure with ``n`` panels on a grid ``ncols`` wide; unused cells are removed, so len(fig.axes) == n."""
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    fig = Figure(figsize=(panel[0] * ncols, panel[1] * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=sharey).ravel()
    for ax in axes[n:]:
        fig.delaxes(ax)
    return fig, list(axes[:n])


def figure_legend(fig: Figure) -> None:
    """One legend for the whole figure, right of the panels, with each label once."""
    seen: dict[str, Any] = {}
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(label, handle)
    if seen:
        fig.legend(list(seen.values()), list(seen), loc="outside right upper", fontsize=8)


def outside_legend(ax) -> None:
    """The axes' legend right of its plot area, so it never covers data (bars, lines, histograms)."""
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
