"""IVON against the public reference implementation ``ivon-opt`` (module ``ivon``, GPL: used as an oracle only),
and the fast multi-tensor path against the per-parameter reference path.

Noise: both optimizers draw one ``normal_`` of group size per param group from the global RNG at every
``sampled_params`` entry, so seeding the global RNG identically feeds them the same noise. ``hess_init`` values
are exact in float32 because ivon-opt builds its initial h through a default-dtype (float32) tensor.
"""

import ivon
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from varsmooth.optim import IVON

CONFIGS = {
    "default": {},
    "no-rescale-no-debias-clip": dict(rescale_lr=False, debias=False, clip_radius=0.02),
    "rescale-clip": dict(clip_radius=0.05),
    "gradsq": dict(hess_approx="gradsq"),
}


def _data():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(48, 6, generator=g, dtype=torch.float64)
    return x, torch.randint(0, 3, (48,), generator=g)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 10), nn.Tanh(), nn.Linear(10, 3)).double()


def _groups(model):
    return [
        {"params": list(model[0].parameters())},
        {"params": list(model[2].parameters()), "lr": 0.05, "weight_decay": 3e-3, "ess": 80.0, "hess_init": 0.25},
    ]


def _train(cls, mc: int, steps: int, seed: int = 123, **kw):
    model, (x, y) = _model(), _data()
    kw = dict(dict(lr=0.1, ess=40.0, hess_init=0.5, beta2=0.99, weight_decay=1e-3), **kw)
    opt = cls(_groups(model), mc_samples=mc, **kw)
    torch.manual_seed(seed)
    for _ in range(steps):
        for _ in range(mc):
            with opt.sampled_params(train=True):
                opt.zero_grad()
                F.cross_entropy(model(x), y).backward()
        opt.step()
    return model, opt


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def _flat_state(opt: IVON, model: nn.Module, key: str) -> torch.Tensor:
    return torch.cat([opt.state[p][key].reshape(-1) for p in model.parameters()])


@pytest.mark.parametrize("mc", [1, 3])
@pytest.mark.parametrize("config", list(CONFIGS))
def test_matches_ivon_opt_after_100_steps(mc, config):
    ref_model, ref_opt = _train(ivon.IVON, mc, 100, **CONFIGS[config])
    model, opt = _train(IVON, mc, 100, **CONFIGS[config])
    ref_params = torch.cat([p.detach().reshape(-1) for p in ref_model.parameters()])
    params = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    ref_hess = torch.cat([g["hess"] for g in ref_opt.param_groups])
    ref_mom = torch.cat([g["momentum"] for g in ref_opt.param_groups])
    assert _rel(params, ref_params) < 1e-10
    assert _rel(_flat_state(opt, model, "hess"), ref_hess) < 1e-10
    assert _rel(_flat_state(opt, model, "momentum"), ref_mom) < 1e-10
    assert all(opt.state[p]["step"] == 100 for p in model.parameters())
    # the comparison is not vacuous: h moved well away from its initial values, the mean moved from its init
    assert (ref_hess - torch.cat([torch.full((70,), 0.5), torch.full((33,), 0.25)]).double()).abs().max() > 1e-2
    assert _rel(params, torch.cat([p.detach().reshape(-1) for p in _model().parameters()])) > 1e-2


def test_clip_radius_is_active_in_the_clipped_config():
    clipped, _ = _train(IVON, 1, 20, **CONFIGS["no-rescale-no-debias-clip"])
    free, _ = _train(IVON, 1, 20, rescale_lr=False, debias=False)
    assert (
        max(_rel(a.detach(), b.detach()) for a, b in zip(clipped.parameters(), free.parameters(), strict=True)) > 1e-3
    )


def _mixed_model() -> nn.Module:
    """float64 MLP with a frozen parameter and a parameter that never gets a gradient."""
    model = _model()
    model.frozen = nn.Parameter(torch.ones(4, dtype=torch.float64), requires_grad=False)
    model.unused = nn.Parameter(torch.ones(5, dtype=torch.float64))
    return model


@pytest.mark.parametrize("mc", [1, 3])
@pytest.mark.parametrize(
    "config", [*CONFIGS.values(), dict(beta2=1.0), dict(weight_decay=0.0, beta1=0.0), dict(beta2=0.9, lr=0.3)]
)
def test_fast_path_equals_reference_path(mc, config):
    runs = []
    for foreach in (True, False):
        model, (x, y) = _mixed_model(), _data()
        groups = [{"params": [*model[0].parameters(), model.frozen]}, {"params": [*model[2].parameters()]}]
        groups[1]["params"].append(model.unused)
        kw = dict(dict(lr=0.1, ess=40.0, hess_init=0.5, beta2=0.99), **config)
        opt = IVON(groups, mc_samples=mc, foreach=foreach, **kw)
        torch.manual_seed(7)
        for _ in range(60):
            for _ in range(mc):
                with opt.sampled_params(train=True):
                    opt.zero_grad()
                    F.cross_entropy(model(x), y).backward()
            opt.step()
        runs.append((model, opt))
    (fast, fopt), (ref, ropt) = runs
    for pf, pr in zip(fast.parameters(), ref.parameters(), strict=True):
        assert _rel(pf.detach(), pr.detach()) < 1e-10
    for p, q in zip(fast[0].parameters(), ref[0].parameters(), strict=True):
        for key in ("momentum", "hess"):
            assert _rel(fopt.state[p][key], ropt.state[q][key]) < 1e-10
        assert fopt.state[p]["step"] == ropt.state[q]["step"] == 60
    assert torch.equal(fast.unused, torch.ones(5, dtype=torch.float64))
    assert fopt.state[fast.unused]["step"] == 0 and fast.frozen not in fopt.state

