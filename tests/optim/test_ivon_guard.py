"""No non-finite value enters IVON: NaN/inf gradients skip the step (counted, warned once), hyperparameters are
bounded where the float32 state stays finite, and load_state_dict refuses what is not this optimizer's state."""

import io
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from varsmooth.optim import IVON
from varsmooth.optim.ivon_checks import FLOAT32_TINY, PRECISION_MAX


def _mlp(seed=0, dtype=torch.float32, out=3):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, out)).to(dtype)


def _batch():
    g = torch.Generator().manual_seed(5)
    return torch.randn(32, 4, generator=g), torch.randint(0, 3, (32,), generator=g)


def _sample(model, opt, x, y, bad=None):
    with opt.sampled_params(train=True):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        if bad is not None:
            model[0].weight.grad[0, 0] = bad


def _state(model, opt):
    return [p.detach().clone() for p in model.parameters()], [
        {
            k: v.clone() if torch.is_tensor(v) else v
            for k, v in opt.state[p].items()
            if k in ("hess", "momentum", "step")
        }
        for p in model.parameters()
    ]


def _same(a, b):
    (pa, sa), (pb, sb) = a, b
    return all(torch.equal(p, q) for p, q in zip(pa, pb, strict=True)) and all(
        all(torch.equal(s[k], t[k]) if torch.is_tensor(s[k]) else s[k] == t[k] for k in s)
        for s, t in zip(sa, sb, strict=True)
    )


@pytest.mark.parametrize("foreach", [True, False])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nonfinite_gradient_skips_the_step_counts_it_and_warns_once(foreach, bad):
    model, (x, y) = _mlp(), _batch()
    model.unused = nn.Parameter(torch.ones(2))  # never has a gradient: its scratch sums must stay clean
    opt = IVON(model.parameters(), lr=0.1, ess=30.0, beta2=0.9, foreach=foreach, mc_samples=2)
    for _ in range(2):
        _sample(model, opt, x, y)
        opt.step()
    before = _state(model, opt)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):  # two bad steps: one sample of each is poisoned
            _sample(model, opt, x, y)
            _sample(model, opt, x, y, bad=bad)
            opt.step()
    assert _same(_state(model, opt), before)  # weights, h, momentum and step counts untouched
    assert opt.skipped_steps == 2
    assert sum("not finite" in str(w.message) for w in caught) == 1
    _sample(model, opt, x, y)
    opt.step()  # the next good step trains, and nothing non-finite is left anywhere in the state
    assert opt.state[model[0].weight]["step"] == 3 and opt.skipped_steps == 2
    for p in model.parameters():
        assert torch.isfinite(p).all()
        assert all(torch.isfinite(v).all() for v in opt.state[p].values() if torch.is_tensor(v))
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    again = IVON(model.parameters(), lr=0.1, ess=30.0)
    again.load_state_dict(torch.load(buf))
    assert again.skipped_steps == 2  # the count is checkpointed


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(ess=1e-300), "ess"), (dict(ess=1e300), "ess"), (dict(ess=float("inf")), "ess"),
        (dict(ess=float("nan")), "ess"), (dict(lr=float("inf")), "lr"), (dict(hess_init=float("inf")), "hess_init"),
        (dict(weight_decay=float("inf")), "weight_decay"), (dict(clip_radius=float("nan")), "clip_radius"),
        (dict(beta2=float("nan")), "beta2"), (dict(lr="0.1"), "lr"), (dict(ess=True), "ess"),
    ],
)  # fmt: skip
def test_values_outside_the_finite_range_raise_invalid_x(kwargs, name):
    with pytest.raises(ValueError, match=f"Invalid {name}: "):
        IVON(_mlp().parameters(), **dict(dict(lr=0.1, ess=10.0), **kwargs))


def test_the_ess_bound_is_where_the_float32_state_stops_being_finite():
    """Just inside the bounds (ess (h0 + delta) at float32's smallest normal and largest value) the state stays
    finite: at the lower one sigma ~ 1e19 overflows this network's forward pass, and the guard skips those steps;
    below it 1 / sigma underflows to 0 in the float32 state (the sample itself would be inf), so ess is refused;
    above the upper one the Hessian step's constant overflows float32. ess = 1e30 made h inf in two steps before
    h was capped."""
    x, y = _batch()
    for ess in (1.01 * FLOAT32_TINY, 0.99 * PRECISION_MAX, 1e30):
        model = _mlp()
        opt = IVON(model.parameters(), lr=0.1, ess=ess, hess_init=1.0, weight_decay=0.0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            for _ in range(3):
                _sample(model, opt, x, y)
                opt.step()
        assert opt.skipped_steps == (3 if ess < 1 else 0)  # at 1e30 h grows to its cap (it went inf before)
        for p in model.parameters():
            assert torch.isfinite(p).all() and torch.isfinite(opt.state[p]["hess"]).all()
    scale = torch.tensor(FLOAT32_TINY / 1000, dtype=torch.float32) * 1.0  # what the state computes below the bound
    assert scale.sqrt().item() < 1e-20 and (1 / torch.tensor(FLOAT32_TINY / 1e4, dtype=torch.float32)).isinf()
    for ess in (FLOAT32_TINY / 1000, PRECISION_MAX * 10):
        with pytest.raises(ValueError, match="Invalid ess"):
            IVON(_mlp().parameters(), lr=0.1, ess=ess, hess_init=1.0, weight_decay=0.0)


def test_load_state_dict_refuses_other_states_before_changing_anything():
    x, y = _batch()
    model = _mlp()
    opt = IVON(model.parameters(), lr=0.1, ess=30.0)
    _sample(model, opt, x, y)
    opt.step()
    before = _state(model, opt)

    other = _mlp(out=5)  # other shapes
    other_opt = IVON(other.parameters(), lr=0.1, ess=30.0)
    _sample(other, other_opt, x, y)
    other_opt.step()
    twin = _mlp()  # same shapes, trained by SGD with momentum
    sgd = torch.optim.SGD(twin.parameters(), lr=0.1, momentum=0.9)
    twin(x).sum().backward()
    sgd.step()
    bigger = IVON([*model.parameters(), nn.Parameter(torch.ones(2))], lr=0.1, ess=30.0)
    poisoned = opt.state_dict()
    poisoned["state"][0] = dict(poisoned["state"][0], hess=torch.full_like(poisoned["state"][0]["hess"], float("inf")))
    cases = {
        "has shape": other_opt.state_dict(),
        "lacks IVON's": sgd.state_dict(),
        "holds 5 parameters": bigger.state_dict(),
        "is not finite": poisoned,
        "not an optimizer state dict": {"weights": 1},
    }
    for message, sd in cases.items():
        with pytest.raises(ValueError, match=f"Invalid state_dict: .*{message}"):
            opt.load_state_dict(sd)
    assert _same(_state(model, opt), before)
    _sample(model, opt, x, y)
    opt.step()  # still usable
    assert opt.state[model[0].weight]["step"] == 2


def test_mixed_dtypes_count_each_sample_once():
    """A group whose params have two dtypes has two buckets; a sample still counts once (it counted once per
    bucket before, which halved g_hat)."""
    x, y = _batch()
    runs = []
    for mixed in (False, True):
        model = _mlp(dtype=torch.float64)
        if mixed:
            model[2].float()
        opt = IVON(model.parameters(), lr=0.1, ess=1e10, beta2=1.0)  # sigma ~ 1e-5: the noise hardly matters
        for _ in range(3):
            with opt.sampled_params(train=True):
                opt.zero_grad()
                F.cross_entropy(model[2](model[1](model[0](x.double())).to(model[2].weight.dtype)), y).backward()
            assert opt.param_groups[0]["samples"] == 1
            opt.step()
        runs.append(model)
    for p, q in zip(*(m.parameters() for m in runs), strict=True):
        torch.testing.assert_close(p.double(), q.double(), rtol=1e-4, atol=1e-5)


def test_bf16_float32_and_float64_parameters_in_one_optimizer_train():
    """ivon-opt refuses parameters of several dtypes; here each dtype is a bucket with its own state dtype.
    Only the CPU exists on this machine, so parameters on two devices are tested by the CUDA test below."""
    x, y = _batch()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8).bfloat16(), nn.Linear(8, 8), nn.Linear(8, 3).double())
    opt = IVON(model.parameters(), lr=0.05, ess=30.0, beta2=0.9)

    def loss():
        h = torch.tanh(model[0](x.bfloat16()).float())
        return F.cross_entropy(model[2](torch.tanh(model[1](h)).double()), y)

    with torch.no_grad():
        first = loss().item()
    for _ in range(30):
        with opt.sampled_params(train=True):
            opt.zero_grad()
            loss().backward()
        opt.step()
    with torch.no_grad():
        assert loss().item() < first
    dtypes = {torch.bfloat16: torch.float32, torch.float32: torch.float32, torch.float64: torch.float64}
    for p in model.parameters():
        assert opt.state[p]["hess"].dtype == dtypes[p.dtype] and opt.state[p]["step"] == 30


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device besides the CPU")
def test_parameters_on_two_devices_train_and_keep_their_state_on_their_device():
    x, y = _batch()
    torch.manual_seed(0)
    first, second = nn.Linear(4, 8), nn.Linear(8, 3).cuda()  # a CPU-offloaded group and a GPU group
    opt = IVON([{"params": first.parameters()}, {"params": second.parameters()}], lr=0.05, ess=30.0, beta2=0.9)
    for _ in range(5):
        with opt.sampled_params(train=True):
            opt.zero_grad()
            F.cross_entropy(second(torch.tanh(first(x)).cuda()), y.cuda()).backward()
        opt.step()
    for p in [*first.parameters(), *second.parameters()]:
        assert opt.state[p]["hess"].device == p.device and opt.state[p]["step"] == 5
        assert torch.isfinite(p).all()
