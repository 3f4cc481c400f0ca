"""Shared matplotlib plots for the experiments: each writes one PNG atomically and returns its path.

Figures are built with :class:`matplotlib.figure.Figure` directly (Agg canvas, no pyplot), so plotting never
touches global pyplot state or the user's backend and is safe in worker processes. Every plot function has the
form ``f(data..., path, *, labels...) -> Path``; the figure builders ``*_figure`` return the
:class:`~matplotlib.figure.Figure` instead, for callers that want to adjust it before :func:`save_figure`.

Tidy ``rows`` (as in ``results.csv``: one dict per run and metric, values may be strings read back from CSV) are
aggregated over seeds with :func:`varsmooth.report.tables.aggregate` (mean and sample standard deviation, ddof=1).

Modules: :mod:`.curves` (accuracy vs hyperparameter), :mod:`.images` (image grids, smoothed-label bars),
:mod:`.charts` (histograms, lines, bars), :mod:`.calibration` (reliability diagrams).
"""

from .base import DPI, PanelSize, save_figure
from .calibration import reliability_bins, reliability_diagram, reliability_diagram_figure
from .charts import bar_plot, bar_plot_rows, line_plot, noise_histogram
from .curves import accuracy_vs_hyperparameter, accuracy_vs_hyperparameter_figure
from .images import as_hw_images, image_grid, image_grid_figure, smoothed_label_bars, smoothed_label_bars_figure

__all__ = [
    "DPI", "PanelSize", "accuracy_vs_hyperparameter", "accuracy_vs_hyperparameter_figure", "bar_plot",
    "bar_plot_rows", "image_grid", "image_grid_figure", "line_plot", "noise_histogram", "reliability_bins",
    "reliability_diagram", "reliability_diagram_figure", "save_figure", "smoothed_label_bars",
    "smoothed_label_bars_figure", "as_hw_images",
]  # fmt: skip
