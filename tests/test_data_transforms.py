"""Batched CIFAR augmentation (random crop with padding 4, horizontal flip) and normalisation."""

import numpy as np
import pytest
import torch

from varsmooth.data.transforms import augment_batch, normalize, random_crop, random_hflip
from varsmooth.errors import InputError


def images(b=64, c=3, h=32, w=32, seed=0):
    # distinct values everywhere so a window of the padded image identifies its offset uniquely
    return torch.randn(b, c, h, w, generator=torch.Generator().manual_seed(seed))


def match_window(out, img, pad=4):
    """All (dy, dx, flipped) such that ``out`` is the window of the zero-padded ``img`` at (dy, dx), maybe flipped."""
    padded = torch.nn.functional.pad(img, (pad,) * 4)
    h, w = img.shape[-2:]
    hits = []
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            win = padded[:, dy : dy + h, dx : dx + w]
            for flipped, cand in ((False, win), (True, win.flip(-1))):
                if torch.equal(out, cand):
                    hits.append((dy, dx, flipped))
    return hits


def test_shapes_preserved_and_none_is_identity():
    g = torch.Generator().manual_seed(0)
    for shape in ((5, 3, 32, 32), (2, 1, 28, 20)):
        x = torch.randn(shape)
        y = augment_batch(x, "cifar", g)
        assert y.shape == x.shape and y.dtype == x.dtype
        assert augment_batch(x, None, g) is x and augment_batch(x, "none", g) is x
    with pytest.raises(InputError, match="unknown augmentation 'mixup'; allowed: none, cifar"):
        augment_batch(torch.randn(5, 3, 32, 32), "mixup", g)


def test_deterministic_under_same_generator():
    x = images()
    a = augment_batch(x, "cifar", torch.Generator().manual_seed(42))
    b = augment_batch(x, "cifar", torch.Generator().manual_seed(42))
    c = augment_batch(x, "cifar", torch.Generator().manual_seed(43))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_crops_are_shifts_of_the_padded_image_and_flips_are_flips():
    x = images(b=200, h=12, w=10)
    y = augment_batch(x, "cifar", torch.Generator().manual_seed(1))
    offsets, flips = set(), 0
    for i in range(len(x)):
        hits = match_window(y[i], x[i])
        assert len(hits) >= 1, f"image {i} is not a (flipped) window of its padded input"
        dy, dx, flipped = hits[0]
        offsets.add((dy, dx))
        flips += flipped
    # offsets cover most of the 9 x 9 grid and about half of the images are flipped (binomial, 4 sd)
    assert len(offsets) > 60
    assert abs(flips - 100) < 4 * np.sqrt(200 * 0.25)


def test_random_crop_fill_and_flip_probability():
    x = torch.ones(50, 2, 6, 6)
    g = torch.Generator().manual_seed(0)
    y = random_crop(x, 4, g, fill=-3.0)
    assert set(torch.unique(y).tolist()) <= {1.0, -3.0}
    assert (y == -3.0).any()  # some windows reach into the padding
    z = images(b=8)
    assert torch.equal(random_hflip(z, g, p=1.0), z.flip(-1))
    assert torch.equal(random_hflip(z, g, p=0.0), z)
    w = random_hflip(z, g)
    for i in range(len(z)):
        assert torch.equal(w[i], z[i]) or torch.equal(w[i], z[i].flip(-1))


def test_normalize_formula():
    raw = np.random.default_rng(0).integers(0, 256, (4, 3, 5, 5)).astype(np.uint8)
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 0.125)
    got = normalize(raw, mean, std)
    expected = (raw / 255.0 - np.array(mean)[:, None, None]) / np.array(std)[:, None, None]
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6, atol=1e-6)
    # single-image input (C, H, W) and a one-channel constant broadcast over channels
    np.testing.assert_allclose(normalize(raw[0], (0.5,), (2.0,)).numpy(), (raw[0] / 255.0 - 0.5) / 2.0, atol=1e-6)
