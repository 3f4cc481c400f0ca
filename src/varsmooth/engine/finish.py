"""The end of a run of :func:`varsmooth.engine.train`: final metrics, ``final.json`` and ``arrays.npz``.

``final.json`` holds the last epoch's metrics, the best evaluated epoch's (:func:`best_epoch_metrics`), the realised
corruption rate, IVON's sigma statistics and warnings; ``arrays.npz`` the labels, flip mask, validation mask and
the final test and training predictions.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from ..io import atomic_open, write_json
from .evaluation import evaluate, noise_l2, predict_split
from .methods import Method, hessian_warning
from .parallel import DistContext
from .rundata import RunData, seed_int
from .trainconfig import TrainConfig

__all__ = ["best_epoch_metrics", "final_outputs"]


def best_epoch_metrics(history: list[dict]) -> dict[str, float]:
    """The best evaluated epoch's test accuracy (``test_acc_best``, at the mean; ``test_pred_acc_best``, predictive)
    and its epoch: with label noise, the last epoch can fall well below it once the network fits the flips."""
    out = {}
    for key in ("test_acc", "test_pred_acc"):
        evaluated = [h for h in history if key in h]
        if evaluated:
            best = max(evaluated, key=lambda h: h[key])
            out[f"{key}_best"], out[f"{key}_best_epoch"] = float(best[key]), int(best["epoch"])
    return out


def final_outputs(
    cfg: TrainConfig,
    out: Path | None,
    run: RunData,
    method: Method,
    device: torch.device,
    dist: DistContext,
    history: list[dict],
    probs: dict[str, np.ndarray] | None,
    warn: bool,
) -> tuple[dict, dict | None, np.ndarray | None, np.ndarray | None]:
    """``(metrics, test probs, train probs, train predictive probs)`` of the finished run; writes ``final.json``
    and ``arrays.npz`` into ``out`` (rank 0)."""
    main = dist.is_main
    metrics, train_probs, train_pred = dict(history[-1]) if history else {}, None, None
    if main:
        if probs is None:  # resumed a finished run: evaluate again (deterministic)
            extra, probs = evaluate(method, cfg, run, device, cfg.epochs)
            metrics.update(extra)
        if cfg.save_train_predictions:
            train_probs, train_pred = predict_split(
                method, run.data.train.features, run.pool_index, samples=cfg.test_samples if method.variational
                else None, seed=seed_int(cfg.seed, 2000), batch_size=cfg.eval_batch_size, device=device,
            )  # fmt: skip
            if method.variational:
                metrics["train_noise_l2"] = noise_l2(train_probs, train_pred)
    metrics.update(best_epoch_metrics(history))
    warning = hessian_warning(metrics) if method.variational else None
    if warning is not None:
        metrics["warnings"] = [warning]
        if warn and main:
            sys.stderr.write(f"varsmooth: warning: {warning}\n")
    metrics.update({f"corruption_{k}": v for k, v in run.corruption.items() if k != "transition_matrix"})
    metrics.update(n_train=int((~run.is_val).sum()), n_val=int(run.is_val.sum()), n_test=len(run.data.test),
                   method=cfg.method, seed=cfg.seed)  # fmt: skip
    if out is not None and main:
        arrays = {"pool_index": run.pool_index, "labels": run.labels, "is_val": run.is_val,
                  "test_labels": run.data.test.labels.numpy(), "test_probs": probs["mean"]}  # fmt: skip
        for name, value in (
            ("clean_labels", run.clean_labels),
            ("flip_mask", run.flip_mask),
            ("test_probs_pred", probs.get("pred")),
            ("train_probs", train_probs),
            ("train_probs_pred", train_pred),
        ):
            if value is not None:
                arrays[name] = value
        with atomic_open(out / "arrays.npz", "wb") as f:
            np.savez_compressed(f, **arrays)
        write_json(out / "final.json", metrics)
    dist.barrier()
    return metrics, probs, train_probs, train_pred
