"""LS (Eq. 1) and Online Label Smoothing against naive float64 loops."""

import io
import math

import pytest
import torch
import torch.nn.functional as F

from varsmooth.errors import InputError
from varsmooth.losses import OnlineLabelSmoothing, label_smoothing_cross_entropy


def naive_ce(logits, soft_targets):
    """Mean over rows of -sum_k t_k log softmax(f)_k, with explicit Python loops."""
    total = 0.0
    for f, t in zip(logits.tolist(), soft_targets, strict=True):
        m = max(f)
        log_z = m + math.log(sum(math.exp(v - m) for v in f))
        total += -sum(tk * (fk - log_z) for tk, fk in zip(t, f, strict=True))
    return total / len(soft_targets)


def random_batch(b, k, seed, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(b, k, generator=g, dtype=torch.float64), torch.randint(0, k, (b,), generator=g)


# ------------------------------------------------------------------------------------------------------------ LS
@pytest.mark.parametrize("alpha", [0.0, 0.1, 0.37, 0.9, 1.0])
def test_ls_equals_ce_against_explicit_smoothed_targets(alpha):
    k = 7
    logits, y = random_batch(13, k, seed=1)
    smoothed = [[(1 - alpha) * (j == int(yi)) + alpha / k for j in range(k)] for yi in y]
    got = label_smoothing_cross_entropy(logits, y, alpha)
    assert got.dtype == torch.float64 and got.shape == ()
    assert abs(got.item() - naive_ce(logits, smoothed)) < 1e-12


def test_ls_alpha_zero_is_plain_cross_entropy_and_reductions():
    logits, y = random_batch(9, 4, seed=2)
    torch.testing.assert_close(label_smoothing_cross_entropy(logits, y, 0.0), F.cross_entropy(logits, y))
    per = label_smoothing_cross_entropy(logits, y, 0.3, reduction="none")
    assert per.shape == (9,)
    torch.testing.assert_close(per.sum(), label_smoothing_cross_entropy(logits, y, 0.3, reduction="sum"))
    torch.testing.assert_close(per.mean(), label_smoothing_cross_entropy(logits, y, 0.3))


def test_ls_gradient_is_softmax_minus_smoothed_label():
    # d/df CE(f, y') = softmax(f) - y' (per example), so the mean loss has gradient (p - y') / B.
    logits, y = random_batch(5, 3, seed=3)
    logits.requires_grad_(True)
    label_smoothing_cross_entropy(logits, y, 0.2).backward()
    smoothed = 0.8 * F.one_hot(y, 3).double() + 0.2 / 3
    expected = (torch.softmax(logits.detach(), 1) - smoothed) / 5
    torch.testing.assert_close(logits.grad, expected, rtol=0, atol=1e-15)


@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan"), "0.1"])
def test_ls_rejects_alpha_outside_unit_interval(alpha):
    logits, y = random_batch(3, 3, seed=0)
    with pytest.raises(InputError, match="alpha"):
        label_smoothing_cross_entropy(logits, y, alpha)


def test_ls_rejects_bad_shapes_and_reduction():
    logits, y = random_batch(3, 3, seed=0)
    with pytest.raises(InputError, match="targets"):
        label_smoothing_cross_entropy(logits, y[:2], 0.1)
    with pytest.raises(InputError, match="reduction"):
        label_smoothing_cross_entropy(logits, y, 0.1, reduction="avg")


# ----------------------------------------------------------------------------------------------------------- OLS
def naive_ols_epoch(batches, k):
    """Soft-label matrix after one epoch, by explicit loops over examples."""
    sums = [[0.0] * k for _ in range(k)]
    counts = [0] * k
    for logits, y in batches:
        for f, c in zip(logits.tolist(), y.tolist(), strict=True):
            pred = max(range(k), key=lambda j: f[j])
            if pred != c:
                continue
            m = max(f)
            e = [math.exp(v - m) for v in f]
            z = sum(e)
            for j in range(k):
                sums[c][j] += e[j] / z
            counts[c] += 1
    return [[s / counts[c] if counts[c] else 1.0 / k for s in sums[c]] for c in range(k)], counts


def make_epoch(k, seed, never_correct=None):
    batches = [random_batch(b, k, seed=seed + i) for i, b in enumerate([11, 7, 16, 5])]
    for i, (logits, y) in enumerate(batches):
        # push about two thirds of the examples towards their label so most classes have correct predictions
        boost = torch.rand(len(y), generator=torch.Generator().manual_seed(seed + 100 + i)) < 2 / 3
        logits[boost, y[boost]] += 4.0
    if never_correct is not None:
        # every example labelled `never_correct` predicts some other class
        for logits, y in batches:
            mask = y == never_correct
            logits[mask, never_correct] = logits[mask].min(1).values - 1.0
    return batches


def test_ols_initial_matrix_is_label_smoothing():
    ols = OnlineLabelSmoothing(5, init_smoothing=0.2)
    expected = [[0.8 * (i == j) + 0.2 / 5 for j in range(5)] for i in range(5)]
    assert ols.matrix.dtype == torch.float64
    assert torch.allclose(ols.matrix, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-15)


def test_ols_matrix_after_epoch_matches_naive_loop_with_empty_class():
    k = 6
    batches = make_epoch(k, seed=10, never_correct=2)
    ols = OnlineLabelSmoothing(k)
    for logits, y in batches:
        ols.accumulate(logits, y)
    ols.end_epoch()
    expected, counts = naive_ols_epoch(batches, k)
    assert counts[2] == 0 and sum(c > 0 for c in counts) == k - 1  # one empty class, the others are not
    torch.testing.assert_close(ols.matrix, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-14)
    assert torch.equal(ols.matrix[2], torch.full((k,), 1.0 / k, dtype=torch.float64))
    torch.testing.assert_close(ols.matrix.sum(1), torch.ones(k, dtype=torch.float64), rtol=0, atol=1e-14)
    # sums were reset: a second, different epoch gives that epoch's matrix alone
    batches2 = make_epoch(k, seed=50)
    for logits, y in batches2:
        ols.accumulate(logits, y)
    ols.end_epoch()
    expected2, _ = naive_ols_epoch(batches2, k)
    torch.testing.assert_close(ols.matrix, torch.tensor(expected2, dtype=torch.float64), rtol=0, atol=1e-14)
    assert int(ols.epochs) == 2


def test_ols_float32_logits_accumulate_like_float64():
    k = 4
    batches = make_epoch(k, seed=3)
    ols = OnlineLabelSmoothing(k)
    for logits, y in batches:
        ols.accumulate(logits.float(), y)
    ols.end_epoch()
    expected, _ = naive_ols_epoch([(f.float().double(), y) for f, y in batches], k)
    torch.testing.assert_close(ols.matrix, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-12)


@pytest.mark.parametrize("alpha", [0.5, 0.2])
def test_ols_loss_matches_naive_computation(alpha):
    k = 5
    ols = OnlineLabelSmoothing(k, alpha=alpha)
    for logits, y in make_epoch(k, seed=20, never_correct=4):
        ols.accumulate(logits, y)
    ols.end_epoch()
    logits, y = random_batch(9, k, seed=99)
    s = ols.matrix.tolist()
    hard = [[float(j == c) for j in range(k)] for c in y.tolist()]
    soft = [s[c] for c in y.tolist()]
    expected = alpha * naive_ce(logits, hard) + (1 - alpha) * naive_ce(logits, soft)
    assert abs(ols.loss(logits, y).item() - expected) < 1e-12
    assert abs(ols(logits, y).item() - expected) < 1e-12
    per = ols.loss(logits, y, reduction="none")
    assert per.shape == (9,) and abs(per.mean().item() - expected) < 1e-12


def test_ols_first_epoch_loss_is_ls_mixture():
    # with LS-initialised rows, loss = alpha CE + (1 - alpha) LS(s) = LS with smoothing (1 - alpha) s
    logits, y = random_batch(8, 3, seed=7)
    ols = OnlineLabelSmoothing(3, alpha=0.5, init_smoothing=0.1)
    torch.testing.assert_close(ols.loss(logits, y), label_smoothing_cross_entropy(logits, y, 0.05))


def test_ols_accumulate_has_no_grad_and_loss_has_grad():
    logits, y = random_batch(6, 3, seed=8)
    logits.requires_grad_(True)
    ols = OnlineLabelSmoothing(3)
    ols.accumulate(logits, y)
    assert not ols.accumulator.requires_grad
    ols.loss(logits, y).backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_ols_state_dict_round_trip_mid_epoch_is_bitwise():
    k = 5
    batches = make_epoch(k, seed=30, never_correct=1)
    a = OnlineLabelSmoothing(k)
    for logits, y in batches[:1]:
        a.accumulate(logits, y)
    a.end_epoch()
    for logits, y in batches[1:3]:
        a.accumulate(logits, y)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)  # mid-epoch: matrix, accumulator and counts all non-trivial
    assert set(a.state_dict()) == {"matrix", "accumulator", "counts", "epochs"}
    buf.seek(0)
    b = OnlineLabelSmoothing(k)
    b.load_state_dict(torch.load(buf))
    for name in ("matrix", "accumulator", "counts", "epochs"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    probe, py = random_batch(4, k, seed=77)
    assert torch.equal(a.loss(probe, py), b.loss(probe, py))
    for ols in (a, b):
        ols.accumulate(*batches[3])
        ols.end_epoch()
    assert torch.equal(a.matrix, b.matrix)


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        ({"num_classes": 1}, "num_classes"),
        ({"num_classes": 3, "alpha": 1.2}, "alpha"),
        ({"num_classes": 3, "init_smoothing": -0.1}, "init_smoothing"),
    ],
)
def test_ols_validates_arguments(kwargs, needle):
    with pytest.raises(InputError, match=needle):
        OnlineLabelSmoothing(**kwargs)


def test_ols_rejects_wrong_class_count():
    ols = OnlineLabelSmoothing(4)
    logits, y = random_batch(3, 5, seed=0)
    with pytest.raises(InputError, match="classes"):
        ols.loss(logits, y)
