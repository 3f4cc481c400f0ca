"""Theorems 1 and 2 numerically: variational GD / VON coincide with GD / Newton on noisy labels.

Paper: "Variational Learning Induces Adaptive Label Smoothing" (2025), Thm. 1 (Eq. 6-12) and Thm. 2 (Eq. 16-18,
App. A.1 Eq. 22-24). For logistic and softmax regression on each dataset, runs the variational algorithm and its
twin from the same start: variational GD with ``q_t = N(theta_t, I)`` against GD with labels
``y + eps_t``, ``eps_t = A'(f_t) - E_{q_t}[A'(f)]`` (Eq. 9, 15), and VON with a full covariance and ``rho = 1``
(Eq. 17) against Newton with noisy labels (Eq. 24) and the matching Hessian noise (see
:mod:`varsmooth.noise.variational`), and records the largest parameter difference at every step.

Config: ``datasets`` (``synthetic``: Gaussian blobs; ``moons``: the bundled two moons), ``n`` examples,
``classes`` (synthetic softmax), ``steps``, ``lr`` (GD), ``rho`` (VON), ``prior_precision``, ``qmc_points``,
``qmc_replicates`` (the softmax rule shared by both sides), ``seed``, ``tolerance``.
Outputs: ``results.csv`` (``dataset, likelihood, algorithm, step, max_abs_diff, label_noise_rms``),
``theorems_diff.png``, ``theorems_noise.png``; the summary holds the largest difference per run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .. import plots
from ..errors import InputError
from ..io import write_csv
from ..noise import SoftmaxQMC
from ..noise import variational as V

ID = "theorems"
DESCRIPTION = "Thm. 1, 2: variational GD / VON vs GD / Newton with noisy labels (max abs difference per step)"
DATASETS = ("synthetic", "moons")


def dataset(name: str, likelihood: str, cfg: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Features (N, P) with a bias column and labels ((N,) floats for logistic, class indices for softmax)."""
    n, seed = int(cfg["n"]), int(cfg["seed"])
    if name == "synthetic":
        k = 2 if likelihood == "bernoulli" else int(cfg["classes"])
        rng = np.random.default_rng(seed)
        centers = rng.normal(scale=1.5, size=(k, 3))
        y = rng.integers(0, k, size=n)
        x = centers[y] + rng.normal(size=(n, 3))
    elif name == "moons":
        from ..data import load_dataset

        split = load_dataset("moons", n=n, noise=0.2, seed=seed).train
        x, y = split.features.numpy().astype(np.float64), split.labels.numpy()
    else:
        raise InputError(f"unknown dataset {name!r} for theorems; choose from: {', '.join(DATASETS)}")
    X = np.c_[x, np.ones(len(x))]
    return X, (y.astype(np.float64) if likelihood == "bernoulli" else y.astype(np.int64))


def _pair(algorithm: str, X, y, likelihood: str, rule, cfg):
    common = dict(steps=int(cfg["steps"]), likelihood=likelihood, rule=rule,
                  prior_precision=float(cfg["prior_precision"]))  # fmt: skip
    if algorithm == "gd":
        return V.run_variational_gd(X, y, lr=cfg["lr"], **common), V.run_noisy_gd(X, y, lr=cfg["lr"], **common)
    return V.run_von(X, y, rho=cfg["rho"], **common), V.run_noisy_newton(X, y, rho=cfg["rho"], **common)


def run(cfg: dict[str, Any], out: Path, runtime=None) -> dict[str, Any]:
    if int(cfg["steps"]) < 1 or int(cfg["n"]) < 10:
        raise InputError(f"need steps >= 1 and n >= 10, got steps={cfg['steps']}, n={cfg['n']}")
    for key, low in (("classes", 2), ("qmc_points", 1), ("qmc_replicates", 1), ("steps", 1)):
        if not low <= cfg[key] <= 10**6:
            raise InputError(f"{key}={cfg[key]} is not allowed; it must be an integer in [{low}, 10**6]")
    for key in ("lr", "rho", "prior_precision", "tolerance"):
        if not cfg[key] > 0:
            raise InputError(f"{key}={cfg[key]} is not allowed; it must be a positive number")
    rows, diffs, noise_curves, worst = [], {}, {}, {}
    for name in cfg["datasets"]:
        for likelihood in ("bernoulli", "softmax"):
            X, y = dataset(name, likelihood, cfg)
            rule = None
            if likelihood == "softmax":
                k = int(y.max()) + 1
                rule = SoftmaxQMC(k, points=cfg["qmc_points"], replicates=cfg["qmc_replicates"], seed=cfg["seed"])
            for algorithm in ("gd", "newton"):
                var, twin = _pair(algorithm, X, y, likelihood, rule, cfg)
                gap = np.abs(var.thetas - twin.thetas).reshape(len(var.thetas), -1).max(axis=1)
                if var.covs is not None:
                    gap = np.maximum(gap, np.abs(var.covs - twin.covs).reshape(len(gap), -1).max(axis=1))
                eps = twin.label_noise.reshape(len(gap) - 1, -1)
                rms = np.r_[np.sqrt(np.mean(eps**2, axis=1)), np.nan]
                label = f"{name} {likelihood} {'VON vs Newton' if algorithm == 'newton' else 'var. GD vs GD'}"
                for t in range(len(gap)):
                    rows.append({"dataset": name, "likelihood": likelihood, "algorithm": algorithm, "step": t,
                                 "max_abs_diff": float(gap[t]), "label_noise_rms": float(rms[t])})  # fmt: skip
                diffs[label] = np.maximum(gap, 1e-18)  # log scale: exact agreement drawn at 1e-18
                noise_curves[label] = (np.arange(len(gap) - 1), rms[:-1])
                worst[f"{name}/{likelihood}/{algorithm}"] = float(gap.max())
    write_csv(out / "results.csv", rows,
              ["dataset", "likelihood", "algorithm", "step", "max_abs_diff", "label_noise_rms"])  # fmt: skip
    steps = np.arange(int(cfg["steps"]) + 1)
    plots.line_plot(
        steps,
        diffs,
        out / "theorems_diff.png",
        xlabel="step",
        logy=True,
        ylabel="max |variational - noisy-label twin|",
        title="Theorems 1, 2: the twins coincide",
    )
    plots.line_plot(
        None,
        noise_curves,
        out / "theorems_noise.png",
        xlabel="step",
        ylabel="RMS label noise eps_t",
        title="Per-step label noise of the twins (Eq. 9, 24)",
    )
    tol = float(cfg["tolerance"])
    return {
        "max_abs_diff": worst,
        "max_abs_diff_overall": max(worst.values()),
        "tolerance": tol,
        "all_within_tolerance": bool(max(worst.values()) <= tol),
        "steps": int(cfg["steps"]),
    }
