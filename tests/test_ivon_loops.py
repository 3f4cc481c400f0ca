"""IVON inside the training loops people use: step(closure) and Lightning, mixed precision with GradScaler,
gradient accumulation in two modes, torch.compile'd models."""

import importlib.util
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from varsmooth.optim import IVON


def _mlp(seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3)).to(dtype)


def _data(n=64, dtype=torch.float32):
    g = torch.Generator().manual_seed(5)
    return torch.randn(n, 6, generator=g).to(dtype), torch.randint(0, 3, (n,), generator=g)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _snapshot(model, opt):
    params = [p.detach().clone() for p in model.parameters()]
    state = [{k: (v.clone() if torch.is_tensor(v) else v) for k, v in opt.state[p].items()} for p in model.parameters()]
    return params, state


# ---------------------------------------------------------------- closure and Lightning
def _manual_run(steps, x, y, batch, **kw):
    """The explicit loop the closure and Lightning runs must reproduce: one sample per batch, in order."""
    model = _mlp()
    opt = IVON(model.parameters(), generator=_gen(3), **kw)
    for t in range(steps):
        i = (t * batch) % len(x)
        with opt.sampled_params(train=True):
            opt.zero_grad()
            F.cross_entropy(model(x[i : i + batch]), y[i : i + batch]).backward()
        opt.step()
    return model, opt


def test_step_with_a_plain_closure_samples_the_weights():
    """A torch-style closure (no sampled_params in it) trains with posterior sampling, mc_samples times."""
    x, y = _data()
    kw = dict(lr=0.1, ess=50.0, beta2=0.9)
    ref, ref_opt = _manual_run(4, x, y, 64, **kw)
    model = _mlp()
    opt = IVON(model.parameters(), generator=_gen(3), **kw)
    seen = []

    def closure():
        opt.zero_grad()
        seen.append(model[0].weight.detach().clone())
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss

    for _ in range(4):
        mean = model[0].weight.detach().clone()
        loss = opt.step(closure)
        assert (seen[-1] - mean).abs().max() > 1e-3  # the closure ran at a sample, not at the mean
        assert loss.ndim == 0 and math.isfinite(loss.item())
    for p, q in zip(model.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
        torch.testing.assert_close(opt.state[p]["hess"], ref_opt.state[q]["hess"], rtol=0, atol=0)
    h = opt.state[model[0].weight]["hess"]
    assert (h - 1.0).abs().max() > 0.1 and opt.state[model[0].weight]["step"] == 4


def test_closure_with_its_own_block_joins_and_mc_samples_count():
    x, y = _data()
    runs = []
    for own_block in (False, True):
        model = _mlp()
        opt = IVON(model.parameters(), lr=0.1, ess=50.0, beta2=0.9, mc_samples=3, generator=_gen(1))
        calls = []

        def closure(opt=opt, model=model, own_block=own_block, calls=calls):
            calls.append(1)
            if own_block:  # ivon-opt style
                with opt.sampled_params(train=True):
                    opt.zero_grad()
                    loss = F.cross_entropy(model(x), y)
                    loss.backward()
                return loss
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            return loss

        for _ in range(3):
            opt.step(closure)
        assert len(calls) == 9 and opt.param_groups[0]["samples"] == 0
        runs.append([p.detach().clone() for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*runs, strict=True))


def test_lightning_automatic_optimization_updates_h_from_sampled_weights():
    L = pytest.importorskip("lightning")
    from torch.utils.data import DataLoader, TensorDataset

    x, y = _data()
    kw = dict(lr=0.1, ess=50.0, beta2=0.9)
    ref, ref_opt = _manual_run(6, x, y, 16, **kw)

    class Lit(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net, self.offsets = _mlp(), []

        def on_train_batch_start(self, batch, batch_idx):
            self.mean = self.net[0].weight.detach().clone()

        def training_step(self, batch, batch_idx):
            std = self.trainer.optimizers[0].posterior_std()[self.net[0].weight]
            with torch.no_grad():  # this forward sees m + sigma e: (w - m) / sigma is standard normal
                self.offsets.append(((self.net[0].weight - self.mean) / std).std().item())
            return F.cross_entropy(self.net(batch[0]), batch[1])

        def configure_optimizers(self):
            return IVON(self.parameters(), generator=_gen(3), **kw)

    lit = Lit()
    trainer = L.Trainer(max_steps=6, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(lit, DataLoader(TensorDataset(x, y), batch_size=16))
    opt = trainer.optimizers[0]
    assert len(lit.offsets) == 6 and all(0.7 < s < 1.3 for s in lit.offsets)
    for p, q in zip(lit.net.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(opt.state[p]["hess"], ref_opt.state[q]["hess"], rtol=1e-6, atol=1e-7)
        assert opt.state[p]["step"] == 6
    assert (opt.state[lit.net[0].weight]["hess"] - 1.0).abs().max() > 0.1  # h moved from hess_init


def test_lightning_manual_optimization_example_matches_the_loop():
    pytest.importorskip("lightning")
    from torch.utils.data import DataLoader, TensorDataset

    path = Path(__file__).resolve().parents[1] / "examples" / "lightning_ivon.py"
    spec = importlib.util.spec_from_file_location("lightning_ivon", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    x, y = _data()
    kw = dict(lr=0.1, beta2=0.9)
    ref, ref_opt = _manual_run(4, x, y, 16, ess=50.0, **kw)
    module = example.ManualIVON(_mlp(), ess=50.0, generator=_gen(3), **kw)
    example.trainer(4).fit(module, DataLoader(TensorDataset(x, y), batch_size=16))
    for p, q in zip(module.net.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------- mixed precision
def _amp_run(steps, scaler=None, inf_at=(), mc=1, dtype=torch.float32, foreach=True, device="cpu", amp=torch.bfloat16):
    """Autocast (bf16 on CPU); the noise of sample (t, s) comes from its own generator so runs can skip steps."""
    model, (x, y) = _mlp(dtype=dtype).to(device), (t.to(device) for t in _data(dtype=dtype))
    opt = IVON(model.parameters(), lr=0.1, ess=50.0, beta2=0.9, mc_samples=mc, foreach=foreach)
    for t in range(steps):
        for s in range(mc):
            gen = torch.Generator(device=device).manual_seed(100 * t + s)
            with opt.sampled_params(train=True, generator=gen):
                opt.zero_grad()
                with torch.autocast(device, dtype=amp):
                    loss = F.cross_entropy(model(x), y)
                if (t, s) in inf_at:
                    loss = loss * float("inf")
                (scaler.scale(loss) if scaler else loss).backward()
        if scaler:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
    return model, opt


def test_grad_scaler_step_unscales_the_accumulated_sums():
    base, base_opt = _amp_run(5, mc=2)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    model, opt = _amp_run(5, scaler, mc=2)
    assert scaler.get_scale() == 2.0**10  # no overflow, no skipped step
    for p, q in zip(model.parameters(), base.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)  # powers of two scale exactly
        torch.testing.assert_close(opt.state[p]["hess"], base_opt.state[q]["hess"], rtol=1e-6, atol=1e-7)
        assert opt.state[p]["step"] == 5 and opt.state[p]["hess"].dtype == torch.float32
    # not vacuous: stepping on the scaled sums (opt.step() instead of scaler.step) gives a different h
    bad, bad_opt = _amp_run(1, _NoStepScaler(2.0**10), mc=2)
    one, one_opt = _amp_run(1, mc=2)
    w, v = bad[0].weight, one[0].weight
    assert (bad_opt.state[w]["hess"] - one_opt.state[v]["hess"]).abs().max() > 1.0


class _NoStepScaler:
    """Scales the loss but steps the optimizer directly: what IVON would see without unscaling."""

    def __init__(self, scale):
        self.s = scale

    def scale(self, loss):
        return loss * self.s

    def step(self, opt):
        opt.step()

    def update(self):
        pass


@pytest.mark.parametrize("bad_sample", [0, 1])
def test_grad_scaler_skips_an_inf_step_without_touching_h_or_counters(bad_sample):
    """Sample ``bad_sample`` of step 2 overflows; with 2 samples the scaler's own check sees only the last."""
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    model, opt = _amp_run(2, scaler, mc=2)
    before = _snapshot(model, opt)
    scale = scaler.get_scale()
    for s in range(2):
        with opt.sampled_params(train=True, generator=_gen(999 + s)):
            opt.zero_grad()
            loss = F.cross_entropy(model(_data()[0]), _data()[1]) * (float("inf") if s == bad_sample else 1.0)
            scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    after = _snapshot(model, opt)
    for p, q in zip(before[0], after[0], strict=True):
        assert torch.equal(p, q)
    for s0, s1 in zip(before[1], after[1], strict=True):
        for k in ("hess", "momentum"):
            assert torch.equal(s0[k], s1[k]) and torch.isfinite(s1[k]).all()
        assert s0["step"] == s1["step"] == 2 and not s1["has_grad"]
    assert opt.param_groups[0]["samples"] == 0
    if bad_sample == 1:  # the scaler saw the overflow in p.grad and halves its scale
        assert scaler.get_scale() == scale / 2
    # training goes on from the untouched state: one more good step equals the run that never had the bad one
    ref, ref_opt = _amp_run(3, torch.amp.GradScaler("cpu", init_scale=2.0**10), mc=2)
    for s in range(2):
        with opt.sampled_params(train=True, generator=_gen(200 + s)):
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = F.cross_entropy(model(_data()[0]), _data()[1])
            scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    for p, q in zip(model.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
        assert opt.state[p]["step"] == 3


def test_bf16_parameters_under_autocast_keep_float32_state_and_paths_agree():
    runs = [_amp_run(4, torch.amp.GradScaler("cpu", init_scale=2.0**8), dtype=torch.bfloat16, foreach=f)
            for f in (True, False)]  # fmt: skip
    (fast, fopt), (ref, ropt) = runs
    for p, q in zip(fast.parameters(), ref.parameters(), strict=True):
        assert p.dtype == torch.bfloat16
        assert fopt.state[p]["hess"].dtype == fopt.state[p]["momentum"].dtype == torch.float32
        torch.testing.assert_close(p, q, rtol=1.6e-2, atol=1e-2)  # bf16 rounding of theta differs by path
        torch.testing.assert_close(fopt.state[p]["hess"], ropt.state[q]["hess"], rtol=0.05, atol=0.05)
        assert (fopt.state[p]["hess"] - 1.0).abs().max() > 0.05


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("amp", [torch.float16, torch.bfloat16])
def test_cuda_autocast_with_grad_scaler_matches_the_unscaled_run_and_skips_inf(amp):
    base, base_opt = _amp_run(5, mc=2, device="cuda", amp=amp)
    scaler = torch.amp.GradScaler("cuda", init_scale=2.0**10)
    model, opt = _amp_run(5, scaler, mc=2, device="cuda", amp=amp)
    for p, q in zip(model.parameters(), base.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(opt.state[p]["hess"], base_opt.state[q]["hess"], rtol=1e-5, atol=1e-6)
        assert opt.state[p]["hess"].dtype == torch.float32 and opt.state[p]["step"] == 5
    scaler = torch.amp.GradScaler("cuda", init_scale=2.0**10)
    model, opt = _amp_run(3, scaler, inf_at={(2, 0)}, mc=2, device="cuda", amp=amp)
    ref, ref_opt = _amp_run(2, mc=2, device="cuda", amp=amp)
    assert scaler.get_scale() == 2.0**10  # sample 0 overflowed, the scaler saw only sample 1
    for p, q in zip(model.parameters(), ref.parameters(), strict=True):  # step 3 skipped
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
        assert opt.state[p]["step"] == 2


# ---------------------------------------------------------------- gradient accumulation
def test_accumulation_one_sample_shared_by_k_micro_batches_equals_one_big_batch():
    x, y = _data(64, torch.float64)
    runs = []
    for k in (1, 4):
        model = _mlp(dtype=torch.float64)
        opt = IVON(model.parameters(), lr=0.1, ess=50.0, beta2=0.9, generator=_gen(2))
        for _ in range(5):
            with opt.sampled_params(train=True):  # one weight sample for all k micro-batches
                opt.zero_grad()
                for xb, yb in zip(x.chunk(k), y.chunk(k), strict=True):
                    (F.cross_entropy(model(xb), yb) / k).backward()
            opt.step()
        runs.append((model, opt))
    (big, bopt), (acc, aopt) = runs
    for p, q in zip(acc.parameters(), big.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)
        for key in ("hess", "momentum"):
            torch.testing.assert_close(aopt.state[p][key], bopt.state[q][key], rtol=1e-12, atol=1e-14)
    assert (aopt.state[acc[0].weight]["hess"] - 1.0).abs().max() > 0.1


@pytest.mark.parametrize("foreach", [True, False])
def test_accumulation_one_sample_per_micro_batch_averages_the_samples(foreach):
    """k micro-batches, each in its own block: g_hat and h_hat average over the k (sample, batch) pairs."""
    x, y = _data(64, torch.float64)
    k, ess, h0, wd, b1, b2, lr = 4, 50.0, 1.0, 1e-4, 0.9, 0.9, 0.1
    model = _mlp(dtype=torch.float64)
    mean = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = IVON(model.parameters(), lr=lr, ess=ess, beta2=b2, foreach=foreach, generator=_gen(4))
    for xb, yb in zip(x.chunk(k), y.chunk(k), strict=True):
        with opt.sampled_params(train=True):
            opt.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
    opt.step()

    gen, scale = _gen(4), math.sqrt(ess * (h0 + wd))  # the same draws: one per sample, parameters in order
    g_hat = {n: torch.zeros_like(m) for n, m in mean.items()}
    h_hat = {n: torch.zeros_like(m) for n, m in mean.items()}
    for xb, yb in zip(x.chunk(k), y.chunk(k), strict=True):
        e = torch.randn(sum(m.numel() for m in mean.values()), generator=gen, dtype=torch.float64)
        e = dict(zip(mean, [c.view_as(m) for c, m in zip(e.split([m.numel() for m in mean.values()]),
                                                          mean.values(), strict=True)], strict=True))  # fmt: skip
        theta = {n: (m + e[n] / scale).requires_grad_() for n, m in mean.items()}
        grads = torch.autograd.grad(F.cross_entropy(functional_call(model, theta, (xb,)), yb), list(theta.values()))
        for n, g in zip(theta, grads, strict=True):
            g_hat[n] += g / k
            h_hat[n] += g * (theta[n] - mean[n]).detach() * scale**2 / k  # g (theta - m) / sigma^2
    for n, p in model.named_parameters():
        h = b2 * h0 + (1 - b2) * h_hat[n] + 0.5 * (1 - b2) ** 2 * (h0 - h_hat[n]) ** 2 / (h0 + wd)
        mom = (1 - b1) * g_hat[n]
        expected = mean[n] - lr * (h0 + wd) * (mom / (1 - b1) + wd * mean[n]) / (h + wd)
        torch.testing.assert_close(opt.state[p]["hess"], h, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(p.detach(), expected, rtol=1e-10, atol=1e-12)
    assert opt.state[model[0].weight]["step"] == 1


# ---------------------------------------------------------------- torch.compile
def test_compiled_model_under_sampled_params_matches_eager_without_recompiling():
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()
    counter = CompileCounterWithBackend("aot_eager")
    x, y = _data()
    losses, models = [], []
    for compiled in (False, True):
        model = _mlp()
        opt = IVON(model.parameters(), lr=0.1, ess=50.0, beta2=0.9, generator=_gen(6))
        fn = torch.compile(model, backend=counter) if compiled else model
        run = []
        for _ in range(6):
            with opt.sampled_params(train=True):
                opt.zero_grad()
                loss = F.cross_entropy(fn(x), y)
                loss.backward()
            opt.step()
            run.append(loss.item())
        losses.append(run)
        models.append(model)
    assert counter.frame_count == 1  # compiled once, not once per step (each step swaps in new weights)
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-6, atol=1e-6)
    assert len(set(losses[0])) == 6  # the samples (and the loss) change every step
    for p, q in zip(*(m.parameters() for m in models), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
