"""SAM / ASAM: rho = 0 is the base optimizer, closed-form steps on a quadratic, BatchNorm helpers, state."""

import copy
import io
import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from varsmooth.optim import SAM
from varsmooth.optim.sam import disable_running_stats, enable_running_stats


def small_net(seed=0, bn=False):
    torch.manual_seed(seed)
    layers = [nn.Linear(5, 8)] + ([nn.BatchNorm1d(8)] if bn else []) + [nn.Tanh(), nn.Linear(8, 3)]
    return nn.Sequential(*layers).double()


def batches(n, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(16, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (16,), generator=g))
        for _ in range(n)
    ]


def loss_fn(model, x, y):
    return nn.functional.cross_entropy(model(x), y)


def sam_train(model, opt, data):
    for x, y in data:
        opt.zero_grad()
        loss_fn(model, x, y).backward()
        opt.step(lambda x=x, y=y: loss_fn(model, x, y).backward())


def base_train(model, opt, data):
    for x, y in data:
        opt.zero_grad()
        loss_fn(model, x, y).backward()
        opt.step()


@pytest.mark.parametrize(
    "cls,kwargs",
    [
        (torch.optim.SGD, dict(lr=0.1, momentum=0.9, weight_decay=1e-3, nesterov=True)),
        (torch.optim.SGD, dict(lr=0.05, momentum=0.9)),
        (torch.optim.AdamW, dict(lr=1e-2, weight_decay=0.05)),
    ],
)
def test_rho_zero_equals_base_optimizer_bitwise(cls, kwargs):
    data = batches(20)
    a, b = small_net(), small_net()
    sam_train(a, SAM(a.parameters(), cls, rho=0.0, **kwargs), data)
    base_train(b, cls(b.parameters(), **kwargs), data)
    moved = any(not torch.equal(p, q) for p, q in zip(a.parameters(), small_net().parameters(), strict=True))
    assert moved
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)
    # and rho > 0 does differ
    c = small_net()
    sam_train(c, SAM(c.parameters(), cls, rho=0.05, **kwargs), data)
    assert any(not torch.equal(p, q) for p, q in zip(c.parameters(), b.parameters(), strict=True))


# ------------------------------------------------------------------------------------------ quadratic, closed form
A = np.array([[3.0, 0.5, 0.0, 0.2], [0.5, 2.0, 0.1, 0.0], [0.0, 0.1, 1.0, 0.3], [0.2, 0.0, 0.3, 4.0]])
B = np.array([1.0, -2.0, 0.5, 0.3])
W0 = np.array([0.7, -1.3, 2.1, -0.4])


def quad_params():
    # the 4-vector split into two tensors so the norm must run over both
    return nn.Parameter(torch.tensor(W0[:3])), nn.Parameter(torch.tensor(W0[3:]))


def quad_loss(p1, p2):
    w = torch.cat([p1, p2])
    At, bt = torch.tensor(A), torch.tensor(B)
    return 0.5 * w @ At @ w - bt @ w


@pytest.mark.parametrize("adaptive", [False, True])
def test_one_step_on_quadratic_matches_closed_form(adaptive):
    rho, lr = 0.3, 0.1
    g = A @ W0 - B
    t = np.abs(W0) if adaptive else np.ones(4)
    e_w = rho * t**2 * g / np.linalg.norm(t * g)
    w_new = W0 - lr * (A @ (W0 + e_w) - B)

    p1, p2 = quad_params()
    opt = SAM([p1, p2], torch.optim.SGD, rho=rho, adaptive=adaptive, lr=lr)
    quad_loss(p1, p2).backward()
    opt.first_step(zero_grad=True)
    np.testing.assert_allclose(torch.cat([p1, p2]).detach().numpy(), W0 + e_w, rtol=0, atol=1e-14)
    assert p1.grad is None or torch.count_nonzero(p1.grad) == 0
    quad_loss(p1, p2).backward()
    opt.second_step()
    np.testing.assert_allclose(torch.cat([p1, p2]).detach().numpy(), w_new, rtol=0, atol=1e-14)


def test_adaptive_with_groups_matches_naive_loop():
    # two groups with different rho / adaptive: one global norm, per-group scaling
    torch.manual_seed(3)
    ws = [torch.randn(3, 2, dtype=torch.float64), torch.randn(4, dtype=torch.float64)]
    gs = [torch.randn(3, 2, dtype=torch.float64), torch.randn(4, dtype=torch.float64)]
    rhos, adapt = [0.2, 0.05], [True, False]
    flat_t = [abs(w) * g if a else g for w, g, a in zip(ws, gs, adapt, strict=True)]
    norm = math.sqrt(sum(float(v) ** 2 for t in flat_t for v in t.flatten()))
    expected = []
    for w, g, r, a in zip(ws, gs, rhos, adapt, strict=True):
        pairs = zip(w.flatten().tolist(), g.flatten().tolist(), strict=True)
        moved = [wi + r * (wi**2 if a else 1.0) * gi / norm for wi, gi in pairs]
        expected.append(torch.tensor(moved, dtype=torch.float64).reshape(w.shape))
    params = [nn.Parameter(w.clone()) for w in ws]
    groups = [{"params": [params[0]], "rho": rhos[0], "adaptive": True}, {"params": [params[1]], "rho": rhos[1]}]
    opt = SAM(groups, torch.optim.SGD, rho=1.0, adaptive=False, lr=0.1)
    for p, g in zip(params, gs, strict=True):
        p.grad = g.clone()
    opt.first_step()
    for p, e in zip(params, expected, strict=True):
        torch.testing.assert_close(p.detach(), e, rtol=0, atol=1e-14)
    opt.second_step()
    for p, w, g in zip(params, ws, gs, strict=True):
        torch.testing.assert_close(p.detach(), w - 0.1 * g, rtol=0, atol=1e-15)


def test_step_closure_equals_two_step_api_and_returns_perturbed_loss():
    data = batches(5)
    a, b = small_net(), small_net()
    oa = SAM(a.parameters(), torch.optim.SGD, rho=0.1, lr=0.1, momentum=0.9)
    ob = SAM(b.parameters(), torch.optim.SGD, rho=0.1, lr=0.1, momentum=0.9)
    for x, y in data:
        oa.zero_grad()
        loss_fn(a, x, y).backward()
        losses = []

        def closure(x=x, y=y, losses=losses):
            loss = loss_fn(a, x, y)
            loss.backward()
            losses.append(loss)
            return loss

        assert oa.step(closure) is losses[0]
        ob.zero_grad()
        loss_fn(b, x, y).backward()
        ob.first_step(zero_grad=True)
        loss_fn(b, x, y).backward()
        ob.second_step(zero_grad=True)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)
    with pytest.raises(ValueError, match="closure"):
        oa.step()


def test_zero_gradient_and_missing_gradient_leave_weights_unchanged():
    p, q = nn.Parameter(torch.ones(3, dtype=torch.float64)), nn.Parameter(torch.ones(2, dtype=torch.float64))
    opt = SAM([p, q], torch.optim.SGD, rho=0.5, lr=0.1)
    p.grad = torch.zeros(3, dtype=torch.float64)
    opt.first_step()
    assert torch.equal(p.detach(), torch.ones(3, dtype=torch.float64)) and q.grad is None
    opt.second_step()
    assert torch.equal(p.detach(), torch.ones(3, dtype=torch.float64))
    assert torch.equal(q.detach(), torch.ones(2, dtype=torch.float64))


@pytest.mark.parametrize("rho", [-0.1, float("nan"), "0.05"])
def test_invalid_rho_raises_value_error_naming_it(rho):
    with pytest.raises(ValueError, match="rho"):
        SAM(small_net().parameters(), torch.optim.SGD, rho=rho, lr=0.1)


def test_invalid_base_optimizer_rejected():
    with pytest.raises(ValueError, match="base_optimizer_cls"):
        SAM(small_net().parameters(), object, lr=0.1)


# --------------------------------------------------------------------------------------------------- BatchNorm
def sam_step_bn(model, opt, x, y, helpers):
    if helpers:
        enable_running_stats(model)
    opt.zero_grad()
    loss_fn(model, x, y).backward()
    opt.first_step(zero_grad=True)
    if helpers:
        disable_running_stats(model)
    loss_fn(model, x, y).backward()
    opt.second_step(zero_grad=True)
    if helpers:
        enable_running_stats(model)


@pytest.mark.parametrize("momentum", [0.1, None])
def test_batchnorm_running_stats_updated_once_per_step(momentum):
    data = batches(4, seed=5)
    model = small_net(bn=True)
    model[1].momentum = momentum
    no_helpers = copy.deepcopy(model)
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.2, lr=0.1, momentum=0.9)
    opt_nh = SAM(no_helpers.parameters(), torch.optim.SGD, rho=0.2, lr=0.1, momentum=0.9)
    mean, var, n = model[1].running_mean.clone(), model[1].running_var.clone(), 0
    for x, y in data:
        # expected: one update from the first forward, at the unperturbed weights
        with torch.no_grad():
            h = model[0](x)
        n += 1
        f = momentum if momentum is not None else 1.0 / n
        mean = (1 - f) * mean + f * h.mean(0)
        var = (1 - f) * var + f * h.var(0, unbiased=True)
        sam_step_bn(model, opt, x, y, helpers=True)
        sam_step_bn(no_helpers, opt_nh, x, y, helpers=False)
        torch.testing.assert_close(model[1].running_mean, mean, rtol=0, atol=1e-14)
        torch.testing.assert_close(model[1].running_var, var, rtol=0, atol=1e-14)
        assert int(model[1].num_batches_tracked) == n
    assert model[1].track_running_stats and not hasattr(model[1], "_varsmooth_sam_track_running_stats")
    # the helpers do not change the training-mode forward: the weights are identical, only the statistics differ
    for p, q in zip(model.parameters(), no_helpers.parameters(), strict=True):
        assert torch.equal(p, q)
    assert int(no_helpers[1].num_batches_tracked) == 2 * len(data)
    assert not torch.allclose(no_helpers[1].running_mean, model[1].running_mean)


def test_disable_is_idempotent_and_eval_uses_running_stats():
    model = small_net(bn=True)
    disable_running_stats(model)
    disable_running_stats(model)
    enable_running_stats(model)
    assert model[1].track_running_stats
    disable_running_stats(model)
    model.eval()
    x = torch.randn(4, 5, dtype=torch.float64)
    bn = model[1]
    h = model[0](x)
    expected = (h - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
    torch.testing.assert_close(bn(h), expected)


# ------------------------------------------------------------------------------------- param groups and state
def test_param_groups_shared_with_base_and_schedulers_work_on_either():
    model = small_net()
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9)
    assert opt.param_groups is opt.base_optimizer.param_groups
    assert opt.param_groups[0]["momentum"] == 0.9 and opt.param_groups[0]["rho"] == 0.05
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    x, y = batches(1)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "lr_scheduler.step() before optimizer.step()" warning
        sam_step_bn(model, opt, x, y, helpers=False)
        sched.step()
    assert opt.base_optimizer.param_groups[0]["lr"] == pytest.approx(0.05)
    sched2 = torch.optim.lr_scheduler.MultiStepLR(opt.base_optimizer, milestones=[1], gamma=0.1)
    opt.zero_grad()
    loss_fn(model, x, y).backward()
    opt.step(lambda: loss_fn(model, x, y).backward())
    sched2.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.005)


def test_state_dict_round_trip_continues_bitwise():
    data = batches(8, seed=9)
    kwargs = dict(rho=0.1, adaptive=True, lr=1e-2, weight_decay=1e-2)
    a = small_net()
    oa = SAM(a.parameters(), torch.optim.AdamW, **kwargs)
    sam_train(a, oa, data[:4])
    # save in the middle of a step as well: after first_step the saved weights are part of the state
    oa.zero_grad()
    loss_fn(a, *data[4]).backward()
    oa.first_step(zero_grad=True)
    buf = io.BytesIO()
    torch.save({"model": a.state_dict(), "opt": oa.state_dict()}, buf)
    sd = oa.state_dict()
    assert set(sd) == {"sam", "base_optimizer"} and sd["base_optimizer"]["state"]  # Adam moments are there
    buf.seek(0)
    ckpt = torch.load(buf)
    b = small_net(seed=42)
    b.load_state_dict(ckpt["model"])
    ob = SAM(b.parameters(), torch.optim.AdamW, **kwargs)
    ob.load_state_dict(ckpt["opt"])
    assert ob.param_groups is ob.base_optimizer.param_groups
    for model, opt in ((a, oa), (b, ob)):
        loss_fn(model, *data[4]).backward()
        opt.second_step(zero_grad=True)
        sam_train(model, opt, data[5:])
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(oa.base_optimizer.state[p][key], ob.base_optimizer.state[q][key])
