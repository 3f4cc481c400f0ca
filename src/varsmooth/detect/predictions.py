"""Label-error scores of a trained model, and accumulated during training through the engine's callbacks.

:class:`EpochScorer` is a :func:`varsmooth.engine.train` callback that predicts ``p_mean`` (softmax at the
posterior mean) and ``p_pred`` (posterior predictive) over the run's pool with the engine's one prediction function
(:func:`varsmooth.engine.predict_split`) at chosen epochs and also averages, for free, the
probability of the given label that every training step computes anyway. Scores and their formulas:
:mod:`varsmooth.detect.scores`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data import LabeledData
from ..engine import MAX_INT, TrainConfig, build, check_device, predict_split, prepare, resolve_config
from ..engine import checkpoint as ckpt
from ..errors import InputError
from .scores import ScoreAccumulator, all_scores

__all__ = ["EpochScorer", "ScoredRun", "score_checkpoint"]


class EpochScorer:
    """Training-engine callback: label-error scores of every example of the run, accumulated during training.

    Pass it to :func:`varsmooth.engine.train` (``callbacks=[scorer]``). Two sources, both over the run's *pool*
    (training examples, plus validation examples if any; ``scorer.labels`` are the labels trained on):

    - at the end of each epoch in ``epochs`` (None: every epoch), ``p_mean`` and ``p_pred`` (``samples``
      posterior draws) of every example (:func:`varsmooth.engine.predict_split`) are added to ``scorer.accumulator``
      (:class:`ScoreAccumulator`; every :class:`ScoreMethod`, averaged over those epochs);
    - for free, from epoch ``step_from_epoch`` on, the softmax of the given label that each training step
      computes anyway (IVON: at its sampled weights, so a one-sample posterior predictive) is averaged per
      example: :meth:`step_scores` = ``1 - mean p_step[y]`` (higher = more suspect), and the whole softmax
      vector: :meth:`step_probs` (N, K), the mean over training of the step's probabilities (IVON: a posterior
      predictive with one sample per step, averaged over the run).

    Its state is checkpointed with the run, so a resumed run keeps accumulating. Under data-parallel training
    the engine calls it on rank 0 only, so the step scores average rank 0's share of the steps.
    """

    def __init__(
        self,
        epochs: Iterable[int] | None = None,
        *,
        samples: int = 8,
        batch_size: int = 1024,
        seed: int = 0,
        step_from_epoch: int = 1,
    ):
        if samples < 1:
            raise InputError(f"samples must be >= 1, got {samples}")
        self.epochs = None if epochs is None else sorted({int(e) for e in epochs})
        self.samples, self.batch_size, self.seed = int(samples), int(batch_size), int(seed)
        self.step_from_epoch = int(step_from_epoch)
        self.accumulator: ScoreAccumulator | None = None
        self.labels: np.ndarray | None = None
        self._step_sum = np.zeros(0)
        self._step_count = np.zeros(0, dtype=np.int64)
        self._step_probs = np.zeros((0, 0))

    def _grow(self, n: int, k: int | None = None) -> None:
        extra = n - self._step_sum.shape[0]
        if extra > 0:
            self._step_sum = np.concatenate([self._step_sum, np.zeros(extra)])
            self._step_count = np.concatenate([self._step_count, np.zeros(extra, np.int64)])
        k = self._step_probs.shape[1] if k is None else k
        rows = n - self._step_probs.shape[0]
        if rows > 0 or k != self._step_probs.shape[1]:
            grown = np.zeros((max(n, self._step_probs.shape[0]), k))
            grown[: self._step_probs.shape[0], : self._step_probs.shape[1]] = self._step_probs
            self._step_probs = grown

    def on_batch(self, epoch: int, pos, out, labels) -> None:
        """Engine hook after each step, with the pool positions ``pos`` (B,), the step's :class:`StepOutput`
        (``out.logits`` (B, K)) and its labels (B,)."""
        if epoch < self.step_from_epoch or len(pos) == 0:
            return
        with torch.no_grad():
            probs = torch.softmax(out.logits.float(), dim=1)
            p = probs.gather(1, labels.view(-1, 1).to(out.logits.device))
        pos = np.asarray(pos, dtype=np.int64)
        self._grow(int(pos.max()) + 1, probs.shape[1])
        np.add.at(self._step_sum, pos, p.view(-1).double().cpu().numpy())
        np.add.at(self._step_probs, pos, probs.double().cpu().numpy())
        np.add.at(self._step_count, pos, 1)

    def __call__(self, epoch: int, state) -> None:
        run = state.run
        if self.labels is None:
            self.labels = np.asarray(run.labels, dtype=np.int64)
        self._grow(len(self.labels))
        if self.epochs is not None and epoch not in self.epochs:
            return
        mean, pred = predict_split(state.method, run.data.train.features, run.pool_index, samples=self.samples,
                                   seed=self.seed + epoch, batch_size=self.batch_size, device=state.device)  # fmt: skip
        if self.accumulator is None:
            self.accumulator = ScoreAccumulator(self.labels)
        self.accumulator.update(mean, pred, epoch=epoch)

    def step_scores(self) -> np.ndarray:
        """(N,) ``1 - mean p_step[y]`` over the recorded training steps; NaN for examples never trained on."""
        if not self._step_count.any():
            raise InputError("no training step recorded: train with this callback first")
        with np.errstate(invalid="ignore", divide="ignore"):
            return 1.0 - self._step_sum / np.where(self._step_count > 0, self._step_count, np.nan)

    def step_probs(self) -> np.ndarray:
        """(N, K) mean softmax over the recorded training steps; rows of NaN for examples never trained on."""
        if not self._step_count.any():
            raise InputError("no training step recorded: train with this callback first")
        count = np.where(self._step_count > 0, self._step_count, np.nan)[: self._step_probs.shape[0], None]
        with np.errstate(invalid="ignore", divide="ignore"):
            return self._step_probs / count

    def state_dict(self) -> dict:
        return {
            "labels": None if self.labels is None else torch.from_numpy(self.labels),
            "step_sum": torch.from_numpy(self._step_sum),
            "step_count": torch.from_numpy(self._step_count),
            "step_probs": torch.from_numpy(self._step_probs),
            "acc": None if self.accumulator is None else self.accumulator.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.labels = None if state["labels"] is None else state["labels"].numpy().copy()
        self._step_sum = state["step_sum"].numpy().copy()
        self._step_count = state["step_count"].numpy().copy()
        if "step_probs" in state:  # checkpoints written before step_probs existed lack it
            self._step_probs = state["step_probs"].numpy().copy()
        self.accumulator = None
        if state["acc"] is not None:
            self.accumulator = ScoreAccumulator(self.labels)
            self.accumulator.load_state_dict(state["acc"])


@dataclass
class ScoredRun:
    """Every example of a checkpointed run, scored. Arrays are over the run's pool (N examples)."""

    config: TrainConfig  # the run's resolved config (with any dataset / data_dir override)
    epoch: int  # epoch the checkpoint was written at
    index: np.ndarray  # (N,) indices into the dataset's training split
    labels: np.ndarray  # (N,) labels the run trained on (given labels)
    clean_labels: np.ndarray | None  # (N,) true labels when known (synthetic noise), else None
    is_val: np.ndarray  # (N,) bool: held out as validation during training
    probs_mean: np.ndarray  # (N, K) softmax at the posterior mean
    probs_pred: np.ndarray  # (N, K) posterior predictive
    scores: dict[str, np.ndarray]  # {ScoreMethod value: (N,)}
    data: LabeledData  # the data the examples come from


def score_checkpoint(
    path: str | os.PathLike,
    *,
    data_dir: str | None = None,
    dataset: str | None = None,
    samples: int = 32,
    batch_size: int = 1000,
    seed: int = 0,
    device: str = "auto",
) -> ScoredRun:
    """Score every training example of an IVON run from its checkpoint (see :class:`ScoredRun`).

    The run's data are rebuilt from its recorded config (dataset, training subset, label noise, validation
    split, all seeded), so the labels are those it trained on (checked against the checkpoint's fingerprint).
    ``dataset`` (a different name) scores that dataset's whole training split with its own labels instead.
    """
    for name, value, lo in (("samples", samples, 1), ("batch_size", batch_size, 1), ("seed", seed, 0)):
        if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= MAX_INT:
            raise InputError(f"{name}={value!r} is not allowed; it must be an integer in [{lo}, {MAX_INT}]")
    if device != "auto":
        check_device(device)
    saved = ckpt.load(path)
    file = Path(path) / "checkpoint.pt" if Path(path).is_dir() else Path(path)
    if not isinstance(saved.config, dict):
        raise InputError(f"{file}: field 'config' must be a mapping; the checkpoint is corrupt or foreign")
    try:
        cfg = TrainConfig.from_dict(dict(saved.config))
        ckpt.validate(saved, resolve_config(cfg), file)
    except InputError as err:
        raise InputError(str(err) if str(file) in str(err) else f"{file}: {err}") from None
    if not cfg.method.startswith("ivon"):
        allowed = "ivon or ivon-fixed-h"
        raise InputError(f"the checkpoint is a {cfg.method!r} run; scoring needs an IVON run ({allowed})")
    if data_dir is not None:
        cfg = dataclasses.replace(cfg, data_dir=str(data_dir))
    same_data = dataset is None or dataset == cfg.dataset
    if not same_data:  # another dataset: all of its training split, with its own labels
        cfg = dataclasses.replace(cfg, dataset=dataset, corruption="none", noisy_labels=None, train_subset=None,
                                  val_fraction=0.0)  # fmt: skip
    run = prepare(cfg)
    if same_data and saved.labels not in (None, ckpt.labels_fingerprint(run.labels, run.pool_index)):
        where = f" under {cfg.data_dir}" if cfg.data_dir else ""
        raise InputError(f"the {cfg.dataset} labels{where} differ from those {file} was trained on (fingerprint)")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    model, method = build(cfg, run, dev)
    ckpt.restore(saved, model, method)
    mean, pred = predict_split(method, run.data.train.features, run.pool_index, samples=samples, seed=seed,
                               batch_size=batch_size, device=dev)  # fmt: skip
    scores = all_scores(run.labels, mean, pred)
    return ScoredRun(cfg, saved.epoch, run.pool_index, run.labels, run.clean_labels, run.is_val, mean, pred, scores,
                     run.data)  # fmt: skip
