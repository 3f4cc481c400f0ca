"""Theorems 1 and 2: variational GD / VON and their noisy-label twins (varsmooth.noise.variational)."""

import numpy as np
import pytest
from scipy import special
from sklearn.datasets import make_moons

from varsmooth.errors import InputError
from varsmooth.noise import Likelihood, SoftmaxQMC
from varsmooth.noise.variational import (
    _expectations,
    gd_step,
    run_noisy_gd,
    run_noisy_newton,
    run_variational_gd,
    run_von,
)

STEPS = 50


def _synthetic(likelihood):
    rng = np.random.default_rng(0)
    k = 2 if likelihood == "bernoulli" else 3
    centers = rng.normal(scale=2.0, size=(k, 3))
    y = rng.integers(0, k, size=80)
    x = centers[y] + rng.normal(size=(80, 3))
    X = np.c_[x, np.ones(80)]
    return X, (y.astype(float) if likelihood == "bernoulli" else y)


def _moons(likelihood):
    x, y = make_moons(150, noise=0.25, random_state=0)
    X = np.c_[x, x[:, 0] * x[:, 1], np.ones(len(x))]
    return X, (y.astype(float) if likelihood == "bernoulli" else y)


def _rule(likelihood, X, y):
    if likelihood == "bernoulli":
        return None
    return SoftmaxQMC(int(np.max(y)) + 1, points=256, replicates=4, seed=0)


CASES = [(d, lik) for d in (_synthetic, _moons) for lik in ("bernoulli", "softmax")]


@pytest.mark.parametrize("data, likelihood", CASES)
def test_theorem1_variational_gd_equals_gd_with_noisy_labels(data, likelihood):
    X, y = data(likelihood)
    rule = _rule(likelihood, X, y)
    kw = dict(steps=STEPS, lr=0.01, likelihood=likelihood, rule=rule)
    var = run_variational_gd(X, y, **kw)
    twin = run_noisy_gd(X, y, **kw)
    assert np.max(np.abs(var.thetas - twin.thetas)) <= 1e-10
    assert twin.label_noise.shape[0] == STEPS and np.max(np.abs(twin.label_noise)) > 1e-2
    # dropping the noise changes the trajectory far beyond 1e-10 (the check is not vacuous)
    Y = y if likelihood == "bernoulli" else np.eye(int(y.max()) + 1)[y]
    theta = twin.thetas[0]
    for _ in range(STEPS):
        theta = gd_step(theta, X, Y, likelihood=likelihood, lr=0.01)
    assert np.max(np.abs(theta - var.thetas[-1])) > 1e-3


@pytest.mark.parametrize("data, likelihood", CASES)
def test_theorem2_von_equals_newton_with_noisy_labels(data, likelihood):
    X, y = data(likelihood)
    rule = _rule(likelihood, X, y)
    kw = dict(steps=STEPS, likelihood=likelihood, rule=rule, prior_precision=1.0)
    von = run_von(X, y, **kw)
    twin = run_noisy_newton(X, y, **kw)
    assert np.max(np.abs(von.thetas - twin.thetas)) <= 1e-10
    assert np.max(np.abs(von.covs - twin.covs)) <= 1e-10
    assert np.max(np.abs(twin.label_noise)) > 1e-3 and np.max(np.abs(twin.hessian_noise)) > 1e-3
    if likelihood == "softmax":
        np.testing.assert_allclose(twin.label_noise.sum(axis=-1), 0.0, atol=1e-14)


def test_damped_von_matches_damped_newton():
    X, y = _moons("bernoulli")
    von = run_von(X, y, steps=20, rho=0.3)
    twin = run_noisy_newton(X, y, steps=20, rho=0.3)
    assert np.max(np.abs(von.thetas - twin.thetas)) <= 1e-10


@pytest.mark.parametrize("likelihood", ["bernoulli", "softmax"])
def test_expectations_match_monte_carlo_over_theta(likelihood):
    """The 1-D / K-dim reduction (Eq. 11, 18) against sampling theta ~ N(theta_t, Sigma) in parameter space."""
    rng = np.random.default_rng(3)
    X, y = _synthetic(likelihood)
    X = X[:6] * 0.5
    k = 1 if likelihood == "bernoulli" else 3
    theta = rng.normal(size=(4,) if k == 1 else (4, k))
    a = rng.normal(size=(theta.size, theta.size)) * 0.3
    cov = a @ a.T + 0.05 * np.eye(theta.size)
    rule = SoftmaxQMC(3, points=4096, replicates=8) if k == 3 else None
    _, mean, hess = _expectations(theta, X, cov, Likelihood(likelihood), rule, True)
    n = 200_000
    thetas = theta.ravel() + rng.standard_normal((n, theta.size)) @ np.linalg.cholesky(cov).T
    if k == 1:
        p = special.expit(thetas @ X.T)  # (n, N)
        samples, hsamples = p, p * (1 - p)
    else:
        f = np.einsum("np,spk->snk", X, thetas.reshape(n, 4, k))
        p = special.softmax(f, axis=-1)
        samples = p
        hsamples = np.einsum("snk,kl->snkl", p, np.eye(k)) - p[..., :, None] * p[..., None, :]
    se = samples.std(0) / np.sqrt(n)
    assert np.all(np.abs(mean - samples.mean(0)) <= 5 * se + 1e-4 * (k == 3))
    hse = hsamples.std(0) / np.sqrt(n)
    assert np.all(np.abs(hess - hsamples.mean(0)) <= 5 * hse + 1e-4 * (k == 3))


def test_errors():
    X, y = _synthetic("bernoulli")
    with pytest.raises(InputError, match="poisson"):
        run_von(X, y, steps=1, likelihood="poisson")
    with pytest.raises(InputError, match="rows"):
        run_variational_gd(X, y[:-1], steps=1, lr=0.1)
    with pytest.raises(InputError, match="rule"):
        run_variational_gd(X, y.astype(int), steps=1, lr=0.1, likelihood="softmax")
    with pytest.raises(InputError, match="theta0"):
        run_variational_gd(X, y, steps=1, lr=0.1, theta0=np.zeros(3))
