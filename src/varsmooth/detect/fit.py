"""One IVON training run on the user's own arrays, scored as it trains (what :mod:`.api` calls given features).

:func:`fit_probs` trains one model with the training engine (:func:`varsmooth.engine.train`) on every example
``(features, labels)`` and returns two probability arrays over all of them:

- ``step_probs`` (N, K): the softmax of every training step, averaged per example over the run (free: the steps
  compute it anyway; under IVON each step is at a sampled weight, so this is a one-sample-per-step posterior
  predictive averaged over training, :meth:`~varsmooth.detect.predictions.EpochScorer.step_probs`);
- ``pred_probs`` (N, K): the posterior predictive after the last epoch (``samples`` weight draws).

Nothing has to be chosen: ``method="ivon"`` with the engine's defaults (no validation split, so ess = N and beta2 from
the Hessian horizon ``1 - 2 / steps``; docs/design.md, "IVON with nothing given"), the model ``mlp`` on flat features
(standardised per column), any name of :data:`varsmooth.models.MODELS`, or the user's own ``nn.Module``.
``train_options`` overrides any :class:`~varsmooth.engine.TrainConfig` field (e.g. ``{"ess": "auto",
"val_fraction": 0.1}``; examples held out for validation are never trained on, so their ``step_probs`` come from
``pred_probs``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..data import LabeledData, LabeledSplit
from ..engine import TrainConfig, TrainResult, train
from ..errors import InputError
from .predictions import EpochScorer
from .scores import check_labels

__all__ = ["ProbsFit", "fit_probs", "as_labeled_data", "DEFAULT_EPOCHS"]

DEFAULT_EPOCHS = 10  # the engine's TrainConfig default, the length benchmarks/label_errors.py measured
_N_EVAL = 256  # examples in the (diagnostic-only) evaluation split the engine needs


@dataclass
class ProbsFit:
    """The probabilities of one scored training run over the N given examples (in the given order)."""

    labels: np.ndarray  # (N,) int64 labels trained on
    step_probs: np.ndarray  # (N, K) mean softmax of the training steps
    pred_probs: np.ndarray | None  # (N, K) posterior predictive after training (ERM: softmax); None if not asked
    config: TrainConfig  # the resolved config of the run
    result: TrainResult  # the engine's result (model, optimizer, history)


def as_labeled_data(
    features,
    labels,
    *,
    num_classes: int | None = None,
    class_names: list[str] | None = None,
    standardize: bool = True,
    name: str = "user",
) -> LabeledData:
    """``(features (N, ...), labels (N,))`` as a :class:`LabeledData` whose training split is every example.

    Flat features (N, D) are standardised per column when ``standardize`` (constant columns become 0); the test
    split, which the engine evaluates for its diagnostics, is the first 256 examples (not held out). A
    :class:`torch.utils.data.Dataset` of (C, H, W) tensors is used as is (images read lazily).
    """
    y = check_labels(labels)
    if y.size == 0:
        raise InputError("labels must be non-empty integers in [0, K), got 0 values")
    if y.min() < 0:
        raise InputError(f"label {int(y.min())} is out of range; labels must be >= 0")
    k = int(y.max()) + 1 if num_classes is None else int(num_classes)
    if k < 2:
        raise InputError(f"labels must name at least 2 classes, got K = {k}")
    if isinstance(features, torch.utils.data.Dataset) and not isinstance(features, torch.Tensor):
        x, shape = features, tuple(features[0].shape)
    else:
        x = torch.as_tensor(np.asarray(features, dtype=np.float32))
        if x.ndim < 2 or x.shape[1:].numel() == 0:
            raise InputError(f"features must have shape (N, D) or (N, C, H, W), got shape {tuple(x.shape)}")
        if not torch.isfinite(x).all():
            raise InputError("features contain NaN or inf")
        if standardize and x.ndim == 2:
            std = x.std(0, unbiased=False)
            x = (x - x.mean(0)) / torch.where(std > 0, std, torch.ones_like(std))
        shape = tuple(x.shape[1:])
    if len(x) != len(y):
        raise InputError(f"features have {len(x)} rows but there are {len(y)} labels")
    if int(y.max()) >= k:
        raise InputError(f"label {int(y.max())} is out of range; labels must be in [0, {k - 1}]")
    names = [str(c) for c in range(k)] if class_names is None else [str(c) for c in class_names]
    train_split = LabeledSplit(x, torch.from_numpy(y))
    return LabeledData(name, train_split, train_split.subset(np.arange(min(_N_EVAL, len(y)))), k, shape, names)


def fit_probs(
    labels,
    features=None,
    *,
    data: LabeledData | None = None,
    model: str | nn.Module | None = None,
    method: str = "ivon",
    epochs: int = DEFAULT_EPOCHS,
    seed: int = 0,
    samples: int = 8,
    predictive: bool = True,
    train_options: dict | None = None,
    progress: bool = False,
    device: str = "auto",
) -> ProbsFit:
    """Train one run on ``(features, labels)`` (or on ``data``'s training split) and return its probabilities.

    Args:
        labels: (N,) integer labels in [0, K) (ignored when ``data`` is given: its training labels are used).
        features: (N, D) or (N, C, H, W) array, or a Dataset; see :func:`as_labeled_data`.
        data: an already built :class:`LabeledData` instead of ``features``.
        model: a name of :data:`varsmooth.models.MODELS` (None: ``mlp``), or your own ``nn.Module`` mapping
            (B, *input_shape) to (B, K) logits: a copy of it is trained (it is left unchanged).
        method: ``ivon`` (default) or any engine method (``erm`` gives the plain-training baseline).
        epochs, seed: of the run; ``samples``: posterior draws of ``pred_probs`` (IVON).
        predictive: compute ``pred_probs`` (``samples`` passes over the data after training); False: None, unless
            a validation split needs them (its examples are never trained on).
        train_options: further :class:`TrainConfig` fields.

    Returns:
        :class:`ProbsFit` with ``step_probs`` and ``pred_probs`` of shape (N, K) (``pred_probs`` may be None).
    """
    if data is None:
        if features is None:
            raise InputError("give features (N, ...) with the labels, or pred_probs")
        data = as_labeled_data(features, labels)
    if samples < 1:
        raise InputError(f"samples must be >= 1, got {samples}")
    factory = None
    if isinstance(model, nn.Module):
        own = model
        factory, model = (lambda: copy.deepcopy(own)), None  # a fresh copy for every run (ess "auto" runs several)
    # the engine's evaluation split is a diagnostic here: evaluate it once, after the last epoch
    opts = dict(dataset=data.name, model=model or "mlp", method=method, epochs=epochs, seed=seed, eval_every=epochs,
                progress=progress, test_samples=samples, device=device)  # fmt: skip
    opts.update(train_options or {})
    if opts.get("train_subset") is not None:
        raise InputError("train_options must not set train_subset here: every example is scored")
    opts["save_train_predictions"] = bool(predictive or opts.get("val_fraction", 0.0) > 0)
    cfg = TrainConfig.from_dict(opts)
    scorer = EpochScorer(epochs=[], samples=samples, seed=seed)
    result = train(cfg, None, callbacks=[scorer], data=data, model_factory=factory)
    pred = result.train_probs_pred if result.train_probs_pred is not None else result.train_probs
    pred = None if pred is None else np.asarray(pred, dtype=np.float64)
    step = scorer.step_probs()
    full = np.full((len(result.run.labels), step.shape[1]), np.nan)
    full[: len(step)] = step
    never = np.isnan(full).any(axis=1)
    if never.any():
        full[never] = pred[never]  # held-out validation examples: their out-of-sample predictive
    return ProbsFit(result.run.labels, full, pred, result.config, result)

