"""Network label noise (varsmooth.noise.network) against the exact GLM noise, by hand, and between estimators."""

import numpy as np
import pytest
import torch
from scipy import special
from torch import nn

from varsmooth.errors import InputError
from varsmooth.noise import bernoulli_noise, softmax_noise
from varsmooth.noise.network import (
    expected_label_noise,
    label_noise,
    linearized_label_noise,
    resolve_std,
)
from varsmooth.optim import IVON


@pytest.fixture(autouse=True)
def _one_thread():
    """Thousands of tiny forward passes: intra-op threads only add wake-up latency on a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _linear(k=4, d=3, seed=0):
    torch.manual_seed(seed)
    lin = nn.Linear(d, k).double()
    x = torch.randn(25, d, dtype=torch.float64) * 1.5
    std = {lin.weight: 0.6 * torch.rand(k, d, dtype=torch.float64),
           lin.bias: 0.4 * torch.rand(k, dtype=torch.float64)}  # fmt: skip
    return lin, x, std


def _moments(lin, x, std):
    with torch.no_grad():
        fm = lin(x).numpy()
    var = (x.numpy() ** 2) @ (std[lin.weight].numpy() ** 2).T + std[lin.bias].numpy() ** 2
    return fm, var


def _draws(lin, std, samples, seed):
    """sigma * e_s redrawn by hand: sample by sample, parameters in named_parameters() order."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(samples):
        dw = std[lin.weight] * torch.randn(lin.weight.shape, generator=g, dtype=torch.float64)
        db = std[lin.bias] * torch.randn(lin.bias.shape, generator=g, dtype=torch.float64)
        out.append((dw.numpy(), db.numpy()))
    return out


def test_linear_mc_matches_exact_glm_noise():
    lin, x, std = _linear()
    r = expected_label_noise(lin, x, std, samples=3000, seed=1, batch_size=32)
    fm, var = _moments(lin, x, std)
    exact, qse = softmax_noise(fm, var)  # diagonal: the posterior over weights is diagonal
    assert r.noise.shape == (25, 4) and r.magnitude.shape == (25,) and r.stderr.shape == (25, 4)
    assert np.all(np.abs(r.noise - exact) <= 4 * np.hypot(r.stderr, qse))
    assert np.max(np.abs(exact)) > 10 * np.max(r.stderr)  # the noise is resolved, not buried in MC error


def test_linear_bernoulli_mc_matches_exact():
    lin, x, std = _linear(k=1)
    r = expected_label_noise(lin, x, std, samples=3000, likelihood="bernoulli", labels=torch.ones(25))
    fm, var = _moments(lin, x, std)
    exact = bernoulli_noise(fm, var)
    assert np.all(np.abs(r.noise - exact) <= 4 * r.stderr + 1e-15)
    np.testing.assert_allclose(r.smoothed_labels, 1 + r.noise)


def test_linear_estimators_use_the_same_draws_exactly():
    lin, x, std = _linear()
    mc = expected_label_noise(lin, x, std, samples=5, seed=3, keep_draws=True, batch_size=7)
    li = linearized_label_noise(lin, x, std, samples=5, seed=3, keep_draws=True, batch_size=7, sample_chunk=2)
    fm, _ = _moments(lin, x, std)
    p = special.softmax(fm, axis=1)
    for s, (dw, db) in enumerate(_draws(lin, std, 5, 3)):
        df = x.numpy() @ dw.T + db  # f is linear in theta: f(theta_s) - f(m) exactly
        np.testing.assert_allclose(mc.draws[s], p - special.softmax(fm + df, axis=1), rtol=0, atol=1e-13)
        first_order = -(p * df - p * (p * df).sum(1, keepdims=True))  # Eq. 19: -J_softmax(f(m)) J_f (sigma e)
        np.testing.assert_allclose(li.draws[s], first_order, rtol=0, atol=1e-13)
    np.testing.assert_array_equal(li.noise, li.draws[0])
    np.testing.assert_allclose(li.step_rms, np.sqrt((li.draws**2).sum(-1).mean(0)), rtol=1e-12)
    np.testing.assert_allclose(mc.noise, mc.draws.mean(0), rtol=0, atol=1e-14)
    np.testing.assert_allclose(mc.step_rms, np.sqrt((mc.draws**2).sum(-1).mean(0)), rtol=1e-12)


def _mlp_and_cnn():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)).double()
    cnn = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5), nn.Flatten(),
                        nn.Linear(4 * 6 * 6, 3)).double()  # fmt: skip
    with torch.no_grad():
        cnn[1].running_mean.uniform_(-0.5, 0.5)
        cnn[1].running_var.uniform_(0.5, 2.0)
    return [(mlp, torch.randn(30, 5, dtype=torch.float64)), (cnn, torch.randn(30, 1, 8, 8, dtype=torch.float64))]


@pytest.mark.parametrize("case", [0, 1])
def test_mc_and_linearized_agree_as_sigma_shrinks(case):
    model, x = _mlp_and_cnn()[case]
    model.train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    errs = []
    for sigma in (1e-3, 1e-5):
        mc = expected_label_noise(model, x, sigma, samples=3, seed=0, batch_size=16)
        li = linearized_label_noise(model, x, sigma, samples=3, seed=0, batch_size=16)
        errs.append(np.abs(mc.step_noise - li.step_noise).max() / np.abs(mc.step_noise).max())
    np.testing.assert_allclose(li.step_rms, mc.step_rms, rtol=1e-3)
    assert errs[1] < 1e-3 and errs[1] < errs[0] / 20  # the gap shrinks with sigma (first order)
    assert model.training  # mode restored
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]) and p.grad is None
    for n, b in model.named_buffers():
        assert torch.equal(b, buffers[n])  # eval mode: BatchNorm statistics untouched


def test_batches_datasets_and_labels():
    model, x = _mlp_and_cnn()[0]
    y = torch.randint(0, 3, (30,))
    a = expected_label_noise(model, x, 0.1, samples=4, labels=y, batch_size=30)
    b = expected_label_noise(model, torch.utils.data.TensorDataset(x, y), 0.1, samples=4, labels=y, batch_size=7)
    np.testing.assert_allclose(a.noise, b.noise, rtol=0, atol=1e-14)
    np.testing.assert_allclose(a.smoothed_labels.sum(1), 1.0, atol=1e-12)
    np.testing.assert_allclose(a.smoothed_labels, np.eye(3)[y.numpy()] + a.noise)
    c = label_noise(model, x, 0.1, method="linearized", samples=4, labels=y, batch_size=7)
    d = linearized_label_noise(model, x, 0.1, samples=4, labels=y, batch_size=30, sample_chunk=4)
    np.testing.assert_allclose(c.noise, d.noise, rtol=0, atol=1e-14)
    np.testing.assert_allclose(c.step_rms, d.step_rms, rtol=1e-12)
    assert c.stderr is None and c.method == "linearized" and a.method == "mc"
    e = expected_label_noise(model, x, 0.1, samples=4, seed=1)
    assert not np.allclose(a.noise, e.noise)


def test_ivon_posterior_std_is_accepted():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    x, y = torch.randn(64, 5), torch.randint(0, 3, (64,))
    opt = IVON(model.parameters(), lr=0.1, ess=64.0)
    for _ in range(3):
        with opt.sampled_params(train=True):
            nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad()
    a = expected_label_noise(model, x, opt, samples=8, seed=0)
    b = expected_label_noise(model, x, opt.posterior_std(), samples=8, seed=0)
    np.testing.assert_array_equal(a.noise, b.noise)
    names = {n: s for n, s in resolve_std(model, opt).items()}
    assert set(names) == {n for n, _ in model.named_parameters()}
    assert np.all(np.isfinite(a.noise)) and np.max(a.magnitude) > 0


def test_zero_std_and_partial_mapping():
    model, x = _mlp_and_cnn()[0]
    r = expected_label_noise(model, x, 0.0, samples=2)
    assert np.all(r.noise == 0) and np.all(r.step_rms == 0)
    li = linearized_label_noise(model, x, {"4.bias": torch.full((3,), 0.1, dtype=torch.float64)}, samples=2)
    np.testing.assert_allclose(li.noise.sum(1), 0.0, atol=1e-15)
    assert np.max(np.abs(li.noise)) > 0


def test_bad_std_inputs():
    model, x = _mlp_and_cnn()[0]
    other = nn.Linear(2, 2)
    with pytest.raises(InputError, match="not in the model"):
        expected_label_noise(model, x, {other.weight: torch.ones(2, 2)})
    with pytest.raises(InputError, match="shape"):
        expected_label_noise(model, x, {model[0].weight: torch.ones(3)})
    with pytest.raises(InputError, match=">= 0"):
        expected_label_noise(model, x, -1.0)
    with pytest.raises(InputError, match="method"):
        label_noise(model, x, 0.1, method="laplace")
    with pytest.raises(InputError, match="labels"):
        expected_label_noise(model, x, 0.1, samples=1, labels=torch.full((30,), 7))


def test_state_restored_when_the_forward_raises():
    class Flaky(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 2)
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            if self.calls == 3:
                raise RuntimeError("boom")
            return self.lin(x)

    model = Flaky().train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for fn, kw in ((expected_label_noise, {}), (linearized_label_noise, {"sample_chunk": 1})):
        model.calls = 0
        with pytest.raises(RuntimeError, match="boom"):
            fn(model, torch.randn(8, 3), 0.1, samples=4, batch_size=4, **kw)
        assert model.training and torch.is_grad_enabled()
        for n, p in model.named_parameters():
            assert torch.equal(p, before[n])


def test_single_output_models_and_label_length():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 1), nn.Flatten(0)).double()  # outputs (B,)
    x = torch.randn(12, 3, dtype=torch.float64)
    mc = expected_label_noise(model, x, 0.2, samples=64, likelihood="bernoulli", labels=torch.ones(12))
    li = linearized_label_noise(model, x, 0.2, samples=4, likelihood="poisson")
    assert mc.noise.shape == (12, 1) and mc.smoothed_labels.shape == (12, 1) and li.noise.shape == (12, 1)
    with pytest.raises(InputError, match="labels"):
        expected_label_noise(model, x, 0.2, samples=2, likelihood="bernoulli", labels=torch.ones(5))
