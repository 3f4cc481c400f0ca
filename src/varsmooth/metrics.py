"""Classification metrics from predicted probabilities: accuracy, negative log-likelihood, expected calibration error;
and `aggregate`, the mean and sample std of a metric over seeds that every table and plot uses.

ECE (Guo et al. 2017, "On Calibration of Modern Neural Networks"): split the confidences ``max_k p_ik`` into
``bins`` equal-width bins on [0, 1]; ``ECE = sum_b (n_b / N) |acc_b - conf_b|``. NLL is the mean of
``-log p_{i, y_i}`` (probabilities clipped at 1e-12). Computed in float64.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch


def _np(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def accuracy(labels, probs) -> float:
    """Fraction of rows of ``probs`` (N, K) whose argmax equals ``labels`` (N,)."""
    labels, probs = _np(labels), _np(probs)
    return float(np.mean(probs.argmax(axis=1) == labels)) if len(labels) else float("nan")


def nll(labels, probs) -> float:
    """Mean negative log-probability of the given labels; ``probs`` (N, K), ``labels`` (N,)."""
    labels, probs = _np(labels), _np(probs).astype(np.float64)
    if not len(labels):
        return float("nan")
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None))))


def ece(labels, probs, *, bins: int = 15) -> float:
    """Expected calibration error with ``bins`` equal-width confidence bins; ``probs`` (N, K), ``labels`` (N,)."""
    labels, probs = _np(labels), _np(probs).astype(np.float64)
    if not len(labels):
        return float("nan")
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    # bin b holds confidences in (b/bins, (b+1)/bins]; confidence 0 cannot occur for a probability vector
    idx = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)
    count = np.bincount(idx, minlength=bins)
    gap = np.abs(np.bincount(idx, correct, minlength=bins) - np.bincount(idx, conf, minlength=bins))
    return float(gap.sum() / len(labels)) if count.sum() else float("nan")


def classification_metrics(labels, probs, *, prefix: str = "", bins: int = 15) -> dict[str, float]:
    """``{prefix+"acc", prefix+"nll", prefix+"ece"}`` for probabilities ``probs`` (N, K) and labels (N,)."""
    return {
        f"{prefix}acc": accuracy(labels, probs),
        f"{prefix}nll": nll(labels, probs),
        f"{prefix}ece": ece(labels, probs, bins=bins),
    }


def as_number(value: Any) -> float | None:
    """``value`` as a float, or None when it is empty or not a number (CSV values arrive as strings)."""
    if value is None or isinstance(value, bool) or (isinstance(value, str) and not value.strip()):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def aggregate(
    rows: Sequence[Mapping[str, Any]],
    *,
    over: str = "seed",
    value: str = "value",
    keys: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Mean and sample standard deviation (ddof=1; 0.0 for a single value) of ``value`` over ``over``.

    Rows are grouped by ``keys`` (default: every column except ``over`` and ``value``, in first-seen order); groups
    keep their first-seen order. Rows whose value is empty or not a number are skipped. Returns one dict per group:
    the key columns plus ``mean``, ``std`` and ``n`` (number of values averaged).
    """
    if keys is None:
        keys = [c for c in dict.fromkeys(k for r in rows for k in r) if c not in (over, value)]
    groups: dict[tuple, list[float]] = {}
    firsts: dict[tuple, Mapping[str, Any]] = {}
    for r in rows:
        v = as_number(r.get(value))
        if v is None:
            continue
        key = tuple(str(r.get(k, "")) for k in keys)
        groups.setdefault(key, []).append(v)
        firsts.setdefault(key, r)
    out = []
    for key, vals in groups.items():
        arr = np.asarray(vals, dtype=np.float64)
        std = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
        out.append(
            {
                **{k: firsts[key].get(k, "") for k in keys},
                "mean": float(arr.mean()),
                "std": std,
                "n": int(arr.size),
            }
        )
    return out
