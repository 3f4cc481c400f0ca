"""Architectures: output shapes, known parameter counts, deterministic init, input validation."""

import numpy as np
import pytest
import torch
from torch import nn

from varsmooth.errors import InputError
from varsmooth.models import MODELS, build_model


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


CASES = [
    ("logreg", (1, 28, 28), 10),
    ("logreg", (2,), 2),
    ("mlp", (1, 28, 28), 10),
    ("mlp", (64,), 10),
    ("cnn3", (1, 28, 28), 10),
    ("cnn3", (3, 32, 32), 100),
    ("resnet18", (3, 32, 32), 10),
    ("resnet18", (1, 28, 28), 10),
    ("resnet34", (3, 32, 32), 100),
    ("resnet50", (3, 64, 64), 14),
]


@pytest.mark.parametrize("name,shape,k", CASES)
def test_forward_shape_and_backward(name, shape, k):
    torch.manual_seed(0)
    model = build_model(name, k, shape)
    x = torch.randn(3, *shape)
    out = model(x)
    assert out.shape == (3, k) and out.dtype == torch.float32 and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    assert model(x[:1]).shape == (1, k)


def test_every_registered_name_builds():
    assert set(MODELS) == {"logreg", "mlp", "cnn3", "resnet18", "resnet34", "resnet50"}
    for name in MODELS:
        assert isinstance(build_model(name, 10, (3, 32, 32)), nn.Module)


def test_parameter_counts_match_reference_architectures():
    # The standard CIFAR-10 ResNet-18/34 (3x3 stem, 1x1 projection shortcuts) and torchvision's ResNet-50.
    assert n_params(build_model("resnet18", 10, (3, 32, 32))) == 11_173_962
    assert n_params(build_model("resnet34", 10, (3, 32, 32))) == 21_282_122
    assert n_params(build_model("resnet50", 1000, (3, 224, 224))) == 25_557_032
    # Changing the head changes only the last layer: 512 * dK + dK parameters.
    assert n_params(build_model("resnet18", 100, (3, 32, 32))) - 11_173_962 == 513 * 90


def test_flat_and_cnn_parameter_counts_closed_form():
    assert n_params(build_model("logreg", 10, (1, 28, 28))) == 784 * 10 + 10
    assert n_params(build_model("logreg", 10, (1, 28, 28), bias=False)) == 784 * 10
    assert n_params(build_model("mlp", 10, (1, 28, 28))) == 785 * 256 + 257 * 256 + 257 * 10
    assert n_params(build_model("mlp", 3, (5,), hidden=(7,))) == 6 * 7 + 8 * 3
    conv = (1 * 9 + 1) * 32 + (32 * 9 + 1) * 64 + (64 * 9 + 1) * 128
    assert n_params(build_model("cnn3", 10, (1, 28, 28))) == conv + (128 * 7 * 7 + 1) * 10
    conv3 = (3 * 9 + 1) * 32 + (32 * 9 + 1) * 64 + (64 * 9 + 1) * 128
    assert n_params(build_model("cnn3", 10, (3, 32, 32))) == conv3 + (128 * 8 * 8 + 1) * 10


def test_logreg_is_linear_in_flattened_input():
    torch.manual_seed(1)
    model = build_model("logreg", 4, (2, 3)).double()
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    lin = model.linear
    torch.testing.assert_close(model(x), x.reshape(5, 6) @ lin.weight.T + lin.bias, rtol=0, atol=1e-14)
    # mlp with no hidden layer is the same GLM
    torch.manual_seed(1)
    glm = build_model("mlp", 4, (2, 3), hidden=()).double()
    torch.testing.assert_close(glm(x), model(x), rtol=0, atol=0)


def test_mlp_matches_naive_forward():
    torch.manual_seed(2)
    model = build_model("mlp", 3, (4,), hidden=(5, 6)).double()
    x = torch.randn(7, 4, dtype=torch.float64)
    (l1, l2, l3) = [m for m in model.modules() if isinstance(m, nn.Linear)]
    h = torch.relu(x @ l1.weight.T + l1.bias)
    h = torch.relu(h @ l2.weight.T + l2.bias)
    torch.testing.assert_close(model(x), h @ l3.weight.T + l3.bias, rtol=0, atol=1e-14)


@pytest.mark.parametrize("name", ["mlp", "cnn3", "resnet18"])
def test_init_is_deterministic_under_manual_seed(name):
    shape = (1, 28, 28)
    torch.manual_seed(123)
    a = build_model(name, 10, shape)
    torch.manual_seed(123)
    b = build_model(name, 10, shape)
    torch.manual_seed(124)
    c = build_model(name, 10, shape)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[key], sb[key]) for key in sa)
    assert not all(torch.equal(sa[key], sc[key]) for key in sa)


def test_batchnorm_present_in_resnets_only():
    def has_bn(m):
        return any(isinstance(x, nn.BatchNorm2d) for x in m.modules())

    assert has_bn(build_model("resnet18", 10, (3, 32, 32)))
    assert has_bn(build_model("resnet50", 10, (3, 32, 32)))
    assert not has_bn(build_model("cnn3", 10, (1, 28, 28)))


def test_cifar_resnet_keeps_resolution_in_stem_and_resnet50_downsamples():
    r18 = build_model("resnet18", 10, (3, 32, 32))
    assert r18.stem(torch.randn(1, 3, 32, 32)).shape == (1, 64, 32, 32)
    r50 = build_model("resnet50", 10, (3, 64, 64))
    assert r50.stem(torch.randn(1, 3, 64, 64)).shape == (1, 64, 16, 16)


def test_numpy_ints_accepted_for_shape():
    model = build_model("cnn3", 10, tuple(np.array([1, 28, 28])))
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_unknown_model_lists_allowed_names():
    with pytest.raises(InputError) as e:
        build_model("vgg16", 10, (3, 32, 32))
    msg = str(e.value)
    assert "\n" not in msg and "'vgg16'" in msg
    assert all(name in msg for name in MODELS)


@pytest.mark.parametrize(
    "name,k,shape,opts,needle",
    [
        ("mlp", 10, (784,), {"width": 3}, "width"),
        ("mlp", 10, (784,), {"hidden": (256, -1)}, "hidden"),
        ("mlp", 10, (784,), {"hidden": "abc"}, "hidden"),
        ("cnn3", 10, (1, 28, 28), {"widths": (32, 64)}, "widths"),
        ("cnn3", 10, (784,), {}, "input_shape"),
        ("cnn3", 10, (1, 2, 2), {}, "input_shape"),
        ("resnet50", 10, (3, 16, 16), {}, "input_shape"),
        ("resnet18", 10, (3, 32, 32), {"base_width": 0}, "base_width"),
        ("logreg", 0, (4,), {}, "num_classes"),
        ("logreg", 10, (4, 0), {}, "input_shape"),
    ],
)
def test_bad_options_raise_one_line_input_error(name, k, shape, opts, needle):
    with pytest.raises(InputError) as e:
        build_model(name, k, shape, **opts)
    assert needle in str(e.value) and "\n" not in str(e.value)
