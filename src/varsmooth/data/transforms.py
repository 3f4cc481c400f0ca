"""Normalisation constants, image preprocessing and batched data augmentation, in plain torch (no torchvision).

Normalisation is ``(x / 255 - mean) / std`` per channel with the per-dataset constants in :data:`NORMALIZATION`
(channel means and standard deviations of the training images, pixel values scaled to [0, 1]):

============== ============================ ============================ ==========================
dataset        mean                         std                          source
============== ============================ ============================ ==========================
mnist          0.1307                       0.3081                       MNIST train set
fashion-mnist  0.2860                       0.3530                       Fashion-MNIST train set
kmnist         0.1918                       0.3483                       KMNIST train set
cifar10        0.4914, 0.4822, 0.4465       0.2470, 0.2435, 0.2616       CIFAR-10 train set
cifar100       0.5071, 0.4865, 0.4409       0.2673, 0.2564, 0.2762       CIFAR-100 train set
imagenet       0.485, 0.456, 0.406          0.229, 0.224, 0.225          ImageNet (Clothing1M, image folders)
digits         0.3053                       0.3760                       sklearn digits / 16, all 1797
============== ============================ ============================ ==========================

The CIFAR augmentation (:func:`augment_batch` with kind ``"cifar"``) is the standard one: pad 4 pixels on each
side, crop a random 32x32 window, flip horizontally with probability 1/2; every draw comes from an explicit
``torch.Generator``, and the whole batch is processed at once.
"""

from __future__ import annotations

from enum import Enum

import numpy as np
import torch

from ..errors import InputError

__all__ = [
    "NORMALIZATION",
    "AugmentKind",
    "normalize",
    "augment_batch",
    "random_crop",
    "random_hflip",
    "load_image",
]

NORMALIZATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "kmnist": ((0.1918,), (0.3483,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "digits": ((0.3053,), (0.3760,)),
}


class AugmentKind(str, Enum):
    NONE = "none"
    CIFAR = "cifar"


def normalize(images: np.ndarray | torch.Tensor, mean, std, *, scale: float = 255.0) -> torch.Tensor:
    """Images (N, C, H, W) or (C, H, W) in [0, scale] -> float32 tensor ``(x / scale - mean[c]) / std[c]``."""
    x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
    x = x.to(torch.float32) / scale
    c_dim = x.dim() - 3
    if c_dim < 0:
        raise ValueError(f"normalize expects (N, C, H, W) or (C, H, W) images, got shape {tuple(x.shape)}")
    c = x.shape[c_dim]
    mean_t = torch.as_tensor(mean, dtype=torch.float32).reshape(-1)
    std_t = torch.as_tensor(std, dtype=torch.float32).reshape(-1)
    if mean_t.numel() == 1 and c > 1:
        mean_t, std_t = mean_t.expand(c), std_t.expand(c)
    if mean_t.numel() != c or std_t.numel() != c:
        raise InputError(f"normalisation has {mean_t.numel()} channel(s) but the images have {c}")
    shape = (c, 1, 1)
    return (x - mean_t.reshape(shape)) / std_t.reshape(shape)


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator, *, fill: float = 0.0) -> torch.Tensor:
    """Pad (B, C, H, W) by ``padding`` on each side with ``fill`` and crop a random H x W window per image.

    The offsets (dy, dx) are uniform on {0, ..., 2 * padding}; the output is (B, C, H, W).
    """
    b, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (padding,) * 4, value=fill)
    offsets = torch.randint(0, 2 * padding + 1, (2, b), generator=generator, device=generator.device).to(x.device)
    rows = offsets[0][:, None] + torch.arange(h, device=x.device)  # (B, H)
    cols = offsets[1][:, None] + torch.arange(w, device=x.device)  # (B, W)
    batch = torch.arange(b, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


def random_hflip(x: torch.Tensor, generator: torch.Generator, *, p: float = 0.5) -> torch.Tensor:
    """Flip each image of (B, C, H, W) left-right with probability ``p``; returns (B, C, H, W)."""
    flip = torch.rand(x.shape[0], generator=generator, device=generator.device).to(x.device) < p
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def augment_batch(
    x: torch.Tensor, kind: str | AugmentKind | None, generator: torch.Generator, *, fill: float = 0.0
) -> torch.Tensor:
    """Augment a batch (B, C, H, W); returns a new tensor of the same shape (``x`` itself for kind None/"none").

    ``"cifar"``: random crop with padding 4, then a horizontal flip with probability 1/2. The crop pads the
    *normalised* images with ``fill`` (default 0, the dataset's mean colour). Draws come from ``generator``
    (on its own device; the same generator state gives the same augmentation).
    """
    try:
        kind = AugmentKind(kind or "none")
    except ValueError:
        allowed = ", ".join(k.value for k in AugmentKind)
        raise InputError(f"unknown augmentation {kind!r}; allowed: {allowed}") from None
    if kind is AugmentKind.NONE:
        return x
    if x.dim() != 4:
        raise ValueError(f"augment_batch expects images (B, C, H, W), got shape {tuple(x.shape)}")
    return random_hflip(random_crop(x, 4, generator, fill=fill), generator)


def load_image(path, *, size: int | tuple[int, int] | None, resize: int | None = None, mode: str = "RGB"):
    """Read an image file with PIL -> uint8 array (C, H, W).

    ``resize`` scales the shorter side to that many pixels (bilinear); ``size`` then centre-crops to
    ``size`` x ``size`` (or (h, w)), resizing directly when ``resize`` is None. ``mode`` is "RGB" or "L".
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert(mode)
            if resize is not None:
                w, h = im.size
                s = resize / min(w, h)
                im = im.resize((max(1, round(w * s)), max(1, round(h * s))), Image.BILINEAR)
            if size is not None:
                th, tw = (size, size) if isinstance(size, int) else size
                w, h = im.size
                if resize is None:
                    im = im.resize((tw, th), Image.BILINEAR)
                else:
                    left, top = (w - tw) // 2, (h - th) // 2
                    im = im.crop((left, top, left + tw, top + th))
            arr = np.array(im, dtype=np.uint8)  # a writable copy
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as err:
        raise InputError(f"cannot read image {str(path)!r}: {err}".split("\n")[0]) from None
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
