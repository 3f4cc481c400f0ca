"""Data: loaders for the standard formats, label corruption, normalisation and augmentation.

``load_dataset(name, data_dir, **opts) -> LabeledData`` (names in ``DATASETS``); synthetic label noise in
:mod:`varsmooth.data.corruption` (``parse_corruption``, ``transition_matrix``, ``corrupt_labels``); batched CIFAR
augmentation in :mod:`varsmooth.data.transforms` (``augment_batch``).
"""

from .base import ImageListDataset, LabeledData, LabeledSplit
from .corruption import (
    CorruptionKind,
    CorruptionSpec,
    corrupt_labels,
    corruption_summary,
    parse_corruption,
    read_noisy_label_file,
    transition_matrix,
)
from .idx import read_idx
from .safe_pickle import restricted_load
from .sources import BUNDLED, DATASETS, load_dataset
from .transforms import NORMALIZATION, augment_batch
from .validation import check_same_length, validate_features, validate_labels, verify_md5

__all__ = [
    "BUNDLED",
    "DATASETS",
    "NORMALIZATION",
    "ImageListDataset",
    "LabeledData",
    "LabeledSplit",
    "CorruptionKind",
    "CorruptionSpec",
    "augment_batch",
    "check_same_length",
    "corrupt_labels",
    "load_dataset",
    "corruption_summary",
    "parse_corruption",
    "read_idx",
    "read_noisy_label_file",
    "restricted_load",
    "transition_matrix",
    "validate_features",
    "validate_labels",
    "verify_md5",
]
