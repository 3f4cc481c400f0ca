"""Array scoring functions of varsmooth.detect: formulas against naive loops, ranking, validation."""

from __future__ import annotations

import numpy as np
import pytest

from varsmooth.detect import (
    ScoreAccumulator,
    ScoreMethod,
    all_scores,
    detection_metrics,
    induced_label_noise,
    label_error_scores,
    rank_suspects,
)
from varsmooth.errors import InputError


def _probs(rng, n, k, temp=1.0):
    z = rng.normal(size=(n, k)) / temp
    p = np.exp(z - z.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True)


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    n, k = 50, 4
    labels = rng.integers(0, k, size=n)
    return labels, _probs(rng, n, k, temp=0.3), _probs(rng, n, k)


def test_scores_match_naive_loops(data):
    labels, mean, pred = data
    for i in range(len(labels)):
        y = labels[i]
        eps = mean[i] - pred[i]
        expected = {
            "predictive": 1.0 - pred[i, y],
            "margin": max(pred[i, k] for k in range(pred.shape[1]) if k != y) - pred[i, y],
            "noise": float(np.sqrt(sum(e * e for e in eps))),
            "label-noise": abs(eps[y]),
        }
        for name, value in expected.items():
            assert label_error_scores(labels, mean, pred, method=name)[i] == pytest.approx(value, abs=1e-12)
    everything = all_scores(labels, mean, pred)
    assert set(everything) == {m.value for m in ScoreMethod}
    for m in ScoreMethod:
        np.testing.assert_array_equal(everything[m.value], label_error_scores(labels, mean, pred, method=m))


def test_one_score_per_example_and_sign_convention():
    # a confident correct example must score below a confident wrong one, for the predictive scores
    labels = np.array([0, 0])
    pred = np.array([[0.98, 0.02], [0.02, 0.98]])
    mean = np.array([[0.999, 0.001], [0.001, 0.999]])
    for m in (ScoreMethod.PREDICTIVE, ScoreMethod.MARGIN):
        s = label_error_scores(labels, mean, pred, method=m)
        assert s.shape == (2,) and s[1] > s[0]
    # an uncertain posterior (large noise) must score above a certain one, for the noise scores
    labels = np.array([0, 0])
    mean = np.array([[0.9, 0.1], [0.9, 0.1]])
    pred = np.array([[0.89, 0.11], [0.6, 0.4]])
    for m in (ScoreMethod.NOISE, ScoreMethod.LABEL_NOISE):
        s = label_error_scores(labels, mean, pred, method=m)
        assert s[1] > s[0]


def test_label_noise_rows_sum_to_zero(data):
    _, mean, pred = data
    eps = induced_label_noise(mean, pred)
    assert eps.shape == mean.shape
    np.testing.assert_allclose(eps.sum(axis=1), 0.0, atol=1e-12)


def test_predictive_scores_accept_missing_mean(data):
    labels, _, pred = data
    s = label_error_scores(labels, None, pred, method="predictive")
    assert s.shape == (len(labels),)
    with pytest.raises(InputError, match="needs probs_mean"):
        label_error_scores(labels, None, pred, method="noise")


def test_rank_is_descending_with_index_tie_break():
    scores = np.array([0.5, 0.9, 0.5, 0.1, 0.9, 0.5])
    order = rank_suspects(scores)
    np.testing.assert_array_equal(order, [1, 4, 0, 2, 5, 3])
    # deterministic and a permutation, against a naive sort on (-score, index)
    rng = np.random.default_rng(1)
    s = rng.integers(0, 5, size=200).astype(float)
    naive = sorted(range(200), key=lambda i: (-s[i], i))
    np.testing.assert_array_equal(rank_suspects(s), naive)
    assert rank_suspects(np.array([])).shape == (0,)


@pytest.mark.parametrize(
    "labels, mean, pred, match",
    [
        ([0, 1], [[0.5, 0.5]] * 2, [[0.5, 0.5]] * 3, "3 rows but there are 2 labels"),
        ([0, 2], [[0.5, 0.5]] * 2, [[0.5, 0.5]] * 2, "label 2 is out of range"),
        ([0, -1], [[0.5, 0.5]] * 2, [[0.5, 0.5]] * 2, "label -1 is out of range"),
        ([[0, 1]], [[0.5, 0.5]], [[0.5, 0.5]], r"labels must have shape \(N,\)"),
        ([0.5, 1], [[0.5, 0.5]] * 2, [[0.5, 0.5]] * 2, "labels must be integers"),
        ([0, 1], [[0.5, 0.5]] * 2, [[0.5, np.nan]] * 2, "NaN or inf"),
        ([0, 1], [[0.5, 0.5]] * 2, [[0.7, 0.5]] * 2, "row 0 sums to 1.2"),
        ([0, 1], [[0.5, 0.5]] * 2, [0.5, 0.5], r"shape \(N, K\)"),
        ([0, 1], [[0.3, 0.3, 0.4]] * 2, [[0.5, 0.5]] * 2, "probs_mean has 3 columns"),
        ([0, 1], [[0.5, 0.5]] * 2, [[1.5, -0.5]] * 2, r"must lie in \[0, 1\]"),
    ],
)
def test_validation_errors(labels, mean, pred, match):
    with pytest.raises(InputError, match=match):
        label_error_scores(np.array(labels), np.array(mean), np.array(pred), method="noise")


def test_unknown_method_and_bad_scores():
    with pytest.raises(InputError, match="unknown score method 'bogus'; allowed: predictive, margin"):
        label_error_scores([0], [[0.5, 0.5]], [[0.5, 0.5]], method="bogus")
    with pytest.raises(InputError, match="NaN or inf"):
        rank_suspects([0.1, np.nan])
    with pytest.raises(InputError, match=r"shape \(N,\)"):
        rank_suspects([[0.1]])


def test_accumulator_averages_scores_over_snapshots(data):
    labels, mean, pred = data
    rng = np.random.default_rng(2)
    mean2, pred2 = _probs(rng, *mean.shape), _probs(rng, *mean.shape)
    acc = ScoreAccumulator(labels)
    with pytest.raises(InputError, match="no snapshot"):
        acc.scores()
    acc.update(mean, pred, epoch=3)
    acc.update(mean2, pred2, epoch=5)
    assert acc.count == 2 and acc.epochs == [3, 5]
    for m in ScoreMethod:
        first = label_error_scores(labels, mean, pred, method=m)
        second = label_error_scores(labels, mean2, pred2, method=m)
        np.testing.assert_allclose(acc.scores(m), (first + second) / 2, rtol=1e-12)
    np.testing.assert_allclose(acc.probs_pred, (pred + pred2) / 2)
    np.testing.assert_allclose(acc.probs_mean, (mean + mean2) / 2)
    with pytest.raises(InputError, match="rows but there are"):
        acc.update(mean[:3], pred[:3])


def test_detection_metrics_against_hand_computed_values():
    truth = np.array([1, 0, 1, 0, 0], dtype=bool)
    scores = np.array([0.9, 0.8, 0.1, 0.2, 0.05])
    m = detection_metrics(truth, scores)
    # pairs (error, clean) ranked correctly: 0.9 beats all 3 cleans, 0.1 beats only 0.05 -> 4/6
    assert m["auroc"] == pytest.approx(4 / 6)
    # ranked: 1 0 0 1 0 -> precision at the hits: 1/1 and 2/4
    assert m["average_precision"] == pytest.approx((1 + 0.5) / 2)
    assert m["k"] == 2 and m["precision_at_k"] == pytest.approx(0.5)
    assert detection_metrics(truth, scores, k=1)["precision_at_k"] == 1.0
    assert np.isnan(detection_metrics(np.zeros(3, bool), np.arange(3.0))["auroc"])
    with pytest.raises(InputError, match="both have shape"):
        detection_metrics(truth, scores[:3])
