"""Evaluation during training: probabilities at the mean and IVON's posterior predictive, and their metrics.

Predictive sampling uses a generator seeded per call and runs inside ``torch.random.fork_rng``, so evaluating never
changes the random streams of training (a resumed run stays bitwise equal).

:func:`noise_summary` is the one place that turns the two predictions into the size of the *induced label noise*
``eps_i = p_mean_i - p_pred_i`` that IVON's posterior induces (the paper's Eq. 9 for networks): IVON trained on
``y_i`` behaves like gradient descent on ``y_i + eps_i``. Each epoch an IVON run records it over a fixed, seeded
subset of ``NOISE_SUBSET`` training examples (``train_noise_*``), so its growth is visible during training.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..errors import InputError
from ..metrics import accuracy, classification_metrics
from .methods import Method
from .rundata import RunData, eval_seed, fetch, seed_int
from .trainconfig import TrainConfig

__all__ = ["predict_split", "evaluate", "noise_l2", "noise_summary", "NOISE_SUBSET"]

NOISE_SUBSET = 1000  # training examples on which each epoch's induced label noise is measured (seeded, fixed)


@torch.no_grad()
def predict_split(
    method: Method,
    features: torch.Tensor | Sequence[torch.Tensor],
    index: np.ndarray | Sequence[int] | None = None,
    *,
    samples: int | None,
    seed: int = 0,
    batch_size: int = 1000,
    device: torch.device | str | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """``(p_mean, p_pred)``, each (M, K) float32, of ``method`` over rows ``index`` (default: all) of ``features``.

    ``p_mean`` is the softmax at the mean (eval mode); ``p_pred`` the posterior predictive
    ``(1/S) sum_s softmax(f(theta_s))`` over ``samples`` = S draws, ``p_mean`` itself for point-estimate methods, and
    None when ``samples`` is None. ``features``: a (N, ...) tensor or a map-style dataset of tensors.

    The one seeding rule: the batch starting at row offset ``i`` draws its weights from a generator seeded
    ``seed + i``, inside :func:`torch.random.fork_rng`, so the draws are a function of ``(seed, batch_size)`` alone
    and predicting never moves the random streams of training (a resumed run stays bitwise equal).
    """
    if samples is not None and samples < 1:
        raise InputError(f"samples must be >= 1, got {samples}")
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    device = torch.device(device) if device is not None else next(method.model.parameters()).device
    index = np.arange(len(features)) if index is None else np.asarray(index, dtype=np.int64)
    means, preds = [], []
    for i in range(0, len(index), batch_size):
        x = fetch(features, index[i : i + batch_size]).to(device, non_blocking=True)
        means.append(method.predict_proba(x).cpu())
        if samples is not None and method.variational:
            gen = torch.Generator(device=device).manual_seed(seed + i)
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(seed + i)
                preds.append(method.predictive_proba(x, samples, gen).cpu())
    k = method.num_classes
    p_mean = torch.cat(means).numpy() if means else np.zeros((0, k), dtype=np.float32)
    if samples is None:
        return p_mean, None
    if not method.variational:
        return p_mean, p_mean
    return p_mean, torch.cat(preds).numpy() if preds else np.zeros((0, k), dtype=np.float32)


def evaluate(
    method: Method, cfg: TrainConfig, run: RunData, device: torch.device, epoch: int
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Metrics of the test (and validation) split after ``epoch``; also returns the test probabilities
    ``{"mean": p_mean, "pred": p_pred}`` (``"pred"`` for IVON only)."""
    data, seed = run.data, eval_seed(cfg.seed, epoch)
    samples = cfg.test_samples if method.variational else None
    opts = {"samples": samples, "batch_size": cfg.eval_batch_size, "device": device}
    p_mean, p_pred = predict_split(method, data.test.features, seed=seed, **opts)
    probs = {"mean": p_mean}
    m = classification_metrics(data.test.labels.numpy(), p_mean, prefix="test_")
    if method.variational:
        probs["pred"] = p_pred
        m.update(classification_metrics(data.test.labels.numpy(), p_pred, prefix="test_pred_"))
        m["test_noise_l2"] = noise_l2(p_mean, p_pred)
    if run.is_val.any():  # the validation split has the (noisy) labels trained on; val_clean_acc the true ones
        lab = run.labels[run.val_pos]
        clean = None if run.clean_labels is None else run.clean_labels[run.val_pos]
        val = predict_split(method, data.train.features, run.pool_index[run.val_pos], seed=seed + 1, **opts)
        for prefix, p in zip(("val_", "val_pred_"), val if method.variational else val[:1], strict=False):
            m.update(classification_metrics(lab, p, prefix=prefix))
            if clean is not None:
                m[f"{prefix}clean_acc"] = accuracy(clean, p)
    if method.variational:  # induced label noise on a fixed subset of the training examples
        pos = np.sort(np.random.default_rng(seed_int(cfg.seed, 9)).permutation(run.train_pos)[:NOISE_SUBSET])
        p_mean, p_pred = predict_split(method, data.train.features, run.pool_index[pos], seed=seed + 2, **opts)
        mask = None if run.flip_mask is None else run.flip_mask[pos]
        summary = noise_summary(p_mean, p_pred, labels=run.labels[pos], flip_mask=mask)
        m.update({f"train_noise_{k}": v for k, v in summary.items()})
    return m, probs


def noise_l2(p_mean: np.ndarray, p_pred: np.ndarray) -> float:
    """Mean over examples of ``||eps_i||_2`` with ``eps_i = p_mean_i - p_pred_i`` (N, K)."""
    return noise_summary(p_mean, p_pred)["l2"]


def noise_summary(
    p_mean: np.ndarray,
    p_pred: np.ndarray,
    *,
    labels: np.ndarray | None = None,
    flip_mask: np.ndarray | None = None,
) -> dict[str, float]:
    """Size of the induced label noise ``eps = p_mean - p_pred`` (N, K) over N examples.

    Returns ``l1`` and ``l2`` (means over examples of ``||eps_i||_1`` and ``||eps_i||_2``); with ``labels`` (N,),
    ``on_label`` (mean of ``eps_{i, y_i}``; label smoothing's is ``-alpha (1 - 1/K)``); with ``flip_mask`` (N,) bool,
    ``l1_noisy`` and ``l1_clean`` (the ``l1`` mean over corrupted and over clean labels, where any exist).
    Empty input gives NaN means.
    """
    eps = np.asarray(p_mean, dtype=np.float64) - np.asarray(p_pred, dtype=np.float64)
    if eps.size == 0:
        return {"l1": float("nan"), "l2": float("nan")}
    l1 = np.abs(eps).sum(axis=1)
    out = {"l1": float(l1.mean()), "l2": float(np.linalg.norm(eps, axis=1).mean())}
    if labels is not None:
        y = np.asarray(labels, dtype=np.int64)
        out["on_label"] = float(eps[np.arange(len(y)), y].mean())
    if flip_mask is not None:
        mask = np.asarray(flip_mask, dtype=bool)
        for name, sel in (("l1_noisy", mask), ("l1_clean", ~mask)):
            if sel.any():
                out[name] = float(l1[sel].mean())
    return out
