"""Exact GLM label noise (varsmooth.noise.glm) against scipy quad, closed forms and Monte Carlo references."""

import numpy as np
import pytest
from scipy import integrate, special

from varsmooth.errors import InputError
from varsmooth.noise import (
    Likelihood,
    SoftmaxQMC,
    bernoulli_noise,
    expected_sigmoid_prime,
    glm_label_noise,
    log_expected_exp,
    poisson_noise,
    softmax_noise,
)

MEANS = [-1000.0, -30.0, -5.0, -1.3, -0.2, 0.0, 0.4, 2.0, 6.0, 40.0, 1000.0]
VARS = [1e-8, 0.01, 0.5, 1.0, 2.3, 10.0, 100.0, 1e4]


def _quad_gauss(fn, m, v):
    """E_{N(m, v)}[fn(f)] by adaptive quadrature in the standardised variable, breaking where f = 0."""
    s = np.sqrt(v)
    x0 = -m / s
    lo, hi = -40.0, 40.0
    pts = [x0] if lo < x0 < hi else None
    val, _ = integrate.quad(
        lambda x: fn(m + s * x) * np.exp(-x * x / 2) / np.sqrt(2 * np.pi),
        lo,
        hi,
        points=pts,
        epsabs=1e-14,
        epsrel=1e-13,
        limit=500,
    )
    return val


@pytest.mark.parametrize("v", VARS)
def test_bernoulli_matches_adaptive_quad(v):
    m = np.array(MEANS)
    got = bernoulli_noise(m, v)
    ref = np.array([special.expit(mi) - _quad_gauss(special.expit, mi, v) for mi in m])
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-10)
    prime = np.array([_quad_gauss(lambda f: special.expit(f) * special.expit(-f), mi, v) for mi in m])
    np.testing.assert_allclose(expected_sigmoid_prime(m, v), prime, rtol=0, atol=1e-10)


@pytest.mark.parametrize("v", [1e-8, 0.3, 1.0, 4.0, 9.0, 25.0])
def test_poisson_matches_adaptive_quad(v):
    m = np.array([-5.0, -1.0, 0.0, 0.7, 3.0])
    s = np.sqrt(v)
    # E[e^{f - m}] = int e^{s x} phi(x) dx, peak at x = s
    ref = np.array(
        [
            integrate.quad(
                lambda x: np.exp(s * x - x * x / 2) / np.sqrt(2 * np.pi),
                s - 40,
                s + 40,
                epsabs=0,
                epsrel=1e-13,
                limit=500,
            )[0]
            for _ in m
        ]
    )
    expected = np.exp(m) * ref
    np.testing.assert_allclose(np.exp(log_expected_exp(m, v)), expected, rtol=1e-10)
    got = poisson_noise(m, v)
    np.testing.assert_allclose(got, np.exp(m) - expected, rtol=1e-9, atol=1e-10)


def test_poisson_closed_form_and_overflow():
    m, v = np.meshgrid(
        np.array([-1000.0, -20.0, 0.0, 5.0, 300.0, 1000.0]), np.array([1e-300, 1e-12, 1e-3, 1.0, 3.99, 4.01, 50.0, 1e4])
    )
    np.testing.assert_allclose(log_expected_exp(m, v), m + v / 2, rtol=1e-13, atol=1e-12)
    noise = poisson_noise(m, v)
    assert not np.any(np.isnan(noise)) and np.all(noise <= 0)
    with np.errstate(over="ignore", divide="ignore"):
        log_mag = m + np.where(v > 1, v / 2 + np.log1p(-np.exp(-v / 2)), np.log(np.expm1(v / 2)))
    finite = log_mag < 709.0
    np.testing.assert_allclose(
        np.log(-noise[finite & (noise < 0)]), log_mag[finite & (noise < 0)], rtol=1e-12, atol=1e-10
    )
    assert np.all(noise[log_mag > 710.0] == -np.inf)
    np.testing.assert_allclose(noise[0, -1], -np.exp(1000.0 + np.log(5e-301)), rtol=1e-12)  # e^1000 overflows


def test_zero_variance_gives_exactly_zero_noise():
    m = np.array(MEANS)
    assert np.all(bernoulli_noise(m, 0.0) == 0.0)
    assert np.all(poisson_noise(m, 0.0) == 0.0)
    f = np.array([[0.0, 3.0, -2.0], [1000.0, -1000.0, 0.5]])
    noise, se = softmax_noise(f, np.zeros((2, 3)))
    assert np.all(noise == 0.0) and np.all(se == 0.0)
    noise, _ = softmax_noise(f, np.zeros((2, 3, 3)))
    assert np.all(noise == 0.0)


def test_stable_on_extreme_grid():
    m, v = np.meshgrid(np.linspace(-1e3, 1e3, 41), np.concatenate([[0.0], np.logspace(-12, 4, 17)]))
    b = bernoulli_noise(m, v)
    assert np.all(np.isfinite(b)) and np.all(np.abs(b) <= 1)
    np.testing.assert_allclose(bernoulli_noise(-m, v), -b, atol=1e-15)  # odd in f_mean
    assert not np.any(np.isnan(poisson_noise(m, v)))
    f = np.stack([m.ravel(), -m.ravel(), 0 * m.ravel()], axis=1)
    noise, se = softmax_noise(f, np.repeat(v.ravel()[:, None], 3, axis=1), points=256, replicates=4)
    assert np.all(np.isfinite(noise)) and np.all(np.isfinite(se))
    np.testing.assert_allclose(noise.sum(axis=1), 0.0, atol=1e-14)


def test_fig2_shape():
    f = np.linspace(-8, 8, 1601)
    mag = np.abs(bernoulli_noise(f, 1.0))
    assert mag[800] == 0.0  # f_mean = 0
    left, right = np.argmax(mag[:800]), 801 + np.argmax(mag[801:])
    assert 0.3 < abs(f[left]) < 3 and 0.3 < abs(f[right]) < 3  # peaks slightly away from 0, both sides
    assert np.isclose(mag[left], mag[right])
    assert mag[0] < 0.1 * mag[left] and mag[-1] < 0.1 * mag[right]  # decays in the tails
    assert np.all(np.diff(mag[right:]) < 0) and np.all(np.diff(mag[: left + 1]) > 0)


def _mc_softmax(m, cov, n, seed):
    rng = np.random.default_rng(seed)
    root = np.linalg.cholesky(cov) if cov.ndim == 2 else np.diag(np.sqrt(cov))
    f = m + rng.standard_normal((n, m.size)) @ root.T
    p = special.softmax(f, axis=1)
    return special.softmax(m) - p.mean(0), p.std(0, ddof=1) / np.sqrt(n)


def test_softmax_within_4_se_of_million_sample_mc():
    rng = np.random.default_rng(1)
    m = np.array([[0.5, -1.0, 2.0], [3.0, 0.0, -3.0]])
    a = rng.standard_normal((2, 3, 3))
    covs = [np.array([[1.0, 4.0, 0.3], [9.0, 0.1, 2.0]]), a @ np.swapaxes(a, 1, 2) + 0.1 * np.eye(3)]
    for cov in covs:
        noise, se = softmax_noise(m, cov, seed=3)
        for i in range(2):
            ref, ref_se = _mc_softmax(m[i], cov[i], 10**6, seed=i)
            assert np.all(np.abs(noise[i] - ref) <= 4 * np.hypot(se[i], ref_se))


def test_softmax_matches_tensor_gauss_hermite():
    """K = 3, narrow diagonal Gaussians: a 40^3-node product rule is exact to ~1e-13 and checks the QMC SE."""
    x, w = np.polynomial.hermite.hermgauss(40)
    w = w / w.sum()
    m = np.array([[0.2, -0.4, 1.0], [2.0, 2.1, -1.0], [-0.3, 0.0, 0.3]])
    v = np.array([[0.3, 0.8, 0.5], [1.0, 1.0, 1.0], [0.05, 0.6, 0.2]])
    noise, se = softmax_noise(m, v, seed=7)
    grid = np.stack(np.meshgrid(x, x, x, indexing="ij"), -1).reshape(-1, 3) * np.sqrt(2)
    wg = np.einsum("i,j,k->ijk", w, w, w).ravel()
    for i in range(3):
        ref = special.softmax(m[i]) - wg @ special.softmax(m[i] + np.sqrt(v[i]) * grid, axis=1)
        assert np.all(np.abs(noise[i] - ref) <= 4 * se[i] + 1e-12)
        assert np.all(se[i] < 1e-4)


def test_softmax_two_classes_equals_logistic():
    """Estimator check (no 1-D reduction is used): K = 2 QMC noise vs the exact logistic noise, within 4 SE."""
    f = np.array([-6.0, -1.5, 0.0, 0.7, 3.0, 20.0])
    v = np.array([0.2, 1.0, 4.0, 9.0, 100.0, 1e4])
    logits = np.stack([np.zeros_like(f), f], axis=1)
    noise, se = softmax_noise(logits, np.stack([np.zeros_like(v), v], axis=1), seed=11)
    exact = bernoulli_noise(f, v)
    assert np.all(np.abs(noise[:, 1] - exact) <= 4 * se[:, 1] + 1e-15)
    np.testing.assert_allclose(noise[:, 0], -noise[:, 1], atol=1e-15)
    # full covariance: only the difference f_1 - f_0 matters
    cov = np.array([[[1.0, 0.3], [0.3, 2.0]]] * 6)
    noise, se = softmax_noise(logits + 1.0, cov, seed=2)
    exact = bernoulli_noise(f, 1.0 + 2.0 - 0.6)
    assert np.all(np.abs(noise[:, 1] - exact) <= 4 * se[:, 1] + 1e-15)


def test_softmax_rule_is_seeded_and_shared():
    m = np.array([[0.0, 1.0, -1.0]])
    a, _ = softmax_noise(m, np.ones((1, 3)), seed=5)
    b, _ = softmax_noise(m, np.ones((1, 3)), seed=5)
    c, se = softmax_noise(m, np.ones((1, 3)), seed=6)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.all(np.abs(a - c) <= 6 * se)
    rule = SoftmaxQMC(3, points=128, replicates=4, seed=0)
    assert np.array_equal(rule.moments(m, np.ones((1, 3)))[0], rule.moments(m, np.ones((1, 3)))[0])


def test_likelihood_enum_and_dispatch():
    assert Likelihood("logistic") is Likelihood.BERNOULLI and Likelihood.parse("Poisson") is Likelihood.POISSON
    with pytest.raises(InputError, match="gaussian"):
        Likelihood.parse("gaussian")
    n, se = glm_label_noise([0.5, -2.0], [1.0, 3.0], likelihood="logistic")
    np.testing.assert_array_equal(n, bernoulli_noise([0.5, -2.0], [1.0, 3.0]))
    assert np.all(se == 0)
    n, _ = glm_label_noise([0.5], [1.0], likelihood="poisson")
    np.testing.assert_allclose(n, np.exp(0.5) - np.exp(1.0), rtol=1e-13)


@pytest.mark.parametrize("m, v", [(np.nan, 1.0), (0.0, -1.0), (np.inf, 1.0), (0.0, np.inf)])
def test_bad_input(m, v):
    with pytest.raises(InputError):
        bernoulli_noise(m, v)
    with pytest.raises(InputError):
        poisson_noise(m, v)
