"""IVON behaviour: curvature estimate, state_dict round trip, validation, special parameters, dtypes, schedulers,
sampling semantics, fixed covariance, posterior predictive."""

import io
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from varsmooth.optim import IVON, predictive_probs


def _mlp(seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).to(dtype)


def _batch(dtype=torch.float32):
    g = torch.Generator().manual_seed(5)
    return torch.randn(32, 4, generator=g).to(dtype), torch.randint(0, 3, (32,), generator=g)


def _train(model, opt, steps, mc=1, x=None, y=None):
    x, y = (x, y) if x is not None else _batch(next(model.parameters()).dtype)
    for _ in range(steps):
        for _ in range(mc):
            with opt.sampled_params(train=True):
                opt.zero_grad()
                F.cross_entropy(model(x), y).backward()
        opt.step()


def test_hessian_estimate_converges_to_known_diagonal_curvature():
    # loss = 0.5 sum_i a_i theta_i^2 has Hessian diag(a); E[g (theta - m)] / sigma^2 = a for every m
    a = torch.linspace(0.5, 4.0, 400, dtype=torch.float64)
    theta = nn.Parameter(torch.randn(400, dtype=torch.float64))
    opt = IVON([theta], lr=0.05, ess=100.0, hess_init=1.0, beta2=0.995, weight_decay=0.0, mc_samples=8)
    gen = torch.Generator().manual_seed(0)
    avg = torch.zeros_like(a)
    for t in range(2000):
        for _ in range(8):
            with opt.sampled_params(train=True, generator=gen):
                theta.grad = None
                (0.5 * (a * theta**2).sum()).backward()
        opt.step()
        if t >= 1000:  # average out the EMA's Monte Carlo noise
            avg += opt.state[theta]["hess"] / 1000
    rel = (avg - a).abs() / a
    assert rel.mean() < 0.03 and rel.max() < 0.12  # h0 = 1 is off by up to 300%
    assert theta.abs().max() < 0.05  # the mean found the minimum too


@pytest.mark.parametrize("mc, generator", [(1, True), (2, True), (1, False)])
def test_state_dict_round_trip_continues_bitwise(tmp_path, mc, generator):
    def fresh(seed):
        model = _mlp(seed)
        gen = torch.Generator().manual_seed(seed) if generator else None
        opt = IVON(model.parameters(), lr=0.1, ess=50.0, beta2=0.99, mc_samples=mc, generator=gen)
        return model, opt, torch.optim.lr_scheduler.StepLR(opt, step_size=7, gamma=0.5)

    def run(model, opt, sched, steps):
        for _ in range(steps):
            _train(model, opt, 1, mc)
            sched.step()

    torch.manual_seed(11)
    model, opt, sched = fresh(0)
    run(model, opt, sched, 40)

    torch.manual_seed(11)
    model_a, opt_a, sched_a = fresh(0)
    run(model_a, opt_a, sched_a, 20)
    buf = io.BytesIO()
    torch.save({"m": model_a.state_dict(), "o": opt_a.state_dict(), "s": sched_a.state_dict(),
                "rng": torch.get_rng_state()}, buf)  # fmt: skip
    run(model_a, opt_a, sched_a, 3)  # keep training the old objects: the checkpoint must not share tensors
    buf.seek(0)
    ckpt = torch.load(buf)
    model_b, opt_b, sched_b = fresh(99)  # different init and different generator seed
    model_b.load_state_dict(ckpt["m"])
    opt_b.load_state_dict(ckpt["o"])
    sched_b.load_state_dict(ckpt["s"])
    torch.set_rng_state(ckpt["rng"])
    run(model_b, opt_b, sched_b, 20)

    for p, q in zip(model.parameters(), model_b.parameters(), strict=True):
        assert torch.equal(p, q)
        for key in ("momentum", "hess", "step"):
            assert torch.equal(torch.as_tensor(opt.state[p][key]), torch.as_tensor(opt_b.state[q][key]))
    assert opt.param_groups[0]["lr"] == opt_b.param_groups[0]["lr"] == 0.1 * 0.5**5
    if generator:
        assert torch.equal(
            opt._generators[torch.device("cpu")].get_state(), opt_b._generators[torch.device("cpu")].get_state()
        )


def test_state_dict_mid_step_keeps_the_accumulated_samples():
    torch.manual_seed(3)
    model, (x, y) = _mlp(), _batch()
    opt = IVON(model.parameters(), lr=0.1, ess=50.0, mc_samples=2, generator=torch.Generator().manual_seed(1))
    with opt.sampled_params(train=True):
        F.cross_entropy(model(x), y).backward()
    sd = opt.state_dict()
    assert sd["param_groups"][0]["samples"] == 1 and "grad_sum" in sd["state"][0]
    model2 = _mlp()
    opt2 = IVON(model2.parameters(), lr=0.1, ess=50.0, mc_samples=2)
    opt2.load_state_dict(sd)
    for o, m in ((opt, model), (opt2, model2)):
        with o.sampled_params(train=True):
            o.zero_grad()
            F.cross_entropy(m(x), y).backward()
        o.step()
    for p, q in zip(model.parameters(), model2.parameters(), strict=True):
        assert torch.equal(p, q)
    assert "grad_sum" not in opt.state_dict()["state"][0]  # between steps the sums are scratch


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(lr=-0.1), "lr"), (dict(lr=float("nan")), "lr"), (dict(ess=0.0), "ess"), (dict(ess=-5), "ess"),
        (dict(hess_init=0.0), "hess_init"), (dict(beta1=1.0), "beta1"), (dict(beta1=-0.1), "beta1"),
        (dict(beta2=1.5), "beta2"), (dict(weight_decay=-1e-4), "weight_decay"), (dict(mc_samples=0), "mc_samples"),
        (dict(mc_samples=1.5), "mc_samples"), (dict(clip_radius=0.0), "clip_radius"),
        (dict(hess_approx="exact"), "hess_approx"),
    ],
)  # fmt: skip
def test_invalid_hyperparameters_raise_value_error_naming_the_value(kwargs, name):
    args = dict(dict(lr=0.1, ess=10.0), **kwargs)
    with pytest.raises(ValueError, match=f"Invalid {name}: {args[name]!r}".replace("(", r"\(")):
        IVON(_mlp().parameters(), **args)


def test_invalid_param_group_value_raises():
    model = _mlp()
    with pytest.raises(ValueError, match="Invalid ess: -1.0"):
        IVON([{"params": model[0].parameters()}, {"params": model[2].parameters(), "ess": -1.0}], lr=0.1, ess=1.0)


def test_frozen_and_gradless_parameters_are_left_alone():
    model, (x, y) = _mlp(), _batch()
    model[0].bias.requires_grad_(False)
    model.unused = nn.Parameter(torch.ones(3))  # requires grad but never used in forward
    opt = IVON(model.parameters(), lr=0.1, ess=20.0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for _ in range(5):
        with opt.sampled_params(train=True):
            assert torch.equal(model[0].bias, before["0.bias"])  # frozen: not perturbed
            assert not torch.equal(model[0].weight, before["0.weight"])  # trainable: perturbed
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
        opt.step()
    assert torch.equal(model[0].bias, before["0.bias"]) and model[0].bias not in opt.state
    assert torch.equal(model.unused, before["unused"]) and opt.state[model.unused]["step"] == 0
    assert not torch.equal(model[0].weight, before["0.weight"]) and opt.state[model[0].weight]["step"] == 5


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("foreach", [True, False])
def test_dtypes_keep_parameter_dtype_and_h_at_least_float32(dtype, foreach):
    model, (x, y) = _mlp(dtype=dtype), _batch(dtype)
    opt = IVON(model.parameters(), lr=0.1, ess=30.0, beta2=0.9, foreach=foreach)
    with torch.no_grad():
        loss0 = F.cross_entropy(model(x).float(), y).item()
    _train(model, opt, 30, x=x, y=y)
    state_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    for p in model.parameters():
        assert p.dtype == dtype and torch.isfinite(p.float()).all()
        assert opt.state[p]["hess"].dtype == opt.state[p]["momentum"].dtype == state_dtype
        assert (opt.state[p]["hess"] != 1.0).any()  # h was updated
        assert opt.posterior_std()[p].dtype == state_dtype
    with torch.no_grad():
        assert F.cross_entropy(model(x).float(), y).item() < loss0  # it trains


def test_mixed_dtypes_in_one_group_fast_path_equals_reference_path():
    runs = []
    for foreach in (True, False):
        model = _mlp(dtype=torch.float64)
        model[2].float()  # one group, two (device, dtype) buckets
        x, y = _batch(torch.float64)
        opt = IVON(model.parameters(), lr=0.1, ess=30.0, beta2=0.9, foreach=foreach)
        torch.manual_seed(0)
        for _ in range(5):
            with opt.sampled_params(train=True):
                opt.zero_grad()
                F.cross_entropy(model[2](model[1](model[0](x)).float()), y).backward()
            opt.step()
        runs.append((model, opt))
    (fast, fopt), (ref, ropt) = runs
    dtypes = [torch.float64] * 2 + [torch.float32] * 2
    assert [fopt.state[p]["hess"].dtype for p in fast.parameters()] == [p.dtype for p in fast.parameters()] == dtypes
    for p, q in zip(fast.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(fopt.state[p]["hess"], ropt.state[q]["hess"], rtol=1e-5, atol=1e-7)
        assert fopt.state[p]["step"] == 5


def test_lr_scheduler_drives_the_mean_update():
    model = _mlp()
    opt = IVON(model.parameters(), lr=0.1, ess=50.0, beta2=0.99)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 1.0 if epoch < 3 else 0.0)
    for _ in range(3):
        _train(model, opt, 1)
        sched.step()
    frozen = [p.detach().clone() for p in model.parameters()]
    hess = [opt.state[p]["hess"].clone() for p in model.parameters()]
    _train(model, opt, 4)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), frozen, strict=True))  # lr = 0: mean fixed
    assert any(not torch.equal(opt.state[p]["hess"], h) for p, h in zip(model.parameters(), hess, strict=True))


def test_sampled_params_restores_the_mean_when_the_block_raises():
    model, (x, y) = _mlp(), _batch()
    opt = IVON(model.parameters(), lr=0.1, ess=10.0)
    storage = [p.data_ptr() for p in model.parameters()]
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(KeyError):
        with opt.sampled_params(train=True):
            F.cross_entropy(model(x), y).backward()
            raise KeyError("boom")
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))
    assert [p.data_ptr() for p in model.parameters()] == storage
    assert opt.param_groups[0]["samples"] == 0  # the failed sample is discarded
    with pytest.raises(RuntimeError, match="sampled_params"):
        opt.step()
    with pytest.raises(RuntimeError, match="nested"):
        with opt.sampled_params(), opt.sampled_params():
            pass
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))


def test_beta2_one_keeps_h_fixed_at_hess_init():
    model = _mlp()
    opt = IVON(model.parameters(), lr=0.1, ess=50.0, hess_init=0.7, beta2=1.0)
    before = [p.detach().clone() for p in model.parameters()]
    _train(model, opt, 20, mc=2)
    for p, q in zip(model.parameters(), before, strict=True):
        assert torch.equal(opt.state[p]["hess"], torch.full_like(p, 0.7))
        assert not torch.equal(p, q)
    for s in opt.posterior_std().values():
        torch.testing.assert_close(s, torch.full_like(s, (50.0 * (0.7 + 1e-4)) ** -0.5))


def test_samples_are_mean_plus_sigma_times_generator_noise():
    model = _mlp(dtype=torch.float64)
    opt = IVON(model.parameters(), lr=0.1, ess=25.0, hess_init=0.3, beta2=0.9)
    _train(model, opt, 3)
    sigma = opt.posterior_std()
    e = torch.randn(sum(p.numel() for p in model.parameters()), generator=torch.Generator().manual_seed(4),
                    dtype=torch.float64).split([p.numel() for p in model.parameters()])  # fmt: skip
    with opt.sampled_params(generator=torch.Generator().manual_seed(4)):
        theta = [p.detach().clone() for p in model.parameters()]
    for p, t, ei in zip(model.parameters(), theta, e, strict=True):
        torch.testing.assert_close(t, p + sigma[p] * ei.view_as(p), rtol=1e-12, atol=1e-14)


def test_posterior_std_formula_and_sample_statistics():
    model = nn.Linear(300, 50)
    opt = IVON(model.parameters(), lr=0.1, ess=200.0, hess_init=0.2, weight_decay=1e-2)
    opt.state[model.weight]  # lazily created on first use
    with torch.no_grad():
        std = opt.posterior_std()
    assert torch.allclose(std[model.weight], torch.full_like(model.weight, (200.0 * (0.2 + 1e-2)) ** -0.5))
    mean = model.weight.detach().clone()
    with opt.sampled_params():
        z = (model.weight.detach() - mean) / std[model.weight]
    assert abs(z.mean().item()) < 0.02 and abs(z.std().item() - 1.0) < 0.02  # 15,000 draws of N(0, 1)


def test_predictive_probs_equals_a_naive_loop_over_explicit_samples():
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 3)).double()
    x, y = _batch(torch.float64)
    opt = IVON(model.parameters(), lr=0.1, ess=10.0, beta2=0.9)
    _train(model, opt, 5, x=x, y=y)
    model.train()
    mean = {n: p.detach().clone() for n, p in model.named_parameters()}
    sigma = {n: opt.posterior_std()[p] for n, p in model.named_parameters()}
    probs = predictive_probs(model, opt, x, samples=7, generator=torch.Generator().manual_seed(2))
    assert probs.shape == (32, 3) and model.training
    assert all(torch.equal(p, mean[n]) for n, p in model.named_parameters())

    gen, expected = torch.Generator().manual_seed(2), torch.zeros(32, 3, dtype=torch.float64)
    model.eval()
    for _ in range(7):  # one draw per group, parameters in order
        e = torch.randn(sum(p.numel() for p in mean.values()), generator=gen, dtype=torch.float64)
        chunks = e.split([p.numel() for p in mean.values()])
        theta = {n: mean[n] + sigma[n] * c.view_as(mean[n]) for n, c in zip(mean, chunks, strict=True)}
        expected += torch.softmax(functional_call(model, theta, (x,)), -1) / 7
    torch.testing.assert_close(probs, expected, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(probs.sum(-1), torch.ones(32, dtype=torch.float64))
    with pytest.raises(ValueError, match="Invalid samples: -1"):
        predictive_probs(model, opt, x, samples=-1)


def test_step_with_closure_matches_the_explicit_loop():
    x, y = _batch()
    results = []
    for use_closure in (False, True):
        model = _mlp()
        opt = IVON(model.parameters(), lr=0.1, ess=50.0, mc_samples=2, generator=torch.Generator().manual_seed(0))

        def closure(opt=opt, model=model):
            with opt.sampled_params(train=True):
                opt.zero_grad()
                loss = F.cross_entropy(model(x), y)
                loss.backward()
            return loss

        for _ in range(3):
            if use_closure:
                loss = opt.step(closure)
                assert math.isfinite(loss.item())
            else:
                _train(model, opt, 1, mc=2, x=x, y=y)
        results.append([p.detach().clone() for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*results, strict=True))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_state_follows_the_device_and_paths_agree():
    runs = []
    for foreach in (True, False):
        model, (x, y) = _mlp().cuda(), (t.cuda() for t in _batch())
        gen = torch.Generator(device="cuda").manual_seed(0)
        opt = IVON(model.parameters(), lr=0.1, ess=50.0, beta2=0.99, foreach=foreach, generator=gen)
        _train(model, opt, 5, x=x, y=y)
        runs.append((model, opt))
    (fast, fopt), (ref, _) = runs
    for p, q in zip(fast.parameters(), ref.parameters(), strict=True):
        assert fopt.state[p]["hess"].device == p.device
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    assert "cuda" in next(iter(fopt.state_dict()["generators"]))


def test_replaced_or_edited_state_tensors_are_used_by_the_next_sample_and_step():
    """State lives in flat per-bucket buffers behind views; assigning a new tensor or editing one in place
    must reach sampling (sigma) and the update."""
    model = _mlp(dtype=torch.float64)
    opt = IVON(model.parameters(), lr=0.1, ess=25.0, hess_init=0.3, beta2=0.9)
    _train(model, opt, 2)
    w, b = model[0].weight, model[0].bias
    opt.state[w]["hess"] = torch.full_like(w, 4.0)  # a new tensor
    opt.state[b]["hess"].fill_(9.0)  # in place
    sigma = opt.posterior_std()
    torch.testing.assert_close(sigma[w], torch.full_like(w, (25.0 * (4.0 + 1e-4)) ** -0.5))
    torch.testing.assert_close(sigma[b], torch.full_like(b, (25.0 * (9.0 + 1e-4)) ** -0.5))
    gen = torch.Generator().manual_seed(4)
    e = torch.randn(sum(p.numel() for p in model.parameters()), generator=gen, dtype=torch.float64)
    mean = [p.detach().clone() for p in model.parameters()]
    with opt.sampled_params(generator=torch.Generator().manual_seed(4)):
        theta = [p.detach().clone() for p in model.parameters()]
    offsets = [(t - m).reshape(-1) for t, m in zip(theta, mean, strict=True)]
    torch.testing.assert_close(torch.cat(offsets), e * torch.cat([s.reshape(-1) for s in sigma.values()]))
    _train(model, opt, 1)
    assert opt.state[w]["step"] == 3 and (opt.state[w]["hess"] - 4.0).abs().max() < 1.0  # continued from 4.0
