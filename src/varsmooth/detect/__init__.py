"""Find mislabeled and atypical training examples from one IVON training run (see :mod:`.scores`; cleanlab-style
functions in :mod:`.api`, training on the user's arrays in :mod:`.fit`)."""

from .api import (
    FilterBy,
    QualityMethod,
    confident_joint,
    find_label_issues,
    get_label_quality_scores,
    label_quality_scores,
    num_label_issues,
)
from .dynamics import TrainingDynamics
from .fit import ProbsFit, as_labeled_data, fit_probs
from .predictions import EpochScorer, ScoredRun, score_checkpoint
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
    "find_label_issues",
    "label_quality_scores",
    "get_label_quality_scores",
    "num_label_issues",
    "confident_joint",
    "FilterBy",
    "QualityMethod",
    "fit_probs",
    "ProbsFit",
    "as_labeled_data",
    "TrainingDynamics",
]
