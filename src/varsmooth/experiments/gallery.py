"""Per-example induced label noise of a trained IVON run, and its gallery (paper Fig. 1 and 3).

Paper: "Variational Learning Induces Adaptive Label Smoothing" (2025), Sec. 3.4 and 4.1. After training with IVON,
the posterior ``q = N(m, diag(sigma^2))``, ``sigma^2 = 1 / (ess (h + delta))``, turns the label ``y_i`` (one-hot
``e_{y_i}``) of training example ``i`` into ``y_i + eps_i`` with the expected label noise (Eq. 15)

    eps_i = softmax(f_i(m)) - E_q[softmax(f_i(theta))]        (K,), S Monte-Carlo samples,

computed by :func:`varsmooth.noise.network.label_noise`. We keep its magnitude ``||eps_i||_2`` (the ordering of
Fig. 3) and the noise on the given label ``eps_i[y_i]``. Label smoothing with rate ``alpha`` (Eq. 1) adds
``alpha (u - e_{y_i})`` to every example: magnitude ``alpha sqrt(1 - 1/K)``, on the label ``-alpha (1 - 1/K)``.

:func:`ivon_gallery` computes the noise of a run's training examples (a :class:`Gallery`); :func:`write_gallery`
writes ``noise.npz`` (per-example arrays), ``top_bottom.csv`` (the ``top_k`` highest- and lowest-noise
examples), ``top_noise.png`` / ``bottom_noise.png`` (Fig. 3), ``class_pair.png`` (Fig. 1: a regular and an
atypical example of one class, IVON vs LS noise) and ``noise_histogram.png``; when the true labels are known
(synthetic corruption), ``suspects_predictive.png`` too (the top-k by the posterior predictive's
``1 - p_pred[y]``, ``p_pred = p_mean - eps``). Used by the ``noise-gallery``, ``smoothed-labels`` and ``demo``
experiments.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from .. import plots
from ..detect.scores import detection_metrics, rank_suspects
from ..engine.rundata import fetch
from ..errors import InputError
from ..io import atomic_open, write_csv
from ..noise.network import label_noise
from ..plots import as_hw_images, save_figure

__all__ = ["Gallery", "class_pair", "detection", "image_fn", "ivon_gallery", "ls_noise", "write_gallery"]


def check_gallery_options(cfg: dict[str, Any]) -> None:
    """InputError unless ``ls_alpha`` is in [0, 1], ``top_k`` and ``noise_samples`` are positive integers and
    ``pair_class`` is null or a class index (checked before any training)."""
    alpha, top_k, samples, pair = cfg.get("ls_alpha", 0.1), cfg["top_k"], cfg["noise_samples"], cfg.get("pair_class")
    if not 0 <= alpha <= 1:
        raise InputError(f"ls_alpha={alpha} is not allowed; it must be in [0, 1]")
    for key, value in (("top_k", top_k), ("noise_samples", samples)):
        if not isinstance(value, int) or not 1 <= value <= 10**6:
            raise InputError(f"{key}={value!r} is not allowed; it must be an integer in [1, 10**6]")
    if pair is not None and not (isinstance(pair, int) and 0 <= pair < 10**6):
        raise InputError(f"pair_class={pair!r} is not allowed; it must be null or a class index >= 0")


def ls_noise(labels, num_classes: int, alpha: float) -> np.ndarray:
    """Label smoothing's noise ``alpha (u - e_y)`` (N, K) for labels (N,) (paper Eq. 1)."""
    y = np.asarray(labels, dtype=np.int64)
    return alpha * (np.full((len(y), num_classes), 1.0 / num_classes) - np.eye(num_classes)[y])


@dataclass
class Gallery:
    """IVON label noise of the N training examples of one run (numpy; rows in pool order)."""

    positions: np.ndarray  # (N,) positions in the run's pool
    index: np.ndarray  # (N,) indices into the dataset's training split
    labels: np.ndarray  # (N,) labels trained on
    clean_labels: np.ndarray | None  # (N,) true labels when known
    noise: np.ndarray  # (N, K) expected noise eps_i
    stderr: np.ndarray | None  # (N, K) its Monte-Carlo standard error
    probs: np.ndarray  # (N, K) softmax at the posterior mean
    samples: int

    @property
    def magnitude(self) -> np.ndarray:
        """(N,) ``||eps_i||_2``."""
        return np.linalg.norm(self.noise, axis=1)

    @property
    def label_noise(self) -> np.ndarray:
        """(N,) ``eps_i[y_i]``, the noise on the given label."""
        return self.noise[np.arange(len(self.labels)), self.labels]

    @property
    def predictive_suspicion(self) -> np.ndarray:
        """(N,) ``1 - p_pred[y_i]`` with the posterior predictive ``p_pred = p_mean - eps`` (the same MC draws)."""
        return 1.0 - (self.probs - self.noise)[np.arange(len(self.labels)), self.labels]

    @property
    def order(self) -> np.ndarray:
        """(N,) examples from highest to lowest magnitude (ties: smaller position first)."""
        return rank_suspects(self.magnitude)


def train_inputs(run, positions: np.ndarray):
    """Features of pool ``positions``: a tensor, or a lazy Subset of a map-style dataset."""
    feats = run.data.train.features
    idx = run.pool_index[positions]
    if isinstance(feats, torch.Tensor):
        return feats[torch.from_numpy(idx)]
    return torch.utils.data.Subset(feats, idx.tolist())


def ivon_gallery(
    result, *, samples: int, seed: int, method: str = "mc", batch_size: int = 512, progress: bool = False
) -> Gallery:
    """Expected IVON label noise of every training example (validation examples excluded) of ``result``."""
    if not getattr(result.method, "variational", False):
        raise InputError(f"the noise gallery needs an IVON run, got method {result.config.method!r}")
    run = result.run
    pos = run.train_pos
    labels = run.labels[pos]
    nn_ = label_noise(
        result.model,
        train_inputs(run, pos),
        result.method.optimizer,
        method=method,
        labels=labels,
        samples=samples,
        seed=seed,
        batch_size=batch_size,
        progress=progress,
    )
    clean = None if run.clean_labels is None else run.clean_labels[pos]
    return Gallery(pos, run.pool_index[pos], labels, clean, nn_.noise, nn_.stderr, nn_.probs, samples)


def image_fn(run, g: Gallery) -> Callable[[np.ndarray], np.ndarray]:
    """``rows -> images`` (len(rows), ...) of gallery rows, read from the run's training features on demand."""
    return lambda rows: fetch(run.data.train.features, g.index[np.asarray(rows)]).cpu().numpy()


def label_text(g: Gallery, i: int, class_names) -> str:
    name = class_names[g.labels[i]]
    if g.clean_labels is not None and g.clean_labels[i] != g.labels[i]:
        return f"y={name} (true {class_names[g.clean_labels[i]]})"
    return f"y={name}"


def write_gallery(
    out: Path,
    g: Gallery,
    images: Callable[[np.ndarray], Any],
    *,
    num_classes: int,
    class_names,
    alpha: float,
    top_k: int,
    pair_class: int | None,
    seed: int,
    title: str = "",
) -> tuple[dict, list[dict]]:
    """Write noise.npz, top_bottom.csv and the gallery PNGs into ``out``; return (summary, tidy rows).

    ``images(rows)``: the images (len(rows), ...) of gallery rows ``rows`` (plots only; see :func:`image_fn`).
    """
    n = len(g.labels)
    if n < 2:
        raise InputError(f"the noise gallery needs at least 2 training examples, got {n}")
    k = max(1, min(int(top_k), n // 2))
    mag, lab, order = g.magnitude, g.label_noise, g.order
    ls = ls_noise(g.labels, num_classes, alpha)
    ls_mag, ls_lab = alpha * np.sqrt(1.0 - 1.0 / num_classes), -alpha * (1.0 - 1.0 / num_classes)
    arrays = {
        "positions": g.positions,
        "index": g.index,
        "labels": g.labels,
        "ivon_noise": g.noise,
        "ivon_magnitude": mag,
        "ivon_label_noise": lab,
        "probs_mean": g.probs,
        "order": order,
        "ls_noise": ls,
        "ls_magnitude": np.linalg.norm(ls, axis=1),
    }
    if g.stderr is not None:
        arrays["ivon_stderr"] = g.stderr
    if g.clean_labels is not None:
        arrays["clean_labels"] = g.clean_labels
        arrays["is_noisy"] = g.labels != g.clean_labels
        arrays["predictive_suspicion"] = g.predictive_suspicion
    with atomic_open(out / "noise.npz", "wb") as f:
        np.savez_compressed(f, **arrays)

    pred = g.probs.argmax(1)
    csv_rows = []
    for group, idx in (("top", order[:k]), ("bottom", order[::-1][:k])):
        for r, i in enumerate(idx, start=1):
            csv_rows.append(
                {
                    "group": group,
                    "rank": r,
                    "row": int(i),
                    "position": int(g.positions[i]),
                    "index": int(g.index[i]),
                    "label": int(g.labels[i]),
                    "clean_label": "" if g.clean_labels is None else int(g.clean_labels[i]),
                    "prediction": int(pred[i]),
                    "p_label": float(g.probs[i, g.labels[i]]),
                    "ivon_magnitude": float(mag[i]),
                    "ivon_label_noise": float(lab[i]),
                    "ls_magnitude": float(ls_mag),
                    "ls_label_noise": float(ls_lab),
                }
            )
    write_csv(out / "top_bottom.csv", csv_rows)

    names = [str(c) for c in (class_names or range(num_classes))]
    for group, idx in (("top", order[:k]), ("bottom", order[::-1][:k])):
        plots.image_grid(
            images(idx),
            mag[idx],
            out / f"{group}_noise.png",
            ncols=min(8, k),
            labels=[label_text(g, i, names) for i in idx],
            value_name="|eps|",
            title=f"{title}{'highest' if group == 'top' else 'lowest'} IVON label noise "
            f"(LS: {ls_mag:.3f} for every example)",
        )
    plots.noise_histogram(
        {"IVON ||eps||": mag, f"LS alpha={alpha}": np.full(n, ls_mag)},
        out / "noise_histogram.png",
        xlabel="label-noise magnitude ||eps||_2",
        logy=True,
        title=f"{title}label-noise magnitudes",
    )
    pair = class_pair(g, pair_class)
    if pair is not None:
        _pair_figure(out / "class_pair.png", images, g, pair, ls, names)
    if g.clean_labels is not None:  # known flips: also show the posterior predictive's suspects
        sus = g.predictive_suspicion
        idx = rank_suspects(sus)[:k]
        plots.image_grid(
            images(idx),
            sus[idx],
            out / "suspects_predictive.png",
            ncols=min(8, k),
            labels=[label_text(g, i, names) for i in idx],
            value_name="1-p(y)",
            title=f"{title}most suspect by IVON's posterior predictive 1 - p_pred[y]",
        )

    summary = {
        "n_examples": n,
        "noise_samples": g.samples,
        "top_k": k,
        "ivon_noise_magnitude": _stats(mag),
        "ivon_label_noise": _stats(lab),
        "ls_noise_magnitude": float(ls_mag),
        "ls_label_noise": float(ls_lab),
        "frac_ivon_above_ls": float((mag > ls_mag).mean()),
        "train_error_at_mean": float((pred != g.labels).mean()),
        "top_k_error_at_mean": float((pred[order[:k]] != g.labels[order[:k]]).mean()),
        "bottom_k_error_at_mean": float((pred[order[::-1][:k]] != g.labels[order[::-1][:k]]).mean()),
        "mc_stderr_mean": None if g.stderr is None else float(g.stderr.mean()),
    }
    if pair is not None:
        summary["class_pair"] = {
            "class": int(pair[0]),
            "regular_row": int(pair[1]),
            "atypical_row": int(pair[2]),
            "regular_magnitude": float(mag[pair[1]]),
            "atypical_magnitude": float(mag[pair[2]]),
        }
    rows = [
        {"method": "ivon", "metric": f"noise_magnitude_{s}", "value": v, "seed": seed}
        for s, v in summary["ivon_noise_magnitude"].items()
    ]
    rows += [
        {"method": "ivon", "metric": f"label_noise_{s}", "value": v, "seed": seed}
        for s, v in summary["ivon_label_noise"].items()
    ]
    rows += [
        {"method": "ls", "metric": "noise_magnitude_mean", "value": float(ls_mag), "seed": seed},
        {"method": "ls", "metric": "label_noise_mean", "value": float(ls_lab), "seed": seed},
    ]
    for m in ("train_error_at_mean", "top_k_error_at_mean", "bottom_k_error_at_mean", "frac_ivon_above_ls"):
        rows.append({"method": "ivon", "metric": m, "value": summary[m], "seed": seed})
    if g.clean_labels is not None:
        det = detection(g, k)
        summary["detection"] = det
        rows += [{"method": "ivon", "metric": m, "value": v, "seed": seed} for m, v in det.items()]
    return summary, rows


def detection(g: Gallery, k: int) -> dict[str, float]:
    """How well IVON's noise finds the flipped labels: fraction flipped among the top-k by ``||eps||``, the base
    rate, and AUROC / average precision of ``||eps||``, of ``-eps[y]`` (less noise mass on the label) and, for
    comparison, of the posterior predictive's ``1 - p_pred[y]``."""
    flipped = g.labels != g.clean_labels
    by_mag = detection_metrics(flipped, g.magnitude, k=k)
    by_lab = detection_metrics(flipped, -g.label_noise, k=k)
    by_pred = detection_metrics(flipped, g.predictive_suspicion, k=k)
    return {
        "flipped_rate": float(flipped.mean()),
        "flipped_frac_top_k": by_mag["precision_at_k"],
        "auroc_magnitude": by_mag["auroc"],
        "ap_magnitude": by_mag["average_precision"],
        "flipped_frac_top_k_label_noise": by_lab["precision_at_k"],
        "auroc_label_noise": by_lab["auroc"],
        "ap_label_noise": by_lab["average_precision"],
        "flipped_frac_top_k_predictive": by_pred["precision_at_k"],
        "auroc_predictive": by_pred["auroc"],
        "ap_predictive": by_pred["average_precision"],
    }


def _stats(v: np.ndarray) -> dict[str, float]:
    return {
        "mean": float(v.mean()),
        "median": float(np.median(v)),
        "p90": float(np.percentile(v, 90)),
        "min": float(v.min()),
        "max": float(v.max()),
    }


def class_pair(g: Gallery, cls: int | None) -> tuple[int, int, int] | None:
    """(class, regular row, atypical row): the lowest- and highest-noise examples given label ``cls`` (Fig. 1);
    None when ``cls`` is None or has fewer than 2 examples."""
    if cls is None:
        return None
    rows = np.flatnonzero(g.labels == int(cls))
    if len(rows) < 2:
        return None
    mag = g.magnitude[rows]
    return int(cls), int(rows[np.argmin(mag)]), int(rows[np.argmax(mag)])


def _pair_figure(path: Path, images, g: Gallery, pair, ls: np.ndarray, names) -> None:
    cls, regular, atypical = pair
    fig = Figure(figsize=(7.5, 4.6), layout="constrained")
    axes = fig.subplots(2, 2, width_ratios=[1, 3.2])
    k = g.noise.shape[1]
    shown, rgb = as_hw_images(images(np.array([regular, atypical])))
    for r, (i, what) in enumerate(((regular, "regular"), (atypical, "atypical"))):
        axes[r, 0].imshow(shown[r], cmap=None if rgb else "gray", interpolation="nearest")
        axes[r, 0].set_xticks([])
        axes[r, 0].set_yticks([])
        axes[r, 0].set_xlabel(f"{what} {names[cls]}", fontsize=9)
        pos = np.arange(k)
        axes[r, 1].bar(pos - 0.2, ls[i], 0.4, color="0.6", label="LS")
        axes[r, 1].bar(pos + 0.2, g.noise[i], 0.4, color="C3", label="IVON")
        axes[r, 1].axhline(0, color="k", lw=0.6)
        axes[r, 1].set_xticks(pos, names[:k], fontsize=8)
        axes[r, 1].set_ylabel("label noise", fontsize=9)
        axes[r, 1].set_title(
            f"||eps||: IVON {np.linalg.norm(g.noise[i]):.3g}, LS {np.linalg.norm(ls[i]):.3g}", fontsize=9
        )
    axes[0, 1].legend(fontsize=8)
    fig.suptitle(f"class {names[cls]}: LS adds the same noise to both, IVON more to the atypical one", fontsize=10)
    save_figure(fig, path)
