"""IVON under torch.distributed (gloo, CPU): N ranks with one sample each == one process with N MC samples.

Noise control: rank r draws from ``torch.Generator().manual_seed(100 + r)`` (constructor ``generator=``); the
single process feeds sample r from a generator seeded the same way (``sampled_params(generator=...)``).
A second run checks the default per-rank seeding: no generator given, the ranks must draw different noise.
"""

import os

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from _spawn_ranks import spawn_ranks
from varsmooth.optim import IVON

STEPS = 8
KW = dict(lr=0.1, ess=30.0, hess_init=0.5, beta2=0.9, weight_decay=1e-3)


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).double()
    model.unused = nn.Parameter(torch.ones(2, dtype=torch.float64))  # never receives a gradient
    return model


def _data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(24, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (24,), generator=g)


def _sample_grad(model, opt, x, y, generator=None):
    with opt.sampled_params(train=True, generator=generator):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()


def _snapshot(model, opt):
    return {
        "params": [p.detach().clone() for p in model.parameters()],
        "hess": [opt.state[p]["hess"].clone() for p in model.parameters()],
        "momentum": [opt.state[p]["momentum"].clone() for p in model.parameters()],
    }


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    x, y = _data()
    try:
        model = _model()
        opt = IVON(model.parameters(), sync=True, generator=torch.Generator().manual_seed(100 + rank), **KW)
        for _ in range(STEPS):
            _sample_grad(model, opt, x, y)
            opt.step()
        explicit = _snapshot(model, opt)

        torch.manual_seed(0)  # same global seed on every rank, as DDP scripts do
        model = _model()
        opt = IVON(model.parameters(), sync=True, **KW)
        with opt.sampled_params():
            first_sample = [p.detach().clone() for p in model.parameters()]
        for _ in range(STEPS):
            _sample_grad(model, opt, x, y)
            opt.step()
        torch.save({"explicit": explicit, "default": _snapshot(model, opt), "first": first_sample},
                   os.path.join(out, f"rank{rank}.pt"))  # fmt: skip
    finally:
        dist.destroy_process_group()


def test_two_ranks_equal_one_process_with_two_mc_samples(tmp_path):
    spawn_ranks(_worker, 2, str(tmp_path))
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]

    torch.set_num_threads(1)
    x, y = _data()
    model = _model()
    opt = IVON(model.parameters(), mc_samples=2, **KW)
    gens = [torch.Generator().manual_seed(100 + r) for r in range(2)]
    for _ in range(STEPS):
        for g in gens:
            _sample_grad(model, opt, x, y, generator=g)
        opt.step()
    single = _snapshot(model, opt)

    init = [p.detach() for p in _model().parameters()]
    for key in ("params", "hess", "momentum"):
        for a, b, c in zip(single[key], ranks[0]["explicit"][key], ranks[1]["explicit"][key], strict=True):
            assert torch.equal(b, c)  # ranks stay identical
            assert ((a - b).abs().max() / a.abs().max().clamp_min(1e-300)).item() < 1e-10
    unused = [n for n, _ in model.named_parameters()].index("unused")
    assert torch.equal(single["params"][unused], torch.ones(2, dtype=torch.float64))  # gradient-less: untouched
    assert torch.equal(ranks[0]["explicit"]["params"][unused], single["params"][unused])
    assert (
        min(
            (p - q).abs().max().item()
            for i, (p, q) in enumerate(zip(single["params"], init, strict=True))
            if i != unused
        )
        > 1e-3
    )

    # default seeding: different noise per rank, identical means after the synchronised steps
    assert all(
        not torch.equal(a, b)
        for i, (a, b) in enumerate(zip(ranks[0]["first"], ranks[1]["first"], strict=True))
        if i != unused
    )
    for a, b in zip(ranks[0]["default"]["params"], ranks[1]["default"]["params"], strict=True):
        assert torch.equal(a, b)
