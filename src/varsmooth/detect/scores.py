"""Find mislabeled and atypical training examples from one IVON training run.

Paper: "Variational Learning Induces Adaptive Label Smoothing" (Sec. 3.4, Fig. 1, 3); IVON: Shen et al. 2024,
"Variational Learning is Effective for Large Deep Networks"; the scores mirror cleanlab's (Northcutt et al.
2021, "Confident Learning: Estimating Uncertainty in Dataset Labels"), which wants out-of-sample predictions.

Variational learning trains on noisy labels ``y_i + eps_i`` (paper, Sec. 3.4; docs/design.md) with the
expected label noise of example ``i`` under IVON's posterior ``q = N(m, diag(sigma^2))``::

    eps_i = softmax(f_i(m)) - E_q[softmax(f_i(theta))]  ~=  p_mean_i - p_pred_i,     (K,)
    p_pred_i = (1/S) sum_s softmax(f_i(theta_s)),  theta_s ~ q                       (posterior predictive)

and the paper shows (Fig. 1, 3) that the noise is largest on atypical and mislabeled examples. Every IVON run
is therefore a label-error detector with no cross-validation. The functions here follow cleanlab's style:
plain functions over arrays, keyword-only options, one score per example; **a higher score = more suspect**.

Scores (:class:`ScoreMethod`), with ``y`` the given label:

- ``predictive``  ``1 - p_pred[y]``: one minus the posterior predictive probability of the given label
  (cleanlab's *self-confidence* on the posterior predictive), in [0, 1].
- ``margin``      ``max_{k != y} p_pred[k] - p_pred[y]``: cleanlab's *normalized margin* on the posterior
  predictive, negated, in [-1, 1].
- ``noise``       ``||eps_i||_2``: magnitude of the expected IVON label noise (the ordering of the paper's
  Fig. 3), in [0, sqrt(2)].
- ``label-noise`` ``|eps_i[y]|``: size of the noise on the given label, in [0, 1].

Which to use (measured on MNIST with synthetic flips, ``benchmarks/label_errors.py``): for *flipped labels*,
``predictive`` / ``margin`` (AUROC ~0.98-0.997); the noise scores rank *atypical and ambiguous* examples (the
paper's Fig. 3) and find flipped labels only once the network starts to fit them (AUROC ~0.6 after 10 epochs,
~0.8 after 30 epochs of an MLP).

Averaging a score over several epochs of one training run (:class:`ScoreAccumulator`, fed by the training
engine's per-epoch callback) uses the training dynamics too: mislabeled examples are fitted late, if at all.
:mod:`varsmooth.detect.predictions` computes ``p_mean`` and ``p_pred`` of a trained method over a whole split
(:func:`varsmooth.engine.predict_split`) and, as a training callback
(:class:`~varsmooth.detect.predictions.EpochScorer`), at chosen epochs during training.
"""

from __future__ import annotations

from enum import Enum

import numpy as np

from ..errors import InputError, parse_choice

__all__ = [
    "ScoreMethod",
    "check_labels",
    "induced_label_noise",
    "label_error_scores",
    "all_scores",
    "rank_suspects",
    "ScoreAccumulator",
    "detection_metrics",
]

_SUM_TOL = 1e-3  # rows of probabilities from float32 softmax sum to 1 up to ~1e-6; allow averaging round-off


class ScoreMethod(str, Enum):
    """How a per-example suspicion score is computed; higher = more suspect for every method."""

    PREDICTIVE = "predictive"
    MARGIN = "margin"
    NOISE = "noise"
    LABEL_NOISE = "label-noise"

    @classmethod
    def parse(cls, value: str | ScoreMethod) -> ScoreMethod:
        """The member named ``value``; an :class:`InputError` listing the allowed names otherwise."""
        return parse_choice(cls, value, "score method")


_NEEDS_MEAN = {ScoreMethod.NOISE, ScoreMethod.LABEL_NOISE}


def _check_probs(name: str, probs, n: int | None = None, k: int | None = None) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise InputError(f"{name} must have shape (N, K) with K >= 2, got shape {p.shape}")
    if n is not None and p.shape[0] != n:
        raise InputError(f"{name} has {p.shape[0]} rows but there are {n} labels")
    if k is not None and p.shape[1] != k:
        raise InputError(f"{name} has {p.shape[1]} columns but the other probabilities have {k}")
    if not np.all(np.isfinite(p)):
        raise InputError(f"{name} contains NaN or inf")
    if p.min(initial=0.0) < -_SUM_TOL or p.max(initial=0.0) > 1 + _SUM_TOL:
        raise InputError(f"{name} must lie in [0, 1], got values in [{p.min():.3g}, {p.max():.3g}]")
    bad = np.abs(p.sum(axis=1) - 1.0) > _SUM_TOL
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(f"{name} rows must sum to 1; row {i} sums to {p[i].sum():.6g}")
    return p


def check_labels(labels) -> np.ndarray:
    """``labels`` as an int64 array of shape (N,); InputError unless 1-D and integer-valued (integer dtype, or finite
    whole floats). The range against K is checked where K is known."""
    y = np.asarray(labels)
    if y.ndim != 1:
        raise InputError(f"labels must have shape (N,), got shape {y.shape}")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        if not np.issubdtype(y.dtype, np.floating) or not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
            raise InputError(f"labels must be integers, got dtype {y.dtype}")
    return y.astype(np.int64)


def _validate(labels, probs_mean, probs_pred) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Check shapes, finiteness, normalisation and label range; return float64/int64 arrays."""
    y = check_labels(labels)
    pred = _check_probs("probs_pred", probs_pred, n=y.shape[0])
    mean = None
    if probs_mean is not None:
        mean = _check_probs("probs_mean", probs_mean, n=y.shape[0], k=pred.shape[1])
    if y.size and (y.min() < 0 or y.max() >= pred.shape[1]):
        bad = int(y[(y < 0) | (y >= pred.shape[1])][0])
        raise InputError(f"label {bad} is out of range; labels must be in [0, {pred.shape[1] - 1}]")
    return y, mean, pred


def induced_label_noise(probs_mean, probs_pred) -> np.ndarray:
    """Expected IVON label noise ``eps = probs_mean - probs_pred``, shape (N, K); each row sums to 0.

    ``probs_mean`` (N, K): softmax at the posterior mean; ``probs_pred`` (N, K): posterior predictive (mean
    softmax over samples). The smoothed label the variational objective trains on is ``onehot(y) + eps``.
    """
    pred = _check_probs("probs_pred", probs_pred)
    mean = _check_probs("probs_mean", probs_mean, n=pred.shape[0], k=pred.shape[1])
    return mean - pred


def _score(y: np.ndarray, mean: np.ndarray | None, pred: np.ndarray, method: ScoreMethod) -> np.ndarray:
    rows = np.arange(y.shape[0])
    if method is ScoreMethod.PREDICTIVE:
        return 1.0 - pred[rows, y]
    if method is ScoreMethod.MARGIN:
        other = pred.copy()
        other[rows, y] = -np.inf
        return other.max(axis=1) - pred[rows, y]
    eps = mean - pred
    if method is ScoreMethod.NOISE:
        return np.linalg.norm(eps, axis=1)
    return np.abs(eps[rows, y])  # LABEL_NOISE


def label_error_scores(
    labels, probs_mean, probs_pred, *, method: ScoreMethod | str = ScoreMethod.PREDICTIVE
) -> np.ndarray:
    """One suspicion score per example; **higher = more likely mislabeled or atypical**.

    Args:
        labels: (N,) integer given labels in [0, K).
        probs_mean: (N, K) softmax of the model at the posterior mean; may be ``None`` for the methods
            ``predictive`` and ``margin``, which use only the posterior predictive.
        probs_pred: (N, K) posterior predictive probabilities (mean softmax over posterior samples).
        method: a :class:`ScoreMethod` or its name (see the module docstring for the formulas).

    Returns:
        (N,) float64 scores.

    Raises:
        InputError: shapes disagree, labels out of range or not integers, probabilities not finite, outside
            [0, 1] or rows not summing to 1, unknown method, or ``probs_mean`` missing for a noise score.
    """
    method = ScoreMethod.parse(method)
    y, mean, pred = _validate(labels, probs_mean, probs_pred)
    if mean is None and method in _NEEDS_MEAN:
        raise InputError(f"score method {method.value!r} needs probs_mean (softmax at the posterior mean)")
    return _score(y, mean, pred, method)


def all_scores(labels, probs_mean, probs_pred) -> dict[str, np.ndarray]:
    """``{method name: (N,) scores}`` for every :class:`ScoreMethod` (validating the inputs once)."""
    y, mean, pred = _validate(labels, probs_mean, probs_pred)
    if mean is None:
        raise InputError("all_scores needs probs_mean (softmax at the posterior mean)")
    return {m.value: _score(y, mean, pred, m) for m in ScoreMethod}


def rank_suspects(scores) -> np.ndarray:
    """Indices ordering examples from most to least suspect, shape (N,), int64.

    Deterministic: sorted by score descending, ties broken by the smaller index first (a stable sort).
    ``scores`` (N,) must be finite.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1:
        raise InputError(f"scores must have shape (N,), got shape {s.shape}")
    if not np.all(np.isfinite(s)):
        raise InputError("scores contain NaN or inf")
    return np.lexsort((np.arange(s.shape[0]), -s)).astype(np.int64)


class ScoreAccumulator:
    """Running mean of every score (and of both probability arrays) over the epochs at which it is updated.

    Feed it from the training engine's per-epoch callback (see :class:`EpochScorer`);
    after training, :meth:`scores` gives the epoch-averaged scores of one method.
    """

    def __init__(self, labels):
        y = np.asarray(labels)
        if y.ndim != 1:
            raise InputError(f"labels must have shape (N,), got shape {y.shape}")
        self.labels = y.astype(np.int64)
        self.count = 0
        self.epochs: list[int] = []
        self._sums: dict[str, np.ndarray] = {}
        self._mean_sum: np.ndarray | None = None
        self._pred_sum: np.ndarray | None = None

    def update(self, probs_mean, probs_pred, *, epoch: int | None = None) -> None:
        """Add one snapshot: ``probs_mean`` and ``probs_pred`` of shape (N, K) for the N labelled examples."""
        y, mean, pred = _validate(self.labels, probs_mean, probs_pred)
        if mean is None:
            raise InputError("ScoreAccumulator.update needs probs_mean (softmax at the posterior mean)")
        for name, s in {m.value: _score(y, mean, pred, m) for m in ScoreMethod}.items():
            self._sums[name] = self._sums.get(name, 0.0) + s
        self._mean_sum = mean if self._mean_sum is None else self._mean_sum + mean
        self._pred_sum = pred if self._pred_sum is None else self._pred_sum + pred
        self.count += 1
        if epoch is not None:
            self.epochs.append(int(epoch))

    def _need_data(self) -> None:
        if self.count == 0:
            raise InputError("no snapshot accumulated yet: call update() (or train with the callback) first")

    def scores(self, method: ScoreMethod | str = ScoreMethod.PREDICTIVE) -> np.ndarray:
        """(N,) mean over snapshots of the per-snapshot scores of ``method``; higher = more suspect."""
        method = ScoreMethod.parse(method)
        self._need_data()
        return self._sums[method.value] / self.count

    def state_dict(self) -> dict:
        """Plain values and tensors (loadable with ``torch.load(weights_only=True)``)."""
        import torch

        t = torch.from_numpy
        sums = {k: t(np.asarray(v)) for k, v in self._sums.items()}
        mean, pred = (None if a is None else t(a) for a in (self._mean_sum, self._pred_sum))
        return {
            "count": self.count,
            "epochs": list(self.epochs),
            "sums": sums,
            "mean_sum": mean,
            "pred_sum": pred,
        }

    def load_state_dict(self, state: dict) -> None:
        self.count, self.epochs = int(state["count"]), [int(e) for e in state["epochs"]]
        self._sums = {k: v.numpy().copy() for k, v in state["sums"].items()}
        self._mean_sum, self._pred_sum = (
            None if a is None else a.numpy().copy() for a in (state["mean_sum"], state["pred_sum"])
        )

    @property
    def probs_mean(self) -> np.ndarray:
        """(N, K) snapshot-averaged softmax at the posterior mean."""
        self._need_data()
        return self._mean_sum / self.count

    @property
    def probs_pred(self) -> np.ndarray:
        """(N, K) snapshot-averaged posterior predictive."""
        self._need_data()
        return self._pred_sum / self.count


def detection_metrics(is_error, scores, *, k: int | None = None) -> dict[str, float]:
    """How well ``scores`` (N,) rank the true errors ``is_error`` (N,) first; higher score = more suspect.

    Returns ``auroc`` and ``average_precision`` (sklearn.metrics; NaN when ``is_error`` is all one value) and
    ``precision_at_k``: the fraction of true errors among the ``k`` top-ranked examples (:func:`rank_suspects`
    order), ``k`` defaulting to the true number of errors.
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    truth = np.asarray(is_error).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    if truth.ndim != 1 or truth.shape != s.shape:
        raise InputError(f"is_error and scores must both have shape (N,), got {truth.shape} and {s.shape}")
    k = int(truth.sum()) if k is None else int(k)
    order = rank_suspects(s)
    both = 0 < truth.sum() < truth.size
    return {
        "auroc": float(roc_auc_score(truth, s)) if both else float("nan"),
        "average_precision": float(average_precision_score(truth, s)) if both else float("nan"),
        "precision_at_k": float(truth[order[:k]].mean()) if k > 0 else float("nan"),
        "k": k,
    }
