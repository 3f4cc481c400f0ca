"""Training-dynamics detectors as a training-engine callback: AUM and forgetting events (benchmark anchors).

- **AUM**, the area under the margin (Pleiss et al. 2020, "Identifying Mislabeled Data using the Area Under the
  Margin Ranking", Eq. 1-2): at every step where example ``i`` is trained on, its margin
  ``M = z_y - max_{k != y} z_k`` (logits ``z``, given label ``y``); ``AUM_i`` is the mean margin over those steps.
  Mislabeled examples have a low (negative) AUM; the suspicion score is ``-AUM``.
- **Forgetting events** (Toneva et al. 2019, "An Empirical Study of Example Forgetting during Deep Neural Network
  Learning"): the number of times an example goes from classified correctly to incorrectly between two steps
  that train on it; examples never classified correctly count as forgotten more often than any other. Higher =
  more suspect.

Both read the logits each training step computes anyway (no extra forward pass): pass a
:class:`TrainingDynamics` to :func:`varsmooth.engine.train` (``callbacks=[...]``).
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import InputError

__all__ = ["TrainingDynamics"]


class TrainingDynamics:
    """Engine callback recording each example's per-step margin and correctness (see the module docstring)."""

    def __init__(self, n: int):
        if n < 1:
            raise InputError(f"n must be >= 1, got {n}")
        self.margin_sum = np.zeros(n)
        self.count = np.zeros(n, dtype=np.int64)
        self.forgets = np.zeros(n, dtype=np.int64)
        self.last_correct = np.zeros(n, dtype=bool)
        self.ever_correct = np.zeros(n, dtype=bool)

    def __call__(self, epoch, state) -> None:  # the per-epoch hook: nothing to do
        pass

    def on_batch(self, epoch: int, pos, out, labels) -> None:
        """Engine hook after each step: pool positions ``pos`` (B,), ``out.logits`` (B, K), ``labels`` (B,)."""
        pos = np.asarray(pos, dtype=np.int64)
        if len(pos) == 0:
            return
        with torch.no_grad():
            z = out.logits.detach().float()
            y = labels.view(-1, 1).to(z.device)
            given = z.gather(1, y).view(-1)
            other = z.scatter(1, y, float("-inf")).max(dim=1).values
            margin = (given - other).double().cpu().numpy()
        correct = margin > 0
        seen = self.count[pos] > 0
        self.forgets[pos] += (seen & self.last_correct[pos] & ~correct).astype(np.int64)
        self.last_correct[pos] = correct
        self.ever_correct[pos] |= correct
        np.add.at(self.margin_sum, pos, margin)
        np.add.at(self.count, pos, 1)

    def _need_steps(self) -> None:
        if not self.count.any():
            raise InputError("no training step recorded: train with this callback first")

    def aum(self) -> np.ndarray:
        """(N,) area under the margin (mean margin over the steps that trained on each example); NaN if none."""
        self._need_steps()
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.margin_sum / np.where(self.count > 0, self.count, np.nan)

    def aum_scores(self) -> np.ndarray:
        """(N,) ``-AUM``: higher = more suspect."""
        return -self.aum()

    def forgetting_scores(self) -> np.ndarray:
        """(N,) forgetting events; examples never classified correctly get ``max + 1`` (most suspect)."""
        self._need_steps()
        score = self.forgets.astype(np.float64)
        score[~self.ever_correct] = score.max(initial=0.0) + 1.0
        return score
