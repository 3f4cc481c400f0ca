"""Evaluation during training: probabilities at the mean and IVON's posterior predictive, and their metrics.

Predictive sampling uses a generator seeded per call and runs inside ``torch.random.fork_rng``, so evaluating never
changes the random streams of training (a resumed run stays bitwise equal).

:func:`noise_summary` is the one place that turns the two predictions into the size of the *induced label noise*
``eps_i = p_mean_i - p_pred_i`` that IVON's posterior induces (the paper's Eq. 9 for networks): IVON trained on
``y_i`` behaves like gradient descent on ``y_i + eps_i``. Each epoch an IVON run records it over a fixed, seeded
subset of ``NOISE_SUBSET`` training examples (``train_noise_*``), so its growth is visible during training.
"""

from __future__ import annotations

import numpy as np
import torch

from .methods import Method
from .metrics import accuracy, classification_metrics
from .rundata import RunData, fetch, seed_int

__all__ = ["predict", "predict_all", "evaluate", "noise_l2", "noise_summary", "NOISE_SUBSET"]

NOISE_SUBSET = 1000  # training examples on which each epoch's induced label noise is measured (seeded, fixed)


@torch.no_grad()
def predict(method: Method, x: torch.Tensor, device, samples: int | None, seed: int) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    if samples is None or not method.variational:
        return method.predict_proba(x)
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        return method.predictive_proba(x, samples, gen)


def predict_all(method, features, idx, device, samples, seed, batch) -> np.ndarray:
    out = [
        predict(method, fetch(features, idx[i : i + batch]), device, samples, seed + i)
        for i in range(0, len(idx), batch)
    ]
    return torch.cat(out).cpu().numpy() if out else np.zeros((0, 0), dtype=np.float32)


def evaluate(method, cfg, run: RunData, device, epoch: int) -> tuple[dict, dict]:
    """Metrics of the test (and validation) split; also returns the test probabilities."""
    data, seed = run.data, seed_int(cfg.seed, 1000 + epoch)
    test_idx = np.arange(len(data.test))
    probs = {"mean": predict_all(method, data.test.features, test_idx, device, None, seed, cfg.eval_batch_size)}
    m = classification_metrics(data.test.labels.numpy(), probs["mean"], prefix="test_")
    if method.variational:
        probs["pred"] = predict_all(
            method, data.test.features, test_idx, device, cfg.test_samples, seed, cfg.eval_batch_size
        )
        m.update(classification_metrics(data.test.labels.numpy(), probs["pred"], prefix="test_pred_"))
        m["test_noise_l2"] = noise_l2(probs["mean"], probs["pred"])
    if run.is_val.any():  # the validation split has the (noisy) labels trained on; val_clean_acc the true ones
        val_idx, lab = run.pool_index[run.val_pos], run.labels[run.val_pos]
        clean = None if run.clean_labels is None else run.clean_labels[run.val_pos]
        for prefix, samples in (
            (("val_", None), ("val_pred_", cfg.test_samples)) if method.variational else (("val_", None),)
        ):
            p = predict_all(method, data.train.features, val_idx, device, samples, seed + 1, cfg.eval_batch_size)
            m.update(classification_metrics(lab, p, prefix=prefix))
            if clean is not None:
                m[f"{prefix}clean_acc"] = accuracy(clean, p)
    if method.variational:  # induced label noise on a fixed subset of the training examples
        pos = np.sort(np.random.default_rng(seed_int(cfg.seed, 9)).permutation(run.train_pos)[:NOISE_SUBSET])
        idx, batch = run.pool_index[pos], cfg.eval_batch_size
        p_mean = predict_all(method, data.train.features, idx, device, None, seed + 2, batch)
        p_pred = predict_all(method, data.train.features, idx, device, cfg.test_samples, seed + 2, batch)
        mask = None if run.noise_mask is None else run.noise_mask[pos]
        summary = noise_summary(p_mean, p_pred, labels=run.labels[pos], noise_mask=mask)
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
    noise_mask: np.ndarray | None = None,
) -> dict[str, float]:
    """Size of the induced label noise ``eps = p_mean - p_pred`` (N, K) over N examples.

    Returns ``l1`` and ``l2`` (means over examples of ``||eps_i||_1`` and ``||eps_i||_2``); with ``labels`` (N,),
    ``on_label`` (mean of ``eps_{i, y_i}``; label smoothing's is ``-alpha (1 - 1/K)``); with ``noise_mask`` (N,) bool,
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
    if noise_mask is not None:
        mask = np.asarray(noise_mask, dtype=bool)
        for name, sel in (("l1_noisy", mask), ("l1_clean", ~mask)):
            if sel.any():
                out[name] = float(l1[sel].mean())
    return out
