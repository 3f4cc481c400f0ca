"""Find mislabeled and atypical training examples from one IVON training run (see :mod:`.scores`)."""

from .engine import EpochScorer, ScoredRun, score_checkpoint
from .scores import (
    ScoreAccumulator,
    ScoreMethod,
    all_scores,
    detection_metrics,
    induced_label_noise,
    label_error_scores,
    rank_suspects,
)

__all__ = [
    "ScoreMethod",
    "induced_label_noise",
    "label_error_scores",
    "all_scores",
    "rank_suspects",
    "ScoreAccumulator",
    "detection_metrics",
    "EpochScorer",
    "ScoredRun",
    "score_checkpoint",
]
