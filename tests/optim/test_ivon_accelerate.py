"""IVON in a loop written as accelerate's documentation writes it (a real ``accelerate.Accelerator`` on CPU).

With ``gradient_accumulation_steps=k`` accelerate skips ``optimizer.step()`` and ``zero_grad()`` on the first k-1
micro-batches and divides each loss by k: IVON must give the k micro-batches one weight sample and update as plain
IVON does on one batch of k * B (float64, to rounding).
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from varsmooth.optim import IVON

accelerate = pytest.importorskip("accelerate")

K, B, STEPS = 4, 8, 5
KW = dict(lr=0.1, ess=50.0, hess_init=0.5, beta2=0.9, weight_decay=1e-3)


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()


def _mlp(dtype=torch.float64):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3)).to(dtype)


def _data(dtype=torch.float64):
    g = torch.Generator().manual_seed(5)
    return torch.randn(STEPS * K * B, 6, generator=g).to(dtype), torch.randint(0, 3, (STEPS * K * B,), generator=g)


def _accelerate_run(mixed_precision="no", dtype=torch.float64, foreach=True):
    from accelerate import Accelerator

    x, y = _data(dtype)
    model = _mlp(dtype)
    opt = IVON(model.parameters(), generator=torch.Generator().manual_seed(3), foreach=foreach, **KW)
    accelerator = Accelerator(gradient_accumulation_steps=K, mixed_precision=mixed_precision, cpu=True)
    model, optimizer = accelerator.prepare(model, opt)
    seen = []
    for xb, yb in zip(x.split(B), y.split(B), strict=True):  # as in accelerate's docs
        with accelerator.accumulate(model):
            with opt.sampled_params(train=True):
                seen.append([p.detach().clone() for p in model.parameters()])
                loss = F.cross_entropy(model(xb), yb)
                accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
    return model, opt, seen


def _plain_run():
    x, y = _data()
    model = _mlp()
    opt = IVON(model.parameters(), generator=torch.Generator().manual_seed(3), **KW)
    seen = []
    for xb, yb in zip(x.split(K * B), y.split(K * B), strict=True):
        with opt.sampled_params(train=True):
            seen.append([p.detach().clone() for p in model.parameters()])
            opt.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
        opt.step()
    return model, opt, seen


@pytest.mark.parametrize("foreach", [True, False])
def test_accelerate_accumulation_equals_one_batch_of_k_micro_batches(foreach):
    model, opt, seen = _accelerate_run(foreach=foreach)
    ref, ref_opt, ref_seen = _plain_run()
    for t in range(STEPS):  # the k micro-batches of a step saw one sample, the plain run's (to rounding)
        for j in range(K):
            for a, b, c in zip(seen[t * K + j], seen[t * K], ref_seen[t], strict=True):
                assert torch.equal(a, b)
                torch.testing.assert_close(a, c, rtol=1e-12, atol=1e-14)
    for p, q in zip(model.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)
        for key in ("hess", "momentum"):
            torch.testing.assert_close(opt.state[p][key], ref_opt.state[q][key], rtol=1e-12, atol=1e-14)
        assert opt.state[p]["step"] == STEPS
    assert (opt.state[model[0].weight]["hess"] - 0.5).abs().max() > 1e-2  # h learned: the test can fail


def test_accelerate_bf16_mixed_precision_trains_with_float32_state():
    model, opt, _ = _accelerate_run("bf16", torch.float32)
    x, y = _data(torch.float32)
    init = _mlp(torch.float32)
    with torch.no_grad():
        before, after = F.cross_entropy(init(x), y).item(), F.cross_entropy(model(x), y).item()
    assert after < before
    for p in model.parameters():
        assert opt.state[p]["hess"].dtype == torch.float32 and opt.state[p]["step"] == STEPS
        assert torch.isfinite(opt.state[p]["hess"]).all()


def test_outside_accelerate_every_block_is_a_new_sample():
    """The README's mode (a): without accelerate's accumulation state each block draws its own sample."""
    x, y = _data()
    model = _mlp()
    opt = IVON(model.parameters(), generator=torch.Generator().manual_seed(3), **KW)
    seen = []
    for xb, yb in zip(x[: K * B].chunk(K), y[: K * B].chunk(K), strict=True):
        with opt.sampled_params(train=True):
            seen.append(model[0].weight.detach().clone())
            F.cross_entropy(model(xb), yb).backward()  # no zero_grad: gradients pile up, the samples still differ
    assert all(not torch.equal(seen[0], s) for s in seen[1:])
    assert opt.param_groups[0]["samples"] == K


def test_zero_grad_inside_a_continued_block_makes_it_a_new_sample():
    """Under accelerate, IVON's own zero_grad() inside the block (the README's mode (a)) redraws: each
    micro-batch is its own sample, as in the same loop without accelerate."""
    from accelerate import Accelerator

    x, y = _data()
    runs = []
    for use_accelerate in (True, False):
        model = _mlp()
        opt = IVON(model.parameters(), generator=torch.Generator().manual_seed(3), **KW)
        accelerator = Accelerator(gradient_accumulation_steps=K, cpu=True) if use_accelerate else None
        net, optimizer = accelerator.prepare(model, opt) if use_accelerate else (model, opt)
        seen = []
        for i, (xb, yb) in enumerate(zip(x.split(B), y.split(B), strict=True)):
            with accelerator.accumulate(net) if use_accelerate else torch.enable_grad():
                with opt.sampled_params(train=True):
                    opt.zero_grad()
                    seen.append(model[0].weight.detach().clone())
                    loss = F.cross_entropy(net(xb), yb)
                    accelerator.backward(loss) if use_accelerate else (loss / K).backward()
                if use_accelerate:
                    optimizer.step()
                    optimizer.zero_grad()
                elif (i + 1) % K == 0:
                    opt.step()
        runs.append((model, seen))
    (acc, acc_seen), (plain, plain_seen) = runs
    for a, b in zip(acc_seen, plain_seen, strict=True):  # to rounding: the redraw undoes a take by subtraction
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    assert (acc_seen[0] - acc_seen[1]).abs().max() > 1e-3  # a new sample per micro-batch
    for p, q in zip(acc.parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)


def test_a_micro_batch_that_raises_leaves_the_step_as_the_earlier_micro_batches_made_it():
    from accelerate import Accelerator

    x, y = _data()
    model = _mlp()
    opt = IVON(model.parameters(), generator=torch.Generator().manual_seed(3), **KW)
    accelerator = Accelerator(gradient_accumulation_steps=2, cpu=True)
    net, optimizer = accelerator.prepare(model, opt)
    with accelerator.accumulate(net), opt.sampled_params(train=True):
        accelerator.backward(F.cross_entropy(net(x[:B]), y[:B]))
    sums = [opt.state[p]["grad_sum"].clone() for p in model.parameters()]
    with pytest.raises(RuntimeError, match="data error"), accelerator.accumulate(net):
        with opt.sampled_params(train=True):  # continues the sample, then fails before its backward
            raise RuntimeError("data error")
    assert opt.param_groups[0]["samples"] == 1
    for p, s in zip(model.parameters(), sums, strict=True):
        assert opt.state[p]["has_grad"] and torch.equal(opt.state[p]["grad_sum"], s)
