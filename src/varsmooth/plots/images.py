"""Image grids with per-image values (paper Fig. 1, 3) and class-averaged smoothed labels (paper Fig. 4)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from .base import figure_legend, panel_grid, save_figure


def as_hw_images(images: Any) -> tuple[np.ndarray, bool]:
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
    imgs, rgb = as_hw_images(images)
    n = len(imgs)
    if len(values) != n or (labels is not None and len(labels) != n):
        raise ValueError(
            f"need one value (and label) per image: {n} images, {len(values)} values"
            + ("" if labels is None else f", {len(labels)} labels")
        )
    if n == 0:
        raise ValueError("image_grid needs at least one image")
    fig, axes = panel_grid(n, ncols, (1.35, 1.65))
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
    fig, axes = panel_grid(len(classes), ncols, (3.0, 2.4), sharey=True)
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
    figure_legend(fig)
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
