"""Smoothed labels (paper Fig. 4, Sec. 4.2): class-averaged smoothed labels of IVON vs LS vs OLS.

Paper: "Variational Learning Induces Adaptive Label Smoothing" (2025), Sec. 4.2 and App. C.1. Each method's
smoothed labels form a K x K matrix whose row c averages the smoothed label vectors of the training examples
labelled c:

* IVON: ``M[c] = mean_{i: y_i = c} (e_c + eps_i)`` with the expected label noise of IVON's posterior
  ``eps_i = softmax(f_i(m)) - E_q[softmax(f_i(theta))]`` (Sec. 3.4; S Monte-Carlo samples). Each row sums
  to 1 because ``eps_i`` sums to 0.
* LS (Eq. 1): ``M = (1 - alpha) I + alpha / K``, the same for every example, no training needed.
* OLS (Zhang et al. 2021): the soft-label matrix it learned, row c = mean softmax of the training examples of
  class c it predicted correctly in the last epoch (:class:`varsmooth.losses.OnlineLabelSmoothing`).

What the bars show: for a network the posterior mean is more confident than the posterior average, so ``eps_i``
is mostly *positive* on the label and *negative* elsewhere (``M[c, c] > 1``, most off-diagonal entries < 0). The
paper's Fig. 4 draws positive bars on a log axis; we draw IVON's entries as magnitudes ``|M[c, j]|`` (the size of
its smoothing of label j, comparable to OLS's off-diagonal mass) and keep the signed matrix in ``matrices.npz``,
``matrices.csv`` and the ``ivon_signed.png`` heat map; ``summary.json`` reports the fraction of negative entries.

The two engine runs are a sweep (:func:`.sweep.run_sweep`). Files in ``OUT``: ``runs/{ivon,ols}/`` (engine runs),
``matrices.npz`` / ``matrices.csv`` (K x K per method), ``results.csv`` (tidy: method, metric, value, seed),
``smoothed_labels.png`` (Fig. 4) and ``ivon_signed.png``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.colors import SymLogNorm
from matplotlib.figure import Figure

from .. import plots
from ..errors import InputError
from ..io import atomic_open, write_csv
from ..plots import save_figure
from . import Runtime
from .common import load_cached, named_run, sweep_finished, torch_threads, train_sweep_run, write_results
from .comparison import RUN_FN, progress_note
from .gallery import ivon_gallery
from .grids import check_configs, require_data, run_config

ID = "smoothed-labels"
DESCRIPTION = (
    "Fig. 4: class-averaged smoothed labels y + eps of IVON vs LS ((1 - alpha) e_k + alpha/K) vs OLS (its learned "
    "soft-label matrix), K x K, bars on a log axis"
)


def class_average(labels, smoothed, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Row c = mean of ``smoothed[i]`` (N, K) over examples with ``labels[i] == c``; a class with no example gets a
    NaN row. Returns ``(matrix (K, K), counts (K,))``."""
    y = np.asarray(labels, dtype=np.int64)
    s = np.asarray(smoothed, dtype=np.float64)
    if s.ndim != 2 or s.shape != (len(y), num_classes):
        raise InputError(f"smoothed labels must have shape ({len(y)}, {num_classes}), got {s.shape}")
    counts = np.bincount(y, minlength=num_classes)
    sums = np.zeros((num_classes, num_classes))
    np.add.at(sums, y, s)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts[:, None], counts


def ls_matrix(num_classes: int, alpha: float) -> np.ndarray:
    """Label smoothing's smoothed labels (K, K): row k is ``(1 - alpha) e_k + alpha / K`` (Eq. 1)."""
    return (1.0 - alpha) * np.eye(num_classes) + alpha / num_classes


def _offdiag(m: np.ndarray) -> np.ndarray:
    return m[~np.eye(len(m), dtype=bool)]


def compare(matrices: dict[str, np.ndarray]) -> dict[str, Any]:
    """Per method: mean diagonal, mean off-diagonal mass per row, largest row-sum error; IVON vs OLS: Spearman
    correlation of the off-diagonal magnitudes (does IVON smooth towards the same classes as OLS?)."""
    from scipy.stats import spearmanr

    out: dict[str, Any] = {}
    for name, m in matrices.items():
        ok = np.isfinite(m).all(1)
        out[name] = {
            "diagonal_mean": float(np.diag(m)[ok].mean()),
            "offdiag_abs_mass_mean": float(np.abs(m[ok]).sum(1).mean() - np.abs(np.diag(m)[ok]).mean()),
            "row_sum_max_error": float(np.abs(m[ok].sum(1) - 1).max()),
            "frac_negative_offdiag": float((_offdiag(m) < 0).mean()),
        }
    if "ivon" in matrices and "ols" in matrices:
        a, b = np.abs(_offdiag(matrices["ivon"])), _offdiag(matrices["ols"])
        keep = np.isfinite(a) & np.isfinite(b)
        out["ivon_ols_offdiag_spearman"] = float(spearmanr(a[keep], b[keep]).statistic)
    return out


def plot_classes(spec, num_classes: int, seed: int) -> list[int]:
    """Classes to draw: null -> the first min(K, 10); an int n -> n classes drawn at random (seeded; the paper picks
    10 of CIFAR-100's); a list -> those."""
    if spec is None:
        return list(range(min(num_classes, 10)))
    if isinstance(spec, int):
        if not 1 <= spec <= num_classes:
            raise InputError(f"classes={spec} is not allowed; use 1..{num_classes}, a list or null")
        return sorted(np.random.default_rng(seed).choice(num_classes, size=spec, replace=False).tolist())
    classes = [int(c) for c in spec]
    if not classes or min(classes) < 0 or max(classes) >= num_classes:
        raise InputError(f"classes={spec} is not allowed; use class indices in [0, {num_classes})")
    return classes


def _heatmap(path: Path, eps: np.ndarray, classes: list[int], names: list[str]) -> None:
    sub = eps[np.ix_(classes, classes)]
    lim = max(float(np.nanmax(np.abs(sub))), 1e-12)
    fig = Figure(figsize=(5.6, 4.6), layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(sub, cmap="RdBu_r", norm=SymLogNorm(linthresh=lim * 1e-3, vmin=-lim, vmax=lim))
    ticks = [names[c] for c in classes]
    ax.set_xticks(range(len(classes)), ticks, fontsize=7, rotation=90 if len(classes) > 10 else 0)
    ax.set_yticks(range(len(classes)), ticks, fontsize=7)
    ax.set_xlabel("label index j")
    ax.set_ylabel("true class c")
    ax.set_title("IVON class-averaged noise eps[c, j] (signed; symlog)", fontsize=10)
    fig.colorbar(im, ax=ax, shrink=0.85)
    save_figure(fig, path)


def configs(cfg: dict[str, Any], *, progress: bool = False) -> list[dict[str, Any]]:
    """The IVON and OLS runs (:func:`.grids.run_config` configurations named ``ivon`` and ``ols``; the preset's
    ``ivon`` / ``ols`` mappings are each one's own options)."""
    require_data(cfg)
    corruption, seed = str(cfg["corruption"]), int(cfg["seed"])
    return [
        named_run(run_config(cfg, m, corruption, seed, **(cfg.get(m) or {})), m, cfg, progress=progress)
        for m in ("ivon", "ols")
    ]


def run(cfg: dict[str, Any], out: Path, runtime=None) -> dict:
    runtime = runtime or Runtime()
    progress = bool(cfg.get("progress", True)) and runtime.progress
    seed, alpha = int(cfg["seed"]), float(cfg["ls_alpha"])
    if not 0 <= alpha <= 1:
        raise InputError(f"ls_alpha={alpha} is not allowed; it must be in [0, 1]")
    sweep = configs(cfg, progress=progress)
    check_configs(sweep)
    with torch_threads(cfg.get("threads")):
        k = load_cached(sweep[0]["train"]).num_classes
        classes = plot_classes(cfg.get("classes"), k, seed)  # checked before training
        results, finished = sweep_finished(sweep, out, runtime, RUN_FN)
        if not finished:  # another shard's runs
            return {"description": DESCRIPTION, **progress_note(results, out)}
        ivon, ols = (train_sweep_run(c, out / "runs" / c["name"]) for c in sweep)  # finished: evaluated again
        g = ivon_gallery(ivon, samples=int(cfg["noise_samples"]), seed=seed, progress=progress)
    data = ivon.run.data
    y_onehot = np.eye(k)[g.labels]
    m_ivon, counts = class_average(g.labels, y_onehot + g.noise, k)
    m_ols = ols.method.ols.matrix.detach().cpu().double().numpy()
    matrices = {"ivon": m_ivon, "ls": ls_matrix(k, alpha), "ols": m_ols}
    with atomic_open(out / "matrices.npz", "wb") as f:
        np.savez_compressed(f, **matrices, ivon_noise=m_ivon - np.eye(k), counts=counts, classes=np.array(classes))
    write_csv(
        out / "matrices.csv",
        [
            {"method": name, "true_class": c, "label": j, "value": float(m[c, j])}
            for name, m in matrices.items()
            for c in range(k)
            for j in range(k)
        ],
    )
    names = [str(c) for c in (data.class_names or range(k))]
    plots.smoothed_label_bars(
        {"IVON |y + eps|": np.abs(m_ivon), f"LS alpha={alpha}": matrices["ls"], "OLS": m_ols},
        out / "smoothed_labels.png",
        classes=classes,
        class_names=names,
        title=f"class-averaged smoothed labels ({data.name}, {cfg.get('model')}); IVON as magnitudes",
    )
    _heatmap(out / "ivon_signed.png", m_ivon - np.eye(k), classes, names)

    stats = compare(matrices)
    rows = []
    for name in matrices:
        rows += [{"method": name, "metric": m, "value": v, "seed": seed} for m, v in stats[name].items()]
    for name, res in (("ivon", ivon), ("ols", ols)):
        for metric in ("test_acc", "test_pred_acc"):
            if metric in res.metrics:
                rows.append({"method": name, "metric": metric, "value": float(res.metrics[metric]), "seed": seed})
    if "ivon_ols_offdiag_spearman" in stats:
        rows.append(
            {
                "method": "ivon",
                "metric": "ols_offdiag_spearman",
                "value": stats["ivon_ols_offdiag_spearman"],
                "seed": seed,
            }
        )
    write_results(out, rows)
    return {
        "description": DESCRIPTION,
        "num_classes": k,
        "classes_plotted": classes,
        "ess": float(ivon.config.ess),
        "noise_samples": g.samples,
        "ivon_test_acc": float(ivon.metrics["test_acc"]),
        "ols_test_acc": float(ols.metrics["test_acc"]),
        **{f"{name}_stats": stats[name] for name in matrices},
        "ivon_ols_offdiag_spearman": stats.get("ivon_ols_offdiag_spearman"),
    }
