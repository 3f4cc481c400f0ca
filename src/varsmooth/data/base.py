"""The containers every loader returns: :class:`LabeledSplit` and :class:`LabeledData`, and a lazy image dataset."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from .transforms import load_image, normalize
from .validation import check_same_length, validate_features, validate_labels

__all__ = ["LabeledSplit", "LabeledData", "ImageListDataset"]


@dataclass
class LabeledSplit:
    """One split of a labelled dataset.

    Attributes:
        features: float32 Tensor (N, *input_shape), normalised, or a map-style Dataset whose item i is that
            (*input_shape) tensor (images loaded lazily).
        labels: int64 Tensor (N,) — the labels to train on (noisy as given for natural-noise data).
        clean_labels: int64 Tensor (N,) or None — known true labels when ``labels`` are natural noisy labels
            (CIFAR-N files, Clothing1M images with both annotations).
    """

    features: torch.Tensor | Dataset
    labels: torch.Tensor
    clean_labels: torch.Tensor | None = None

    def __post_init__(self):
        if not isinstance(self.features, torch.Tensor | Dataset):
            self.features = torch.as_tensor(np.asarray(self.features), dtype=torch.float32)
        if isinstance(self.features, torch.Tensor) and self.features.is_floating_point():
            validate_features(self.features)
        self.labels = torch.as_tensor(validate_labels(self.labels, np.iinfo(np.int64).max), dtype=torch.int64)
        check_same_length(features=self.features, labels=self.labels)
        if self.clean_labels is not None:
            self.clean_labels = torch.as_tensor(
                validate_labels(self.clean_labels, np.iinfo(np.int64).max, name="clean labels"), dtype=torch.int64
            )
            check_same_length(labels=self.labels, clean_labels=self.clean_labels)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def is_lazy(self) -> bool:
        """True when ``features`` is a Dataset (images read on access) rather than one tensor."""
        return not isinstance(self.features, torch.Tensor)

    def subset(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> LabeledSplit:
        """The examples at ``indices`` (M,), as a new split (tensor features are indexed, datasets wrapped)."""
        idx = torch.as_tensor(np.asarray(indices), dtype=torch.int64)
        feats = Subset(self.features, idx.tolist()) if self.is_lazy else self.features[idx]
        clean = None if self.clean_labels is None else self.clean_labels[idx]
        return LabeledSplit(feats, self.labels[idx], clean)


@dataclass
class LabeledData:
    """A dataset with a train and a test split.

    Attributes:
        name: registry name ("mnist", "cifar10", ...).
        train, test: the splits; ``features`` have shape (N, *input_shape).
        num_classes: K; labels lie in [0, K).
        input_shape: shape of one example, e.g. (1, 28, 28), (3, 32, 32) or (2,) for two moons.
        class_names: K names.
        augment: training augmentation kind for :func:`~varsmooth.data.transforms.augment_batch` ("cifar") or None.
        normalization: (mean, std) per channel used on the features, or None when features are not images.
        meta: provenance (data folder, files, noise file ...), JSON-serialisable.
    """

    name: str
    train: LabeledSplit
    test: LabeledSplit
    num_classes: int
    input_shape: tuple[int, ...]
    class_names: list[str]
    augment: str | None = None
    normalization: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        for split_name, split in (("train", self.train), ("test", self.test)):
            validate_labels(split.labels, self.num_classes, name=f"{self.name} {split_name} labels")
        if len(self.class_names) != self.num_classes:
            raise ValueError(f"{len(self.class_names)} class names for {self.num_classes} classes")


class ImageListDataset(Dataset):
    """Images read from files on access: item i is a float32 tensor (C, size, size), normalised.

    Args:
        paths: N image file paths.
        size: output side length (centre crop after ``resize``; a plain resize when ``resize`` is None).
        resize: shorter-side length before the centre crop, or None.
        mode: "RGB" (C = 3) or "L" (C = 1).
        mean, std: per-channel normalisation constants for pixel values in [0, 1].
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike],
        *,
        size: int | tuple[int, int],
        resize: int | None = None,
        mode: str = "RGB",
        mean: Sequence[float] = (0.0,),
        std: Sequence[float] = (1.0,),
    ):
        self.paths = [str(p) for p in paths]
        self.size, self.resize, self.mode = size, resize, mode
        self.mean, self.std = tuple(mean), tuple(std)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        img = load_image(self.paths[i], size=self.size, resize=self.resize, mode=self.mode)
        return normalize(img, self.mean, self.std)
