"""Variational GD and VON for logistic / softmax regression, and their noisy-label twins (GD / Newton).

Paper: "Variational Learning Induces Adaptive Label Smoothing" (2025), Sec. 3.1-3.3 and App. A.1.
Loss ``l_i = -y_i^T f_i + A(f_i)`` with ``f_i = phi_i^T theta`` (Eq. 7, 14), quadratic prior
``R_0 = (delta / 2) ||theta||^2`` (the paper's ``delta = 1``), ``l_bar = sum_i l_i + R_0`` (Eq. 5).

* **Theorem 1.** With ``q_t = N(theta_t, I)``, a gradient step on the variational objective (Eq. 6),
  ``theta_{t+1} = theta_t - rho (delta theta_t + sum_i phi_i [E_{q_t}[A'(f_i)] - y_i])``, equals the plain GD step
  of Eq. 8 with ``y_i`` replaced by ``y_i + eps_{i|t}``, ``eps_{i|t} = A'(f_{i|t}) - E_{q_t}[A'(f_i)]`` (Eq. 9, 15),
  ``q_t(f_i) = N(phi_i^T theta_t, phi_i^T phi_i)`` (Eq. 11).
* **Theorem 2.** VON (Eq. 17) with a full covariance, ``Sigma_{t+1}^{-1} = (1 - rho) Sigma_t^{-1} +
  rho E_{q_t}[grad^2 l_bar]`` and ``theta_{t+1} = theta_t - rho Sigma_{t+1} E_{q_t}[grad l_bar]``, equals Newton's
  step (Eq. 16, 22) with labels ``y_i + eps_{i|t}`` where the noise now uses ``q_t(f_i) = N(f_{i|t},
  phi_i^T Sigma_t phi_i)`` (Eq. 18, 24), and with the Hessian noise the paper mentions after Eq. 24: the curvature
  weight ``A''(f_{i|t})`` is replaced by ``A''(f_{i|t}) - eta_{i|t}``, ``eta_{i|t} = A''(f_{i|t}) - E_{q_t}[A''(f_i)]``.
  ``rho = 1`` gives the Newton-like update the paper states; other ``rho`` damp both sides identically.

What is exact and what is shared: for ``q(theta) = N(m, S)`` the expectation of ``grad l_i(theta) =
phi_i (A'(f_i) - y_i)`` over ``theta`` equals ``phi_i (E_{q(f_i)}[A'(f_i)] - y_i)`` exactly (``f_i`` is Gaussian),
likewise for the Hessian ``phi_i phi_i^T A''(f_i)``. Logistic: these 1-D expectations are computed by
:func:`~varsmooth.noise.glm.expected_sigmoid` / ``expected_sigmoid_prime`` (quadrature, exact to ~1e-15). Softmax:
K-dim expectations by the :class:`~varsmooth.noise.glm.SoftmaxQMC` rule passed as ``rule``; the variational step and
its twin's noise use the same rule (the same fixed points), so they see the same numbers and the twins agree to
rounding, while both carry the same QMC error relative to the true expectation. The twins compute their noise from
their own iterates (never from the variational run's), so agreement is a real check of the theorems' algebra.

Shapes: ``X`` (N, P) features ``phi_i``; logistic ``y`` (N,) in [0, 1], ``theta`` (P,); softmax ``y`` (N,) class
indices or (N, K) (soft) labels, ``theta`` (P, K), covariances over ``theta.ravel()`` (row-major, D = P K).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import linalg, special

from ..errors import InputError
from .glm import Likelihood, SoftmaxQMC, expected_sigmoid, expected_sigmoid_prime

__all__ = [
    "Trajectory",
    "gd_step",
    "newton_step",
    "variational_gd_step",
    "noisy_gd_step",
    "von_step",
    "noisy_newton_step",
    "run_variational_gd",
    "run_noisy_gd",
    "run_von",
    "run_noisy_newton",
]


@dataclass
class Trajectory:
    """Iterates of one run. ``thetas`` (T+1, P) or (T+1, P, K); ``covs`` (T+1, D, D) for VON / Newton;
    ``label_noise`` (T, N) or (T, N, K) and ``hessian_noise`` (T, N) or (T, N, K, K) for the twins."""

    thetas: np.ndarray
    covs: np.ndarray | None = None
    label_noise: np.ndarray | None = None
    hessian_noise: np.ndarray | None = None


def _lik(likelihood) -> Likelihood:
    lik = Likelihood.parse(likelihood)
    if lik is Likelihood.POISSON:
        raise InputError(f"likelihood {lik.value!r} not supported here; choose 'bernoulli' (logistic) or 'softmax'")
    return lik


def _data(X, y, lik: Likelihood) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or not np.all(np.isfinite(X)):
        raise InputError(f"X must be a finite (N, P) array, got shape {X.shape}")
    y = np.asarray(y)
    if y.shape[0] != X.shape[0]:
        raise InputError(f"X has {X.shape[0]} rows but y has {y.shape[0]}")
    if lik is Likelihood.SOFTMAX and y.ndim == 1:
        if not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
            raise InputError("softmax labels must be class indices >= 0 or an (N, K) label matrix")
        y = np.eye(int(y.max()) + 1)[y]
    return X, y.astype(np.float64)


def _theta0(theta0, X, y, lik) -> np.ndarray:
    shape = (X.shape[1],) if lik is Likelihood.BERNOULLI else (X.shape[1], y.shape[1])
    theta = np.zeros(shape) if theta0 is None else np.array(theta0, dtype=np.float64)
    if theta.shape != shape:
        raise InputError(f"theta0 must have shape {shape}, got {theta.shape}")
    return theta


def _mean_fn(f, lik):
    return special.expit(f) if lik is Likelihood.BERNOULLI else special.softmax(f, axis=-1)


def _curvature(f, lik):
    """``A''(f)``: (N,) for logistic, (N, K, K) for softmax."""
    p = _mean_fn(f, lik)
    if lik is Likelihood.BERNOULLI:
        return p * (1 - p)
    return np.einsum("nk,kl->nkl", p, np.eye(p.shape[1])) - p[:, :, None] * p[:, None, :]


def _f_cov(X, cov, lik, k):
    """Covariance of f_i under theta ~ N(., cov): (N,) logistic; (N, K) diagonal or (N, K, K) full for softmax."""
    if cov is None:  # identity covariance (Theorem 1)
        sq = np.einsum("np,np->n", X, X)
        return sq if lik is Likelihood.BERNOULLI else np.repeat(sq[:, None], k, axis=1)
    if lik is Likelihood.BERNOULLI:
        return np.einsum("np,pq,nq->n", X, cov, X)
    p = X.shape[1]
    return np.einsum("np,nq,pkql->nkl", X, X, cov.reshape(p, k, p, k))


def _expectations(theta, X, cov, lik, rule, hessian):
    """``(f_mean, E[A'(f)], E[A''(f)] or None)`` under q(theta) = N(theta, cov) (cov None = identity)."""
    f = X @ theta
    k = None if lik is Likelihood.BERNOULLI else theta.shape[1]
    var = _f_cov(X, cov, lik, k)
    if lik is Likelihood.BERNOULLI:
        return f, expected_sigmoid(f, var), (expected_sigmoid_prime(f, var) if hessian else None)
    if rule is None:
        raise InputError("softmax needs a SoftmaxQMC rule shared by the variational step and its twin")
    out = rule.moments(f, var, hessian=hessian)
    return f, out[0], (out[2] if hessian else None)


def _gradient(theta, X, residual, delta):
    return delta * theta + X.T @ residual


def _hessian(X, weights, delta, lik):
    if lik is Likelihood.BERNOULLI:
        h = (X * weights[:, None]).T @ X
    else:
        p, k = X.shape[1], weights.shape[1]
        h = np.einsum("np,nq,nkl->pkql", X, X, weights).reshape(p * k, p * k)
    return h + delta * np.eye(h.shape[0])


def _spd_solve(a, b):
    return linalg.cho_solve(linalg.cho_factor(a), b)


def _inv(precision):
    return _spd_solve(precision, np.eye(precision.shape[0]))


def gd_step(theta, X, labels, *, likelihood="bernoulli", lr: float, prior_precision: float = 1.0) -> np.ndarray:
    """Plain GD on Eq. 5 (Eq. 8): ``theta - lr (delta theta + X^T (A'(X theta) - labels))``; labels may be soft."""
    lik = _lik(likelihood)
    return theta - lr * _gradient(theta, X, _mean_fn(X @ theta, lik) - labels, prior_precision)


def newton_step(
    theta,
    X,
    labels,
    *,
    likelihood="bernoulli",
    prior_precision: float = 1.0,
    curvature=None,
    precision=None,
    rho: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Newton's step (Eq. 16, 22) -> ``(theta_new, H_new)``, ``H_new = (1 - rho) precision + rho H``.

    ``H = delta I + sum_i phi_i phi_i^T curvature_i`` with ``curvature`` (N,) / (N, K, K) defaulting to
    ``A''(f_i)``; pass the noisy curvature to get the twin of VON. ``rho = 1`` is the plain Newton step.
    """
    lik = _lik(likelihood)
    f = X @ theta
    w = _curvature(f, lik) if curvature is None else curvature
    h = _hessian(X, w, prior_precision, lik)
    if rho != 1.0:
        h = (1 - rho) * precision + rho * h
    g = _gradient(theta, X, _mean_fn(f, lik) - labels, prior_precision)
    return theta - rho * _spd_solve(h, g.ravel()).reshape(theta.shape), h


def variational_gd_step(
    theta, X, y, *, likelihood="bernoulli", lr: float, prior_precision: float = 1.0, rule: SoftmaxQMC | None = None
) -> np.ndarray:
    """GD on the variational objective (Eq. 6) with ``q = N(theta, I)`` (Theorem 1)."""
    lik = _lik(likelihood)
    _, mean, _ = _expectations(theta, X, None, lik, rule, hessian=False)
    return theta - lr * _gradient(theta, X, mean - y, prior_precision)


def noisy_gd_step(
    theta, X, y, *, likelihood="bernoulli", lr: float, prior_precision: float = 1.0, rule: SoftmaxQMC | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Theorem 1's twin: ``(gd_step(theta, X, y + eps), eps)`` with eps of Eq. 9 / 15 at ``theta``."""
    lik = _lik(likelihood)
    f, mean, _ = _expectations(theta, X, None, lik, rule, hessian=False)
    eps = _mean_fn(f, lik) - mean
    return gd_step(theta, X, y + eps, likelihood=lik, lr=lr, prior_precision=prior_precision), eps


def von_step(
    theta,
    precision,
    X,
    y,
    *,
    likelihood="bernoulli",
    prior_precision: float = 1.0,
    rho: float = 1.0,
    rule: SoftmaxQMC | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One VON step (Eq. 17) -> ``(theta_new, precision_new)``; ``precision`` is ``Sigma_t^{-1}`` (D, D)."""
    lik = _lik(likelihood)
    cov = _inv(precision)
    _, mean, hess = _expectations(theta, X, cov, lik, rule, hessian=True)
    new_precision = (1 - rho) * precision + rho * _hessian(X, hess, prior_precision, lik)
    g = _gradient(theta, X, mean - y, prior_precision)
    return theta - rho * _spd_solve(new_precision, g.ravel()).reshape(theta.shape), new_precision


def noisy_newton_step(
    theta,
    precision,
    X,
    y,
    *,
    likelihood="bernoulli",
    prior_precision: float = 1.0,
    rho: float = 1.0,
    rule: SoftmaxQMC | None = None,
):
    """Theorem 2's twin -> ``(theta_new, precision_new, eps, eta)``.

    ``eps = A'(f_{i|t}) - E[A'(f_i)]`` (Eq. 24) and ``eta = A''(f_{i|t}) - E[A''(f_i)]`` under
    ``N(f_{i|t}, phi_i^T Sigma_t phi_i)``; Newton's step with labels ``y + eps`` and curvature ``A'' - eta``.
    """
    lik = _lik(likelihood)
    cov = _inv(precision)
    f, mean, hess = _expectations(theta, X, cov, lik, rule, hessian=True)
    eps = _mean_fn(f, lik) - mean
    curv = _curvature(f, lik)
    eta = curv - hess
    theta_new, h = newton_step(
        theta,
        X,
        y + eps,
        likelihood=lik,
        prior_precision=prior_precision,
        curvature=curv - eta,
        precision=precision,
        rho=rho,
    )
    return theta_new, h, eps, eta


def _precision0(cov0, theta, prior_precision):
    d = theta.size
    if cov0 is None:
        return prior_precision * np.eye(d)
    cov0 = np.asarray(cov0, dtype=np.float64)
    if cov0.shape != (d, d):
        raise InputError(f"cov0 must have shape ({d}, {d}), got {cov0.shape}")
    return _inv(cov0)


def run_variational_gd(
    X,
    y,
    *,
    steps: int,
    lr: float,
    likelihood="bernoulli",
    prior_precision: float = 1.0,
    theta0=None,
    rule: SoftmaxQMC | None = None,
) -> Trajectory:
    """``steps`` steps of Theorem 1's variational GD from ``theta0`` (default 0)."""
    lik = _lik(likelihood)
    X, y = _data(X, y, lik)
    thetas = [_theta0(theta0, X, y, lik)]
    for _ in range(steps):
        thetas.append(
            variational_gd_step(thetas[-1], X, y, likelihood=lik, lr=lr, prior_precision=prior_precision, rule=rule)
        )
    return Trajectory(np.stack(thetas))


def run_noisy_gd(
    X,
    y,
    *,
    steps: int,
    lr: float,
    likelihood="bernoulli",
    prior_precision: float = 1.0,
    theta0=None,
    rule: SoftmaxQMC | None = None,
) -> Trajectory:
    """``steps`` plain GD steps with labels ``y + eps_t`` (Theorem 1's twin); returns the per-step noise."""
    lik = _lik(likelihood)
    X, y = _data(X, y, lik)
    thetas, noise = [_theta0(theta0, X, y, lik)], []
    for _ in range(steps):
        theta, eps = noisy_gd_step(thetas[-1], X, y, likelihood=lik, lr=lr, prior_precision=prior_precision, rule=rule)
        thetas.append(theta)
        noise.append(eps)
    return Trajectory(np.stack(thetas), label_noise=np.stack(noise) if noise else None)


def run_von(
    X,
    y,
    *,
    steps: int,
    likelihood="bernoulli",
    prior_precision: float = 1.0,
    rho: float = 1.0,
    theta0=None,
    cov0=None,
    rule: SoftmaxQMC | None = None,
) -> Trajectory:
    """``steps`` VON steps (Eq. 17) from ``N(theta0, cov0)`` (defaults: 0 and the prior ``I / delta``)."""
    lik = _lik(likelihood)
    X, y = _data(X, y, lik)
    theta = _theta0(theta0, X, y, lik)
    precision = _precision0(cov0, theta, prior_precision)
    thetas, covs = [theta], [_inv(precision)]
    for _ in range(steps):
        theta, precision = von_step(
            theta, precision, X, y, likelihood=lik, prior_precision=prior_precision, rho=rho, rule=rule
        )
        thetas.append(theta)
        covs.append(_inv(precision))
    return Trajectory(np.stack(thetas), covs=np.stack(covs))


def run_noisy_newton(
    X,
    y,
    *,
    steps: int,
    likelihood="bernoulli",
    prior_precision: float = 1.0,
    rho: float = 1.0,
    theta0=None,
    cov0=None,
    rule: SoftmaxQMC | None = None,
) -> Trajectory:
    """``steps`` Newton steps with noisy labels and curvature (Theorem 2's twin); per-step noises returned."""
    lik = _lik(likelihood)
    X, y = _data(X, y, lik)
    theta = _theta0(theta0, X, y, lik)
    precision = _precision0(cov0, theta, prior_precision)
    thetas, covs, eps_all, eta_all = [theta], [_inv(precision)], [], []
    for _ in range(steps):
        theta, precision, eps, eta = noisy_newton_step(
            theta, precision, X, y, likelihood=lik, prior_precision=prior_precision, rho=rho, rule=rule
        )
        thetas.append(theta)
        covs.append(_inv(precision))
        eps_all.append(eps)
        eta_all.append(eta)
    return Trajectory(
        np.stack(thetas),
        covs=np.stack(covs),
        label_noise=np.stack(eps_all) if eps_all else None,
        hessian_noise=np.stack(eta_all) if eta_all else None,
    )
