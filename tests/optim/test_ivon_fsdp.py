"""IVON on FSDP2 (``fully_shard``) parameters: 2 CPU ranks with gloo, float64.

- With sigma negligible (ess 1e12, fixed h) the 2-rank run equals plain IVON in one process on the whole batch.
- With noise, the gathered sample at every step is mean + sigma * e, sigma from the gathered state and e the
  full-shape draw of ``ivon_shard`` (re-derived here from its chunk seeds: the same e on any number of ranks).
- The per-parameter reference path (``foreach=False``) gives the fast path's result on shards.
- The sharded optimizer state round-trips through ``state_dict``/``load_state_dict`` bitwise.
"""

import io
import os

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from _spawn_ranks import spawn_ranks
from varsmooth.optim import IVON
from varsmooth.optim.ivon_shard import CHUNK, chunk_seed

STEPS = 4
SEED = 7
QUIET = dict(lr=0.05, ess=1e12, hess_init=1e4, beta2=1.0, weight_decay=1e-3)  # sigma = 1e-8
NOISY = dict(lr=0.05, ess=20.0, hess_init=0.5, beta2=0.9, weight_decay=1e-3)


def _model() -> nn.Module:
    torch.manual_seed(0)  # 7 and 3 rows: uneven shards on 2 ranks; the last layer (1 row) has an empty shard
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3), nn.Tanh(), nn.Linear(3, 1)).double()


def _data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(16, 5, generator=g, dtype=torch.float64), torch.randn(16, 1, generator=g, dtype=torch.float64)


def _loss(model, x, y):
    return F.mse_loss(model(x), y)


def _run(model, opt, x, y, steps, record=None):
    for _ in range(steps):
        with opt.sampled_params(train=True):
            opt.zero_grad()
            if record is not None:  # collective: every rank gathers the sample, its mean is in record's last entry
                record.append([p.full_tensor().clone() for p in model.parameters()])
            _loss(model, x, y).backward()
        opt.step()


def _full(model, opt):
    sigma = [s.full_tensor().clone() for s in opt.posterior_std().values()]  # builds the state on first use
    return {
        "params": [p.full_tensor().clone() for p in model.parameters()],
        "hess": [opt.state[p]["hess"].full_tensor().clone() for p in model.parameters()],
        "sigma": sigma,
    }


def _worker(rank: int, world: int, port: int, out: str) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        mesh = init_device_mesh("cpu", (world,))
        x, y = _data()
        xs, ys = x.chunk(world)[rank], y.chunk(world)[rank]  # FSDP averages the ranks' gradients: the batch mean
        result = {}
        for name, kw in (("quiet", QUIET), ("noisy", NOISY), ("reference", dict(NOISY, foreach=False))):
            model = _model()
            for layer in model:
                if isinstance(layer, nn.Linear):
                    fully_shard(layer, mesh=mesh)
            fully_shard(model, mesh=mesh)
            opt = IVON(model.parameters(), generator=torch.Generator().manual_seed(SEED), **kw)
            samples, states = [], []
            for _ in range(STEPS):
                states.append(_full(model, opt))  # mean and sigma before the step's sample
                _run(model, opt, xs, ys, 1, record=samples)
            result[name] = {"samples": samples, "before": states, "after": _full(model, opt)}
        # resume: save after STEPS, run 2 more; reload the saved state into the trained model, run the same 2
        saved_params = [p.to_local().clone() for p in model.parameters()]
        buf = io.BytesIO()
        torch.save(opt.state_dict(), buf)  # a checkpoint of this rank's shards
        _run(model, opt, xs, ys, 2)
        straight = _full(model, opt)
        with torch.no_grad():
            for p, v in zip(model.parameters(), saved_params, strict=True):
                p.to_local().copy_(v)
        buf.seek(0)
        opt.load_state_dict(torch.load(buf, weights_only=False))
        _run(model, opt, xs, ys, 2)
        result["resume"] = {"straight": straight, "resumed": _full(model, opt)}
        if rank == 0:
            torch.save(result, os.path.join(out, "fsdp.pt"))
    finally:
        dist.destroy_process_group()


def _oracle_noise(shape, draw: int, index: int) -> torch.Tensor:
    """The full-shape noise of parameter ``index`` at draw ``draw``: chunks of CHUNK from seeded generators."""
    n, parts = int(torch.Size(shape).numel()), []
    for c in range(0, n, CHUNK):
        g = torch.Generator().manual_seed(chunk_seed(SEED, draw, index, c // CHUNK))
        parts.append(torch.randn(min(CHUNK, n - c), generator=g, dtype=torch.float64))
    return torch.cat(parts).view(shape)


def test_fsdp2_two_ranks(tmp_path):
    spawn_ranks(_worker, 2, str(tmp_path))
    res = torch.load(tmp_path / "fsdp.pt")

    # sigma negligible: plain IVON, one process, whole batch
    x, y = _data()
    model = _model()
    opt = IVON(model.parameters(), generator=torch.Generator().manual_seed(SEED), **QUIET)
    init = [p.detach().clone() for p in model.parameters()]
    _run_plain(model, opt, x, y, STEPS)
    for a, b, c in zip(res["quiet"]["after"]["params"], model.parameters(), init, strict=True):
        torch.testing.assert_close(a, b.detach(), rtol=1e-6, atol=1e-8)
        assert (b - c).abs().max() > 1e-3  # it moved

    # noise: the gathered sample is mean + sigma * e, one e per step, sigma from the (gathered) state
    noisy = res["noisy"]
    for t in range(STEPS):
        before = noisy["before"][t]
        for j, (theta, m, s) in enumerate(zip(noisy["samples"][t], before["params"], before["sigma"], strict=True)):
            e = _oracle_noise(m.shape, t, j)
            torch.testing.assert_close(theta, m + s * e, rtol=1e-12, atol=1e-12)
    for key in ("params", "hess"):  # the per-parameter reference path on shards agrees with the fast path
        for a, b in zip(noisy["after"][key], res["reference"]["after"][key], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    h0 = noisy["before"][0]["hess"][0]
    assert torch.equal(h0, torch.full_like(h0, 0.5)) and (noisy["after"]["hess"][0] - 0.5).abs().max() > 1e-3

    # the sharded state round-trips
    for key in ("params", "hess"):
        for a, b in zip(res["resume"]["straight"][key], res["resume"]["resumed"][key], strict=True):
            assert torch.equal(a, b)


def _run_plain(model, opt, x, y, steps):
    for _ in range(steps):
        with opt.sampled_params(train=True):
            opt.zero_grad()
            _loss(model, x, y).backward()
        opt.step()
