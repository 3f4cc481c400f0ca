"""Noise gallery (paper Fig. 1 and 3): which training examples IVON's posterior gives the most label noise.

Paper: "Variational Learning Induces Adaptive Label Smoothing" (2025), Sec. 3.4 and 4.1. After training with IVON,
the posterior ``q = N(m, diag(sigma^2))``, ``sigma^2 = 1 / (ess (h + delta))``, turns the label ``y_i`` (one-hot
``e_{y_i}``) of training example ``i`` into ``y_i + eps_i`` with the expected label noise (Eq. 15)

    eps_i = softmax(f_i(m)) - E_q[softmax(f_i(theta))]        (K,), S Monte-Carlo samples,

computed by :func:`varsmooth.noise.network.label_noise`. We keep its magnitude ``||eps_i||_2`` (the ordering of
Fig. 3) and the noise on the given label ``eps_i[y_i]``. Label smoothing with rate ``alpha`` (Eq. 1) adds
``alpha (u - e_{y_i})`` to every example: magnitude ``alpha sqrt(1 - 1/K)``, on the label ``-alpha (1 - 1/K)``.

Files in ``OUT``: ``runs/ivon/`` (the engine's run folder), ``noise.npz`` (per-example arrays, see
:func:`write_gallery`), ``top_bottom.csv`` (the ``top_k`` highest- and lowest-noise examples), ``results.csv``
(tidy summary: method, metric, value, seed), ``top_noise.png`` / ``bottom_noise.png`` (Fig. 3),
``class_pair.png`` (Fig. 1: a regular and an atypical example of one class, IVON vs LS noise) and
``noise_histogram.png``; when the true labels are known (synthetic noise), ``suspects_predictive.png`` too (the
top-k by the posterior predictive's ``1 - p_pred[y]``, ``p_pred = p_mean - eps``).
The helpers here are shared with the ``smoothed-labels`` and ``demo`` experiments.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..engine import TrainConfig, train
from ..engine.rundata import fetch
from ..errors import InputError
from ..io import atomic_open, write_csv

ID = "noise-gallery"
DESCRIPTION = (
    "Fig. 1, 3: per-example label noise of IVON's posterior (3-layer CNN, MNIST) vs LS's constant noise: "
    "highest/lowest-noise training images, a regular vs an atypical example, noise histogram"
)

# TrainConfig fields a preset may set at its top level (anything else goes in its ``train`` mapping)
TRAIN_KEYS = (
    "dataset", "data_dir", "model", "model_options", "train_subset", "corruption", "epochs", "batch_size", "seed",
)  # fmt: skip


# ------------------------------------------------------------------------------------------------ shared helpers
@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run the block with ``n`` torch threads (None: unchanged). On a shared 2-core machine one thread per process
    avoids OpenMP oversubscription, which we measured to slow training ~6x under load."""
    old = torch.get_num_threads()
    if n is not None:
        if not isinstance(n, int) or n < 1:
            raise InputError(f"threads={n!r} is not allowed; use a positive integer or null")
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def check_data_dir(exp_id: str, dataset: str, data_dir: str | None) -> None:
    """Fail before any work when a dataset that lives on disk was asked for without ``--data-dir``."""
    from ..data import BUNDLED

    if dataset not in BUNDLED and data_dir is None:
        raise InputError(
            f"{exp_id}: dataset {dataset!r} needs --data-dir (the folder with its files); "
            f"the smoke preset uses the bundled mnist-subset instead"
        )


def load_data(train_cfg: dict[str, Any], test_subset: int | None, seed: int):
    """The dataset of ``train_cfg`` (cached per process), its test split optionally cut to a seeded random
    ``test_subset`` (evaluating a CNN on 10,000 test images every epoch dominates a CPU run)."""
    import dataclasses

    from ..data import LabeledSplit
    from ._common import load_cached

    data = load_cached(train_cfg)
    n = len(data.test)
    if test_subset is None or test_subset >= n:
        return data
    if test_subset < 1:
        raise InputError(f"test_subset={test_subset} is not allowed; use a positive integer or null")
    keep = np.sort(np.random.default_rng(seed).choice(n, size=test_subset, replace=False))
    idx = torch.from_numpy(keep)
    if not isinstance(data.test.features, torch.Tensor):
        raise InputError("test_subset needs a dataset held in memory; set test_subset: null")
    return dataclasses.replace(data, test=LabeledSplit(data.test.features[idx], data.test.labels[idx]))


def train_config(cfg: dict[str, Any], method: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A TrainConfig dict: the preset's top-level training keys, its ``train`` mapping, then ``extra``."""
    out = {k: cfg[k] for k in TRAIN_KEYS if k in cfg}
    out.update(cfg.get("train") or {})
    out.update(extra or {})
    out["method"] = method
    out.setdefault("progress", bool(cfg.get("progress", True)))
    return out


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
        from ..detect.scores import rank_suspects

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
    from ..noise.network import label_noise

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
    from .. import plots

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
        from ..detect.scores import rank_suspects

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
    from ..detect.scores import detection_metrics

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
    from matplotlib.figure import Figure

    from ..plots import _as_hw_images, save_figure

    cls, regular, atypical = pair
    fig = Figure(figsize=(7.5, 4.6), layout="constrained")
    axes = fig.subplots(2, 2, width_ratios=[1, 3.2])
    k = g.noise.shape[1]
    shown, rgb = _as_hw_images(images(np.array([regular, atypical])))
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


# ----------------------------------------------------------------------------------------------------- experiment
def run(cfg: dict[str, Any], out: Path, runtime=None) -> dict:
    from ._common import write_results

    check_data_dir(ID, cfg["dataset"], cfg.get("data_dir"))
    progress = bool(cfg.get("progress", True)) and (runtime is None or runtime.progress)
    cfg = {**cfg, "progress": progress}
    seed = int(cfg["seed"])
    with torch_threads(cfg.get("threads")):
        tcfg = train_config(cfg, "ivon", {"ess_factor": cfg["ess_factor"]})
        data = load_data(tcfg, cfg.get("test_subset"), seed)
        result = train(TrainConfig.from_dict(tcfg), out / "runs" / "ivon", data=data)
        g = ivon_gallery(
            result,
            samples=int(cfg["noise_samples"]),
            seed=seed,
            method=cfg.get("noise_method", "mc"),
            progress=progress,
        )
        summary, rows = write_gallery(
            out,
            g,
            image_fn(result.run, g),
            num_classes=data.num_classes,
            class_names=data.class_names,
            alpha=float(cfg["ls_alpha"]),
            top_k=int(cfg["top_k"]),
            pair_class=cfg.get("pair_class"),
            seed=seed,
        )
    m = result.metrics
    for metric in ("test_acc", "test_pred_acc", "test_nll", "test_pred_nll", "sigma_mean"):
        if metric in m:
            rows.append({"method": "ivon", "metric": metric, "value": float(m[metric]), "seed": seed})
    write_results(out, rows)
    return {
        "description": DESCRIPTION,
        **summary,
        "ess": float(result.config.ess),
        "ivon_test_acc": float(m["test_acc"]),
        "ivon_test_pred_acc": float(m.get("test_pred_acc", float("nan"))),
    }
