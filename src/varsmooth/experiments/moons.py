"""Per-example label noise of IVON on two moons (the paper's blog post; Sec. 3.1 and 3.4).

Paper: "Variational Learning Induces Adaptive Label Smoothing" (2025). Trains logistic regression and a small MLP
with IVON through the one training engine (:func:`varsmooth.engine.train.train`), then scores every training example and
a grid over the input plane with the label noise of :mod:`varsmooth.noise.network` under IVON's posterior
``N(m, diag(sigma^2))``, ``sigma^2 = 1 / (ess (h + delta))``: the expected noise
``eps_i = softmax(f_i(m)) - mean_s softmax(f_i(theta_s))`` (Eq. 15, Monte Carlo), the RMS magnitude of the per-step
noise, and the linearized noise of Eq. 19. The blog's observation: the noise is largest where the prediction is
uncertain, near the decision boundary.

Config: ``n``, ``moons_noise``, ``test_fraction`` (data), ``models`` (``logreg``, ``mlp``), ``hidden`` (MLP widths),
``epochs``, ``batch_size``, ``lr``, ``ess_factor``, ``hess_init``, ``beta2`` (null: the engine's default),
``test_samples``, ``noise_samples`` (S), ``grid`` (map resolution per side), ``seed``, ``device``.
Outputs: ``results.csv`` (one row per model and training example: ``model, index, x1, x2, label, prob_class1,
noise_class1, magnitude, step_rms, linearized_rms``); ``moons_noise.png`` (per model: training points coloured
by expected-noise magnitude, maps of the expected and of the per-step RMS noise, the decision boundary); the
engine's run folders ``train-<model>/``. Summary per model: accuracies, mean magnitude, Spearman correlations of
the expected and per-step magnitudes with the margin ``|p - 1/2|`` (negative: more noise near the boundary; the
expected noise itself vanishes on the boundary, Fig. 2, so it peaks in bands beside it) and of the MC with the
linearized per-step RMS.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from scipy import stats

from .. import plots
from ..engine import TrainConfig, train
from ..engine.rundata import fetch
from ..errors import InputError
from ..io import write_csv
from ..noise.network import expected_label_noise, linearized_label_noise

ID = "moons"
DESCRIPTION = "Blog: per-example IVON label-noise map on two moons (logistic regression and an MLP)"
MODELS = ("logreg", "mlp")


def _train(cfg: dict[str, Any], model: str, out: Path, progress: bool):
    tc = TrainConfig(
        dataset="moons",
        data_options={"n": int(cfg["n"]), "noise": float(cfg["moons_noise"]), "seed": int(cfg["seed"]),
                      "test_fraction": float(cfg["test_fraction"])},
        model=model,
        model_options={"hidden": list(cfg["hidden"])} if model == "mlp" else {},
        method="ivon",
        epochs=int(cfg["epochs"]),
        batch_size=int(cfg["batch_size"]),
        lr=float(cfg["lr"]),
        ess_factor=float(cfg["ess_factor"]),
        hess_init=float(cfg["hess_init"]),
        beta2=None if cfg["beta2"] is None else float(cfg["beta2"]),
        test_samples=int(cfg["test_samples"]),
        seed=int(cfg["seed"]),
        device=str(cfg["device"]),
        progress=progress,
    )  # fmt: skip
    return train(tc, out / f"train-{model}")


def _score(result, cfg: dict[str, Any], progress: bool):
    run = result.run
    pos = run.train_pos
    x = fetch(run.data.train.features, run.pool_index[pos]).float()
    y = torch.as_tensor(run.labels[pos])
    kw = dict(samples=int(cfg["noise_samples"]), seed=int(cfg["seed"]), batch_size=1024, progress=progress)
    mc = expected_label_noise(result.model, x, result.optimizer, labels=y, **kw)
    lin = linearized_label_noise(result.model, x, result.optimizer, labels=y, **kw)
    lo, hi = x.min(0).values.numpy() - 0.5, x.max(0).values.numpy() + 0.5
    g = int(cfg["grid"])
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], g), np.linspace(lo[1], hi[1], g))
    grid = torch.as_tensor(np.c_[gx.ravel(), gy.ravel()], dtype=torch.float32)
    gmap = expected_label_noise(result.model, grid, result.optimizer, **kw)
    return x.numpy(), y.numpy(), mc, lin, (gx, gy, gmap)


def _plot(panels, path: Path) -> None:
    fig = Figure(figsize=(15, 4.2 * len(panels)), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(panels), 3))
    for row, (model, x, y, mc, (gx, gy, gmap)) in zip(axes, panels, strict=True):
        p1 = gmap.probs[:, 1].reshape(gx.shape)
        sc = row[0].scatter(x[:, 0], x[:, 1], c=mc.magnitude, cmap="viridis", s=14, edgecolors="none")
        fig.colorbar(sc, ax=row[0], label="||eps_i||")
        row[0].set_title(f"{model}: expected label noise per training example", fontsize=10)
        maps = ((gmap.magnitude, "expected noise ||eps(x)|| (Eq. 15)"), (gmap.step_rms, "per-step noise, RMS"))
        for ax, (values, title) in zip(row[1:], maps, strict=True):
            cf = ax.contourf(gx, gy, values.reshape(gx.shape), levels=20, cmap="magma")
            for k, marker in ((0, "o"), (1, "^")):
                ax.scatter(*x[y == k].T, marker=marker, s=10, facecolors="none", edgecolors="c", linewidths=0.6)
            fig.colorbar(cf, ax=ax)
            ax.set_title(f"{model}: {title}", fontsize=10)
        for ax in row:
            ax.contour(gx, gy, p1, levels=[0.5], colors="w" if ax is not row[0] else "k", linewidths=1)
            ax.set_xlabel("x1")
            ax.set_ylabel("x2")
    plots.save_figure(fig, path)


def run(cfg: dict[str, Any], out: Path, runtime=None) -> dict[str, Any]:
    models = list(cfg["models"])
    bad = [m for m in models if m not in MODELS]
    if not models or bad:
        raise InputError(f"models={cfg['models']!r} is not allowed; choose from: {', '.join(MODELS)}")
    if int(cfg["noise_samples"]) < 2 or int(cfg["grid"]) < 2:
        raise InputError(f"need noise_samples >= 2 and grid >= 2, got {cfg['noise_samples']}, {cfg['grid']}")
    progress = bool(runtime.progress) if runtime is not None else False
    rows, panels, summary = [], [], {}
    for model in models:
        result = _train(cfg, model, out, progress)
        x, y, mc, lin, gridded = _score(result, cfg, progress)
        for i in range(len(y)):
            rows.append({"model": model, "index": i, "x1": float(x[i, 0]), "x2": float(x[i, 1]), "label": int(y[i]),
                         "prob_class1": float(mc.probs[i, 1]), "noise_class1": float(mc.noise[i, 1]),
                         "magnitude": float(mc.magnitude[i]), "step_rms": float(mc.step_rms[i]),
                         "linearized_rms": float(lin.step_rms[i])})  # fmt: skip
        panels.append((model, x, y, mc, gridded))
        margin = np.abs(mc.probs[:, 1] - 0.5)
        summary[model] = {
            **{k: float(v) for k, v in result.metrics.items() if k in ("train_acc", "test_acc", "test_pred_acc")},
            "mean_magnitude": float(mc.magnitude.mean()),
            "max_magnitude": float(mc.magnitude.max()),
            "mean_step_rms": float(mc.step_rms.mean()),
            "spearman_magnitude_vs_margin": float(stats.spearmanr(mc.magnitude, margin)[0]),
            "spearman_step_rms_vs_margin": float(stats.spearmanr(mc.step_rms, margin)[0]),
            "spearman_mc_vs_linearized_rms": float(stats.spearmanr(mc.step_rms, lin.step_rms)[0]),
            "sigma_mean": float(np.mean([s.mean().item() for s in result.optimizer.posterior_std().values()])),
        }
    write_csv(out / "results.csv", rows)
    _plot(panels, out / "moons_noise.png")
    return {"models": summary, "train_examples": len(rows) // len(models), "noise_samples": int(cfg["noise_samples"])}
