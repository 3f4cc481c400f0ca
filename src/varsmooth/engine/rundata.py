"""The data of one training run: the dataset, its (possibly corrupted) training labels and the splits.

Order of operations, each seeded: (1) load the dataset; (2) optionally keep a random ``train_subset`` of its
training split (the *pool*, stream 1 of the run seed); (3) corrupt the pool's labels with the transition matrix of
``corruption`` (``corrupt_labels`` with ``corruption_seed``), or read natural noisy labels from a file aligned with the
training split, or use the dataset's own labels (natural-noise datasets carry ``clean_labels`` when known);
(4) optionally hold out ``val_fraction`` of the pool as a validation split *with noisy labels* (stream 2).
The flip mask is ``given != clean`` over the pool; its mean is the realised corruption rate.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .. import data as datasets  # module attribute: tests swap load_dataset for a cached one
from ..data import LabeledData
from ..data.corruption import corrupt_labels, parse_corruption, read_noisy_label_file, transition_matrix
from ..data.validation import validate_features
from ..errors import InputError
from .trainconfig import TrainConfig


def seed_int(seed: int, stream: int) -> int:
    """An independent 63-bit seed for ``stream`` of the run seed (numpy's SeedSequence): the one seeding rule.

    Streams: 1 the training subset, 2 the validation split, 3 data order, 4 (+100 rank) augmentation, 5 (+100 rank)
    IVON's weight noise, 6 (+100 rank) torch's global stream (dropout), 7 numpy, 8 Python's ``random``, 9 the
    fixed subset of training examples whose induced label noise is logged, 1000 + epoch the evaluation after that
    epoch (:func:`eval_seed`), 2000 the final predictions over the training set.
    """
    return int(np.random.SeedSequence([int(stream), int(seed)]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def eval_seed(seed: int, epoch: int) -> int:
    """The seed of the predictions made after ``epoch`` (posterior samples at evaluation)."""
    return seed_int(seed, 1000 + epoch)


def seed_run(seed: int, rank: int, device: torch.device) -> dict[str, torch.Generator]:
    """Seed the global random streams of data-parallel rank ``rank`` and return the run's own generators:
    ``data`` (the order of examples, shared by all ranks), ``augment`` and ``noise`` (IVON's weight noise)."""
    gens = {
        "data": torch.Generator().manual_seed(seed_int(seed, 3)),
        "augment": torch.Generator(device=device).manual_seed(seed_int(seed, 4 + 100 * rank)),
        "noise": torch.Generator(device=device).manual_seed(seed_int(seed, 5 + 100 * rank)),
    }
    torch.manual_seed(seed_int(seed, 6 + 100 * rank))  # dropout etc.: own stream per rank
    np.random.seed(seed_int(seed, 7) % 2**32)
    random.seed(seed_int(seed, 8))
    return gens


@dataclass
class RunData:
    data: LabeledData
    pool_index: np.ndarray  # (P,) indices into data.train of the examples this run uses
    labels: np.ndarray  # (P,) int64 labels trained on (noisy)
    clean_labels: np.ndarray | None  # (P,) int64 true labels, or None when unknown
    flip_mask: np.ndarray | None  # (P,) bool labels != clean_labels
    is_val: np.ndarray  # (P,) bool held-out validation examples
    corruption: dict = field(default_factory=dict)  # what corrupted the labels and the realised rate

    @property
    def train_pos(self) -> np.ndarray:
        """Positions in the pool of the training examples (P_train,)."""
        return np.flatnonzero(~self.is_val)

    @property
    def val_pos(self) -> np.ndarray:
        return np.flatnonzero(self.is_val)


def fetch(features, idx) -> torch.Tensor:
    """Rows ``idx`` of a feature tensor, or items of a map-style dataset stacked into one tensor."""
    idx = np.asarray(idx, dtype=np.int64)
    if isinstance(features, torch.Tensor):
        return features[torch.from_numpy(idx)]
    if len(idx) == 0:
        return torch.empty(0)
    return torch.stack([features[int(i)] for i in idx])


def prepare(cfg: TrainConfig, data: LabeledData | None = None) -> RunData:
    """Load (unless ``data`` is given) and corrupt the data of a resolved TrainConfig; raises InputError."""
    spec = parse_corruption(cfg.corruption)  # parse before the (slow) load, so a typo fails fast
    if data is None:
        data = datasets.load_dataset(cfg.dataset, cfg.data_dir, **(cfg.data_options or {}))
    for split_name in ("train", "test"):
        split = getattr(data, split_name)
        if isinstance(split.features, torch.Tensor):
            validate_features(split.features, name=f"{data.name} {split_name} features")
    k, n0 = data.num_classes, len(data.train)
    given = data.train.labels.numpy().astype(np.int64)
    clean = None if data.train.clean_labels is None else data.train.clean_labels.numpy().astype(np.int64)
    if cfg.noisy_labels is not None:
        if spec.kind.value != "none":
            raise InputError(
                f"--corruption {cfg.corruption!r} and --noisy-labels both given; use one source of corrupted labels"
            )
        clean = given if clean is None else clean
        given = read_noisy_label_file(cfg.noisy_labels, n0, key=cfg.noisy_labels_key, num_classes=k)
    pool = np.arange(n0)
    if cfg.train_subset is not None:
        if not 1 <= cfg.train_subset <= n0:
            raise InputError(f"train_subset={cfg.train_subset} is invalid; {data.name} has {n0} training examples")
        rng = np.random.default_rng(seed_int(cfg.seed, 1))
        pool = np.sort(rng.choice(n0, size=cfg.train_subset, replace=False))
    given = given[pool]
    clean = None if clean is None else clean[pool]
    corruption: dict[str, Any] = {"spec": str(cfg.corruption), "source": "dataset"}
    if spec.kind.value != "none":
        if data.train.clean_labels is not None:
            raise InputError(f"{data.name} already has natural noisy labels; --corruption must be 'none'")
        P = transition_matrix(spec, k)
        clean = given
        given, _ = corrupt_labels(clean, P, seed=cfg.corruption_seed)
        corruption.update(source="synthetic", transition_matrix=P.tolist())
    elif cfg.noisy_labels is not None:
        corruption.update(source="file", file=str(cfg.noisy_labels))
    mask = None if clean is None else given != clean
    if mask is not None:
        corruption.update(realised_rate=float(mask.mean()), n_flipped=int(mask.sum()))
    is_val = np.zeros(len(pool), dtype=bool)
    if cfg.val_fraction > 0:
        n_val = int(round(cfg.val_fraction * len(pool)))
        if not 1 <= n_val < len(pool):
            raise InputError(f"val_fraction={cfg.val_fraction} leaves no validation or no training examples")
        rng = np.random.default_rng(seed_int(cfg.seed, 2))
        is_val[rng.choice(len(pool), size=n_val, replace=False)] = True
    if mask is not None:
        corruption["realised_rate_train"] = float(mask[~is_val].mean())
    return RunData(data, pool, given, clean, mask, is_val, corruption)
