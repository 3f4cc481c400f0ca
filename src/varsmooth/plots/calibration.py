"""Reliability diagrams: confidence against accuracy in equal-width bins, one panel per method, ECE in the title.

The bins are those of :func:`varsmooth.metrics.ece` (bin b holds confidences in (b/B, (b+1)/B]), and the ECE in
each title is computed by that function, so it equals the ``test_ece`` / ``test_pred_ece`` an engine run records.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ..metrics import ece
from .base import figure_legend, panel_grid, save_figure


def reliability_bins(labels: Any, probs: Any, *, bins: int = 15) -> dict[str, np.ndarray]:
    """Per-bin statistics of the top-class confidence; ``probs`` (N, K), ``labels`` (N,).

    Returns ``{"edges": (bins + 1,), "count": (bins,), "confidence": (bins,), "accuracy": (bins,)}``: mean
    confidence and accuracy of the examples in each bin (NaN for an empty bin).
    """
    labels, probs = np.asarray(labels), np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or labels.shape != (len(probs),):
        raise ValueError(f"need probs (N, K) and labels (N,), got shapes {probs.shape} and {labels.shape}")
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    idx = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)  # as in metrics.ece
    count = np.bincount(idx, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(idx, conf, minlength=bins) / count
        mean_acc = np.bincount(idx, correct, minlength=bins) / count
    return {"edges": np.linspace(0.0, 1.0, bins + 1), "count": count, "confidence": mean_conf, "accuracy": mean_acc}


def reliability_diagram_figure(
    predictions: Mapping[str, tuple[Any, Any]],
    *,
    bins: int = 15,
    ncols: int = 4,
    title: str | None = None,
) -> Figure:
    """One panel per method; see :func:`reliability_diagram`."""
    if not predictions:
        raise ValueError("reliability_diagram needs at least one method")
    fig, axes = panel_grid(len(predictions), ncols, (3.0, 3.1), sharey=True)
    for ax, (name, (labels, probs)) in zip(axes, predictions.items(), strict=True):
        stats = reliability_bins(labels, probs, bins=bins)
        edges, width = stats["edges"], 1.0 / bins
        full = stats["count"] > 0
        ax.bar(edges[:-1][full], stats["accuracy"][full], width, align="edge", color="C0", edgecolor="white",
               label="accuracy")  # fmt: skip
        acc, conf = stats["accuracy"][full], stats["confidence"][full]
        ax.bar(edges[:-1][full], np.abs(conf - acc), width, bottom=np.minimum(acc, conf), align="edge", fill=False,
               edgecolor="C3", hatch="///", lw=0.8, label="gap to mean confidence")  # fmt: skip
        ax.plot([0, 1], [0, 1], color="0.3", ls="--", lw=1, label="perfect calibration")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
        ax.set_title(f"{name}\nECE {ece(labels, probs, bins=bins):.3f}", fontsize=9)
        ax.set_xlabel("confidence")
    axes[0].set_ylabel("accuracy")
    figure_legend(fig)  # every mark explained once: the bars, the hatched gap, the diagonal
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def reliability_diagram(
    predictions: Mapping[str, tuple[Any, Any]],
    path: str | os.PathLike,
    *,
    bins: int = 15,
    **options: Any,
) -> Path:
    """Reliability diagrams of several methods side by side (calibration; Guo et al. 2017).

    ``predictions``: ``{method: (labels (N,), probs (N, K))}``. In each panel, the accuracy of the examples whose
    top-class confidence falls in each of ``bins`` equal-width bins (bars), the gap between it and their mean
    confidence (hatched), and the diagonal of perfect calibration, each named in one legend; the title gives the
    method and its ECE (:func:`varsmooth.metrics.ece` with the same ``bins``). Options: ``ncols`` (4), ``title``.
    """
    return save_figure(reliability_diagram_figure(predictions, bins=bins, **options), path)
