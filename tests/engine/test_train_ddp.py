"""Data-parallel training: ``torchrun --nproc_per_node 2`` (gloo, CPU) matches single-process semantics.

ERM, OLS: two ranks on the shards of each global batch = one process on the whole batch (float tolerance).
IVON: each rank draws its own posterior sample (noise generator of stream ``5 + 100 * rank``) on its shard, and
the optimizer averages gradient/Hessian statistics over ranks; so the run equals one process taking, per step,
two MC samples where sample r uses rank r's noise generator on shard r, the loss of shard r scaled by
``n_r * 2 / n`` — computed here with the library's own IVON in a single process.
"""

import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from varsmooth.engine import TrainConfig, resolve_config, train
from varsmooth.engine.checkpoint import load
from varsmooth.engine.methods import build_method
from varsmooth.engine.rundata import prepare, seed_int
from varsmooth.engine.trainconfig import finalize_config
from varsmooth.io import read_json
from varsmooth.models import build_model

# 301 examples in batches of 50: the last global batch has one example, so rank 1's last shard is empty
ARGS = dict(train_subset=301, batch_size=50, epochs=2, seed=4, device="cpu", progress=False, test_samples=2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(out, *options):
    argv = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
            "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), "-m", "varsmooth.cli", "train",
            "--train-subset", "301", "--batch-size", "50", "--epochs", "2", "--seed", "4", "--device", "cpu",
            "--test-samples", "2", "--no-progress", "--out", str(out), *options]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count(": test acc ") == 1  # only rank 0 reports (the summary table follows its line)
    assert read_json(out / "config.json")["world_size"] == 2
    ck = load(out / "checkpoint.pt")
    assert ck.epoch == 2 and len(ck.rng) == 2  # every rank's random state is kept
    return ck


def _close(a: dict, b: dict, atol=1e-6):
    for (name, x), y in zip(a.items(), b.values(), strict=True):
        assert torch.allclose(x, y, atol=atol, rtol=1e-5), (name, (x - y).abs().max().item())


@pytest.mark.slow
@pytest.mark.parametrize("method", ["erm", "ols"])
def test_sgd_methods_two_processes_equal_one_process(method, tmp_path):
    """Gradients averaged over ranks; OLS gathers every rank's logits so its matrix is the one-process matrix."""
    ck = _torchrun(tmp_path / "ddp", "--method", method, "--corruption", "symmetric:0.2")
    single = train(TrainConfig(method=method, corruption="symmetric:0.2", **ARGS))
    _close(ck.model, single.model.state_dict())
    if method == "ols":
        assert torch.equal(ck.method["ols"]["counts"], single.method.ols.state_dict()["counts"])
        assert torch.allclose(ck.method["ols"]["matrix"], single.method.ols.matrix, atol=1e-6)
    for h, s in zip(ck.history, single.history, strict=True):
        assert h["train_loss"] == pytest.approx(s["train_loss"], rel=1e-6)
        assert h["test_acc"] == pytest.approx(s["test_acc"], abs=2e-3)


def _emulate_two_rank_ivon(cfg: TrainConfig) -> dict:
    """One process, two MC samples per step: sample r = rank r's noise stream on shard r of the global batch."""
    cfg = resolve_config(cfg)
    run = prepare(cfg)
    cfg = finalize_config(cfg, len(run.train_pos))
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, run.data.num_classes, run.data.input_shape)
    opt = build_method("ivon", model, cfg, num_train=len(run.train_pos), num_classes=10).optimizer
    noise = [torch.Generator().manual_seed(seed_int(cfg.seed, 5 + 100 * r)) for r in range(2)]
    order = torch.Generator().manual_seed(seed_int(cfg.seed, 3))
    pos, labels = torch.from_numpy(run.train_pos), torch.from_numpy(run.labels)
    model.train()
    for _ in range(cfg.epochs):
        for batch in pos[torch.randperm(len(pos), generator=order)].split(cfg.batch_size):
            for r, shard in enumerate(torch.tensor_split(batch, 2)):
                with opt.sampled_params(train=True, generator=noise[r]):
                    opt.zero_grad()
                    logits = model(run.data.train.features[run.pool_index[shard.numpy()]])
                    loss = F.cross_entropy(logits, labels[shard]) if len(shard) else logits.sum() * 0
                    (loss * (len(shard) * 2 / len(batch))).backward()
            opt.step()
    return model.state_dict()


@pytest.mark.slow
def test_ivon_two_processes_equal_two_sample_emulation(tmp_path):
    ck = _torchrun(tmp_path / "ddp", "--method", "ivon", "--schedule", "constant", "--ess-factor", "1",
                   "--beta2", "0.99")  # fmt: skip
    cfg = TrainConfig(method="ivon", schedule="constant", beta2=0.99, **ARGS)
    _close(ck.model, _emulate_two_rank_ivon(cfg), atol=1e-5)
    # each rank drew its own noise: one process with one sample on the whole batch is a different run
    single = train(cfg).model.state_dict()
    assert max((a - b).abs().max().item() for a, b in zip(ck.model.values(), single.values(), strict=True)) > 1e-4
