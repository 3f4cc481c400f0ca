"""cleanlab-compatible label-issue functions: the arrays a run saved, or features trained on once with IVON.

Migrating from cleanlab (Northcutt et al. 2021, "Confident Learning") is one import line::

    from cleanlab.filter import find_label_issues           # before
    from varsmooth.detect import find_label_issues          # after: same call, same return types

    issues = find_label_issues(labels, pred_probs)                                      # (N,) bool mask
    ranked = find_label_issues(labels, pred_probs, return_indices_ranked_by="self_confidence")  # flagged indices
    quality = label_quality_scores(labels, pred_probs)      # (N,) in [0, 1], higher = cleaner (as cleanlab.rank)
    issues = find_label_issues(labels, features=X)          # no pred_probs: one IVON run on X (varsmooth.detect.fit)

``pred_probs`` need not be out-of-sample: cleanlab wants K-fold cross-validated probabilities; here they may be
the probabilities one training run saved (``step_probs``, the per-step softmax averaged over the run, or the
posterior predictive ``probs_pred``; :mod:`.fit`, :class:`.predictions.EpochScorer`). Given ``features``
instead, both functions train one IVON run (:func:`~varsmooth.detect.fit.fit_probs`) and use its ``step_probs``.

**Quality** (:class:`QualityMethod`; the formulas of :func:`~varsmooth.detect.scores.label_error_scores`):
``self_confidence`` = ``p[y]``; ``normalized_margin`` = ``(1 + p[y] - max_{k != y} p[k]) / 2`` (cleanlab's
definitions, so on the same ``pred_probs`` the values equal ``cleanlab.rank.get_label_quality_scores``).

**How many are flagged** (:class:`FilterBy`):

- ``confident_joint`` (default): ``n = N - trace(C)`` with ``C`` the calibrated confident joint of ``pred_probs``
  (Northcutt et al. 2021, Eq. 2-3; per-class thresholds ``t_k`` = mean ``p[k]`` of the examples labelled ``k``,
  each example counted in (given label, most probable class above its threshold), rows rescaled to the given
  label counts), the count of ``cleanlab.count.num_label_issues(..., estimation_method="off_diagonal_calibrated")``;
  the ``n`` examples of lowest quality are flagged;
- ``predicted_neq_given``: the examples whose most probable class is not the given label;
- ``threshold``: the examples with quality < ``threshold``.
"""

from __future__ import annotations

from enum import Enum

import numpy as np
from torch import nn

from ..errors import InputError, parse_choice
from .fit import DEFAULT_EPOCHS, fit_probs
from .scores import ScoreMethod, check_labels, label_error_scores, rank_suspects

__all__ = [
    "QualityMethod",
    "FilterBy",
    "confident_joint",
    "num_label_issues",
    "label_quality_scores",
    "get_label_quality_scores",
    "find_label_issues",
]


class QualityMethod(str, Enum):
    """cleanlab's label-quality scores (higher = cleaner), as ``cleanlab.rank.get_label_quality_scores`` names them."""

    SELF_CONFIDENCE = "self_confidence"
    NORMALIZED_MARGIN = "normalized_margin"

    @classmethod
    def parse(cls, value: str | QualityMethod) -> QualityMethod:
        return parse_choice(cls, value, "quality method")


class FilterBy(str, Enum):
    """The rule for how many examples :func:`find_label_issues` flags (module docstring)."""

    CONFIDENT_JOINT = "confident_joint"
    PREDICTED_NEQ_GIVEN = "predicted_neq_given"
    THRESHOLD = "threshold"

    @classmethod
    def parse(cls, value: str | FilterBy) -> FilterBy:
        return parse_choice(cls, value, "filter_by")


def _quality(labels, probs: np.ndarray, method: QualityMethod) -> np.ndarray:
    """Quality in [0, 1] from the suspicion scores of :func:`label_error_scores` (one formula, mapped)."""
    if method is QualityMethod.SELF_CONFIDENCE:
        return 1.0 - label_error_scores(labels, None, probs, method=ScoreMethod.PREDICTIVE)
    return 0.5 * (1.0 - label_error_scores(labels, None, probs, method=ScoreMethod.MARGIN))


def _round_rows(x: np.ndarray) -> np.ndarray:
    """Round each row of ``x`` (K, K) to integers keeping its (rounded) total: cleanlab's
    ``round_preserving_row_totals`` (the entries furthest from their rounding move first)."""
    out = np.rint(x)
    for i, row in enumerate(x):
        diff = int(np.rint(row.sum() - out[i].sum()))
        while diff != 0:
            step = 1 if diff > 0 else -1
            order = np.argsort(row - out[i])[::-step][: min(abs(diff), len(row))]
            out[i, order] += step
            diff = int(np.rint(row.sum() - out[i].sum()))
    return out.astype(np.int64)


def confident_joint(labels, pred_probs, *, calibrate: bool = True) -> np.ndarray:
    """The confident joint ``C`` (K, K) of Northcutt et al. 2021: ``C[i, j]`` counts examples given label ``i``
    whose class ``j`` is confidently likely (``p[j] >= t_j``, the most probable such ``j``).

    ``labels`` (N,) integers in [0, K), ``pred_probs`` (N, K). With ``calibrate``, each row is rescaled to the
    number of examples given that label and rounded to integers keeping the row totals (so ``C.sum() == N``).
    The same matrix as ``cleanlab.count.compute_confident_joint(labels, pred_probs, calibrate=calibrate)``.
    """
    y, p = _checked(labels, pred_probs)
    k = p.shape[1]
    counts = np.bincount(y, minlength=k)
    sums = np.bincount(y, weights=p[np.arange(len(y)), y], minlength=k)
    thresholds = np.where(counts > 0, sums / np.maximum(counts, 1), 2.0)
    thresholds = np.maximum(thresholds, 2e-6)  # cleanlab's CONFIDENT_THRESHOLDS_LOWER_BOUND
    confident = p >= thresholds - 1e-6
    n_conf = confident.sum(axis=1)
    guess = np.where(n_conf > 1, p.argmax(axis=1), confident.argmax(axis=1))
    keep = n_conf > 0
    joint = np.zeros((k, k), dtype=np.int64)
    np.add.at(joint, (y[keep], guess[keep]), 1)
    np.fill_diagonal(joint, np.maximum(joint.diagonal(), 1))  # at least one clean example per class
    if not calibrate:
        return joint
    joint = np.asfortranarray(joint)  # cleanlab's memory layout and order of operations, so that the round-off
    cal = (joint.T / np.maximum(joint.sum(axis=1), 1e-6) * counts).T  # of the total (which entries round up)
    cal = cal / max(cal.sum(), 1e-6) * counts.sum()  # is the same
    return _round_rows(cal)


def num_label_issues(labels, pred_probs) -> int:
    """Estimated number of label issues: ``N - trace(C)`` of the calibrated :func:`confident_joint` (cleanlab's
    ``num_label_issues(..., estimation_method="off_diagonal_calibrated")``)."""
    joint = confident_joint(labels, pred_probs, calibrate=True)
    frac = 1.0 - np.trace(joint) / max(joint.sum(), 1)
    return int(np.rint(frac * len(check_labels(labels))))


def label_quality_scores(
    labels,
    pred_probs=None,
    *,
    method: QualityMethod | str = QualityMethod.NORMALIZED_MARGIN,
    features=None,
    model: str | nn.Module | None = None,
    epochs: int = DEFAULT_EPOCHS,
    seed: int = 0,
    train_options: dict | None = None,
) -> np.ndarray:
    """Label quality of each example, shape (N,), in [0, 1]; **higher = cleaner**, as cleanlab orders it.

    Args:
        labels: (N,) integer given labels in [0, K).
        pred_probs: (N, K) probabilities (cross-validated, or saved by one run: ``step_probs`` / ``probs_pred``).
            None: give ``features`` and one IVON run is trained on them (:func:`~varsmooth.detect.fit.fit_probs`
            with ``model``: a model name or your own ``nn.Module``, ``epochs``, ``seed``, ``train_options``) and its
            ``step_probs`` are scored.
        method: ``normalized_margin`` (default, chosen by ``benchmarks/label_errors.py``) or ``self_confidence``.

    Raises:
        InputError: bad shapes, labels or probabilities; neither ``pred_probs`` nor ``features``; unknown method.
    """
    method = QualityMethod.parse(method)
    y, probs = _resolve(labels, pred_probs, features, model, epochs, seed, train_options)
    return _quality(y, probs, method)


get_label_quality_scores = label_quality_scores  # the name in cleanlab.rank


def find_label_issues(
    labels,
    pred_probs=None,
    *,
    return_indices_ranked_by: QualityMethod | str | None = None,
    filter_by: FilterBy | str = FilterBy.CONFIDENT_JOINT,
    rank_by: QualityMethod | str = QualityMethod.NORMALIZED_MARGIN,
    threshold: float = 0.5,
    features=None,
    model: str | nn.Module | None = None,
    epochs: int = DEFAULT_EPOCHS,
    seed: int = 0,
    train_options: dict | None = None,
) -> np.ndarray:
    """The examples whose given label is likely wrong, as ``cleanlab.filter.find_label_issues`` returns them.

    Args:
        labels, pred_probs, features, model, epochs, seed, train_options: as :func:`label_quality_scores`.
        return_indices_ranked_by: None: return a boolean mask (N,); a :class:`QualityMethod` name: return the
            indices (M,) of the flagged examples, lowest quality (most likely mislabeled) first.
        filter_by: how many are flagged (:class:`FilterBy`; module docstring).
        rank_by: the quality whose lowest examples are flagged under ``confident_joint``.
        threshold: ``filter_by="threshold"`` flags quality (``rank_by``) below it, in (0, 1].

    Returns:
        (N,) bool mask, or (M,) int64 indices when ``return_indices_ranked_by`` is given.
    """
    filter_by, rank_by = FilterBy.parse(filter_by), QualityMethod.parse(rank_by)
    if not 0.0 < float(threshold) <= 1.0:
        raise InputError(f"threshold must lie in (0, 1], got {threshold}")
    y, probs = _resolve(labels, pred_probs, features, model, epochs, seed, train_options)
    quality = _quality(y, probs, rank_by)
    mask = np.zeros(len(y), dtype=bool)
    if filter_by is FilterBy.CONFIDENT_JOINT:
        mask[rank_suspects(-quality)[: num_label_issues(y, probs)]] = True
    elif filter_by is FilterBy.PREDICTED_NEQ_GIVEN:
        mask = probs.argmax(axis=1) != y
    else:
        mask = quality < threshold
    if return_indices_ranked_by is None:
        return mask
    order = rank_suspects(-_quality(y, probs, QualityMethod.parse(return_indices_ranked_by)))
    return order[mask[order]]


def _checked(labels, pred_probs) -> tuple[np.ndarray, np.ndarray]:
    """Labels (N,) int64 and probabilities (N, K) checked (shapes, label range, finite rows summing to 1) and
    renormalised."""
    y = check_labels(labels)
    p = np.asarray(pred_probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] != len(y):
        raise InputError(f"pred_probs must have shape (N, K) with N = {len(y)} labels, got shape {p.shape}")
    label_error_scores(y, None, p)  # the one validation of labels against probabilities
    return y, p / p.sum(axis=1, keepdims=True)


def _resolve(labels, pred_probs, features, model, epochs, seed, train_options) -> tuple[np.ndarray, np.ndarray]:
    """(labels, probabilities): the given ``pred_probs`` (checked), or those of one IVON run on ``features``."""
    if pred_probs is not None and features is not None:
        raise InputError("give pred_probs or features, not both")
    if pred_probs is None:
        if features is None:
            raise InputError("give pred_probs (N, K), or features (N, ...) to train one IVON run on")
        fit = fit_probs(labels, features, model=model, epochs=epochs, seed=seed, predictive=False,
                        train_options=train_options)  # fmt: skip
        pred_probs = fit.step_probs
    return _checked(labels, pred_probs)
