"""Evaluation during training: probabilities at the mean and IVON's posterior predictive, and their metrics.

Predictive sampling uses a generator seeded per call and runs inside ``torch.random.fork_rng``, so evaluating never
changes the random streams of training (a resumed run stays bitwise equal). ``noise_l2`` is the mean size of the
expected label noise ``eps_i = p_mean_i - p_pred_i`` that IVON's posterior induces (SPEC section 3).
"""

from __future__ import annotations

import numpy as np
import torch

from .methods import Method
from .metrics import accuracy, classification_metrics
from .rundata import RunData, fetch, seed_int

__all__ = ["predict", "predict_all", "evaluate", "noise_l2"]


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
    return m, probs


def noise_l2(p_mean: np.ndarray, p_pred: np.ndarray) -> float:
    """Mean over examples of ``||eps_i||_2`` with ``eps_i = p_mean_i - p_pred_i`` (N, K): the size of the label noise
    IVON's posterior induces (SPEC section 3, expected noise)."""
    return float(np.linalg.norm(p_mean.astype(np.float64) - p_pred, axis=1).mean()) if len(p_mean) else float("nan")
