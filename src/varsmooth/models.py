"""Classifier architectures used in the paper's experiments, in plain PyTorch (no torchvision).

Every model maps a batch ``x`` of shape ``(B, *input_shape)`` to logits of shape ``(B, num_classes)``.

- ``logreg``: one ``nn.Linear`` on the flattened input -- the generalized linear model (softmax regression) of
  the paper's Sec. 3.1-3.3.
- ``mlp``: fully connected ReLU network on the flattened input, ``hidden=(256, 256)`` by default.
- ``cnn3``: the 3-layer CNN of the paper's Fig. 3 (MNIST): conv32-conv64-pool-conv128-pool + linear head
  (3x3 convolutions, padding 1, 2x2 max-pooling); any channel count and spatial size >= 4.
- ``resnet18`` / ``resnet34``: CIFAR ResNets (He et al. 2016, "Deep Residual Learning for Image Recognition",
  in the common CIFAR form): 3x3 stride-1 stem, no max-pool, BasicBlocks [2, 2, 2, 2] / [3, 4, 6, 3] with widths
  64-128-256-512, BatchNorm, 1x1 projection shortcuts, global average pooling and a linear head
  (ResNet-18 for CIFAR-10 has 11,173,962 parameters).
- ``resnet50``: ImageNet-style ResNet-50 (Bottleneck [3, 4, 6, 3], expansion 4, 7x7 stride-2 stem + 3x3
  max-pool) for Clothing1M-size inputs (224x224); adaptive pooling lets it run on smaller images (>= 32x32).

Initialisation is PyTorch's default for linear layers and Kaiming-normal (fan-out) for convolutions, so it is
deterministic under ``torch.manual_seed``.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence

import torch
from torch import nn

from .errors import InputError

MODELS: tuple[str, ...] = ("logreg", "mlp", "cnn3", "resnet18", "resnet34", "resnet50")


# --------------------------------------------------------------------------------------------------- flat models
class LogisticRegression(nn.Module):
    """Softmax (K > 2) / multinomial logistic regression: logits = W vec(x) + b."""

    def __init__(self, in_features: int, num_classes: int, bias: bool = True):
        super().__init__()
        self.linear = nn.Linear(in_features, num_classes, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


class MLP(nn.Module):
    """Flatten -> [Linear -> ReLU] * len(hidden) -> Linear."""

    def __init__(self, in_features: int, num_classes: int, hidden: Sequence[int] = (256, 256)):
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(inplace=True)]
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))


# --------------------------------------------------------------------------------------------------------- CNN
class CNN3(nn.Module):
    """conv(C->32) ReLU, conv(32->64) ReLU, maxpool2, conv(64->128) ReLU, maxpool2, flatten, linear."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, widths: Sequence[int] = (32, 64, 128)):
        super().__init__()
        c, h, w = input_shape
        w1, w2, w3 = widths
        self.features = nn.Sequential(
            nn.Conv2d(c, w1, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(w1, w2, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(w2, w3, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self.head = nn.Linear(w3 * (h // 4) * (w // 4), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


# ------------------------------------------------------------------------------------------------------ ResNets
def _conv_bn(c_in: int, c_out: int, k: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2, bias=False), nn.BatchNorm2d(c_out)]


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, c_in: int, width: int, stride: int = 1):
        super().__init__()
        self.body = nn.Sequential(
            *_conv_bn(c_in, width, 3, stride), nn.ReLU(inplace=True), *_conv_bn(width, width, 3, 1)
        )
        c_out = width * self.expansion
        need_proj = stride != 1 or c_in != c_out
        self.shortcut = nn.Sequential(*_conv_bn(c_in, c_out, 1, stride)) if need_proj else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, c_in: int, width: int, stride: int = 1):
        super().__init__()
        c_out = width * self.expansion
        self.body = nn.Sequential(
            *_conv_bn(c_in, width, 1, 1),
            nn.ReLU(inplace=True),
            *_conv_bn(width, width, 3, stride),  # stride on the 3x3 conv ("ResNet v1.5")
            nn.ReLU(inplace=True),
            *_conv_bn(width, c_out, 1, 1),
        )
        need_proj = stride != 1 or c_in != c_out
        self.shortcut = nn.Sequential(*_conv_bn(c_in, c_out, 1, stride)) if need_proj else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class ResNet(nn.Module):
    """ResNet with a CIFAR stem (3x3, stride 1, no pool) or an ImageNet stem (7x7, stride 2, 3x3 max-pool)."""

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        depths: Sequence[int],
        in_channels: int,
        num_classes: int,
        stem: str = "cifar",
        base_width: int = 64,
    ):
        super().__init__()
        if stem == "cifar":
            self.stem = nn.Sequential(*_conv_bn(in_channels, base_width, 3, 1), nn.ReLU(inplace=True))
        else:
            self.stem = nn.Sequential(
                *_conv_bn(in_channels, base_width, 7, 2),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(3, stride=2, padding=1),
            )
        c = base_width
        stages = []
        for i, depth in enumerate(depths):
            width = base_width * 2**i
            blocks = []
            for j in range(depth):
                blocks.append(block(c, width, stride=2 if (i > 0 and j == 0) else 1))
                c = width * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(c, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.stages(self.stem(x))).flatten(1))


# ------------------------------------------------------------------------------------------------------ factory
def _image_shape(name: str, shape: tuple[int, ...], min_side: int) -> tuple[int, int, int]:
    if len(shape) != 3 or min(shape[1:]) < min_side:
        raise InputError(
            f"model {name!r} needs input_shape (channels, height, width) with height and width >= {min_side}; "
            f"got {shape}"
        )
    return shape[0], shape[1], shape[2]


def _ints(name: str, key: str, value: object, *, length: int | None = None, allow_empty: bool = False):
    """``value`` (an int or a sequence of ints, numpy ints included) as a tuple of positive ints."""
    need = f"{length} positive integers" if length is not None else "a tuple of positive integers"
    error = InputError(f"model {name!r}: {key}={value!r} is not allowed; it must be {need}")
    iterable = hasattr(value, "__iter__") and not isinstance(value, str | bytes)
    out = []
    for v in list(value) if iterable else [value]:  # type: ignore[call-overload]
        if isinstance(v, bool):
            raise error
        try:
            out.append(operator.index(v))
        except TypeError:
            raise error from None
    if any(v < 1 for v in out) or (length is not None and len(out) != length) or (not out and not allow_empty):
        raise error
    return tuple(out)


def _logreg(k: int, s: tuple[int, ...], bias: bool = True) -> nn.Module:
    return LogisticRegression(math.prod(s), k, bias=bool(bias))


def _mlp(k: int, s: tuple[int, ...], hidden: object = (256, 256)) -> nn.Module:
    return MLP(math.prod(s), k, hidden=_ints("mlp", "hidden", hidden, allow_empty=True))


def _cnn3(k: int, s: tuple[int, ...], widths: object = (32, 64, 128)) -> nn.Module:
    return CNN3(_image_shape("cnn3", s, 4), k, widths=_ints("cnn3", "widths", widths, length=3))


def _resnet(name: str, block: type[BasicBlock] | type[Bottleneck], depths: tuple[int, ...], stem: str):
    min_side = 32 if stem == "imagenet" else 1

    def build(k: int, s: tuple[int, ...], base_width: object = 64) -> nn.Module:
        c = _image_shape(name, s, min_side)[0]
        (width,) = _ints(name, "base_width", base_width, length=1)
        return ResNet(block, depths, c, k, stem=stem, base_width=width)

    return build


_BUILDERS: dict[str, tuple[Callable[..., nn.Module], tuple[str, ...]]] = {
    "logreg": (_logreg, ("bias",)),
    "mlp": (_mlp, ("hidden",)),
    "cnn3": (_cnn3, ("widths",)),
    "resnet18": (_resnet("resnet18", BasicBlock, (2, 2, 2, 2), "cifar"), ("base_width",)),
    "resnet34": (_resnet("resnet34", BasicBlock, (3, 4, 6, 3), "cifar"), ("base_width",)),
    "resnet50": (_resnet("resnet50", Bottleneck, (3, 4, 6, 3), "imagenet"), ("base_width",)),
}


def build_model(name: str, num_classes: int, input_shape: Sequence[int], **opts: object) -> nn.Module:
    """Build the classifier ``name`` (one of :data:`MODELS`) for ``num_classes`` classes.

    ``input_shape`` is one example's shape without the batch dimension, e.g. ``(1, 28, 28)`` or ``(3, 32, 32)``;
    the flat models accept any shape. Options: ``logreg``: ``bias`` (bool, default True); ``mlp``: ``hidden``
    (tuple of widths, default ``(256, 256)``; ``()`` gives logistic regression); ``cnn3``: ``widths`` (3 channel
    counts, default ``(32, 64, 128)``); ResNets: ``base_width`` (default 64). The returned module maps
    ``(B, *input_shape)`` to logits ``(B, num_classes)``. Raises :class:`InputError` for an unknown name,
    an unknown option or a bad value.
    """
    if name not in _BUILDERS:
        raise InputError(f"unknown model {name!r}; allowed: {', '.join(MODELS)}")
    builder, allowed = _BUILDERS[name]
    unknown = sorted(set(opts) - set(allowed))
    if unknown:
        raise InputError(f"model {name!r}: unknown option(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise InputError(f"num_classes={num_classes!r} is not allowed; it must be a positive integer")
    shape = _ints(name, "input_shape", tuple(input_shape))
    return builder(num_classes, shape, **opts)
