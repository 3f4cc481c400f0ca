"""Pieces of the training engine: schedules, metrics, config resolution, RNG checkpointing."""

import math
import random

import numpy as np
import pytest
import torch

from varsmooth.engine import TrainConfig, resolve_config
from varsmooth.engine import checkpoint as ckpt
from varsmooth.engine.rundata import seed_int
from varsmooth.engine.schedules import lr_factor
from varsmooth.errors import InputError
from varsmooth.io import torch_save
from varsmooth.metrics import accuracy, classification_metrics, ece, nll


def test_step_schedule_matches_multisteplr():
    """Paper's SGD schedule: x0.1 at epochs 100 and 150, as torch's MultiStepLR stepped once per epoch."""
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.05)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[100, 150], gamma=0.1)
    for epoch in range(200):
        for step in (0, 7):
            f = lr_factor("step", epoch=epoch, step=step, steps_per_epoch=8, total_epochs=200, milestones=[100, 150])
            assert 0.05 * f == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12)
        opt.step()
        sched.step()


def test_cosine_with_warmup_per_step_closed_form():
    spe, total, warm = 10, 20, 5  # 50 warm-up steps of 200
    facs = [lr_factor("cosine", epoch=e, step=s, steps_per_epoch=spe, total_epochs=total, warmup_epochs=warm)
            for e in range(total) for s in range(spe)]  # fmt: skip
    assert facs[:50] == pytest.approx([(i + 1) / 50 for i in range(50)])
    expected = [0.5 * (1 + math.cos(math.pi * (i - 50) / 150)) for i in range(50, 200)]
    assert facs[50:] == pytest.approx(expected)
    assert facs[49] == 1.0 and facs[50] == 1.0 and facs[-1] < 1e-3


def test_cosine_per_epoch_is_constant_within_epoch_and_matches_torch():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=30)
    for epoch in range(30):
        vals = {lr_factor("cosine", epoch=epoch, step=s, steps_per_epoch=4, total_epochs=30, unit="epoch")
                for s in range(4)}  # fmt: skip
        assert len(vals) == 1
        assert vals.pop() == pytest.approx(opt.param_groups[0]["lr"], abs=1e-12)
        opt.step()
        sched.step()


def test_unknown_schedule_is_input_error():
    with pytest.raises(InputError, match="unknown schedule 'linear'"):
        lr_factor("linear", epoch=0, step=0, steps_per_epoch=1, total_epochs=1)


def _naive_ece(labels, probs, bins):
    total = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        members = [i for i in range(len(labels)) if lo < probs[i].max() <= hi]
        if members:
            acc = np.mean([probs[i].argmax() == labels[i] for i in members])
            conf = np.mean([probs[i].max() for i in members])
            total += len(members) / len(labels) * abs(acc - conf)
    return total


def test_metrics_against_naive_loops():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(500, 7)) * 3
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = rng.integers(0, 7, size=500)
    assert ece(labels, probs, bins=15) == pytest.approx(_naive_ece(labels, probs, 15), abs=1e-12)
    assert nll(labels, probs) == pytest.approx(-np.mean([np.log(probs[i, labels[i]]) for i in range(500)]))
    assert accuracy(labels, probs) == np.mean([probs[i].argmax() == labels[i] for i in range(500)])
    m = classification_metrics(torch.from_numpy(labels), torch.from_numpy(probs).float(), prefix="test_")
    assert set(m) == {"test_acc", "test_nll", "test_ece"}
    assert m["test_ece"] == pytest.approx(_naive_ece(labels, probs, 15), abs=1e-6)
    # a perfectly calibrated 0/1 predictor has ECE 0
    onehot = np.eye(7)[labels]
    assert ece(labels, onehot) == 0.0 and accuracy(labels, onehot) == 1.0


def test_resolve_config_fills_method_defaults_and_checks():
    c = resolve_config(TrainConfig(method="sam", epochs=200))
    assert c.lr == 0.05 and c.rho == 0.05 and c.schedule == "step" and c.milestones == [100, 150]
    c = resolve_config(TrainConfig(method="ivon", epochs=200))
    assert c.schedule == "cosine" and c.warmup_epochs == 5.0 and c.beta2 is None  # set once N is known
    assert resolve_config(TrainConfig(method="ivon-fixed-h")).beta2 == 1.0
    assert resolve_config(TrainConfig(method="ls")).alpha == 0.1
    assert resolve_config(TrainConfig(method="ols")).alpha == 0.5
    for bad, match in [({"method": "nope"}, "unknown method 'nope'"), ({"epochs": 0}, "epochs=0"),
                       ({"lr": -1.0}, "lr=-1.0"), ({"val_fraction": 1.0}, "val_fraction"),
                       ({"method": "ls", "alpha": 1.5}, "alpha=1.5"), ({"method": "sam", "rho": -0.1}, "rho"),
                       ({"method": "ivon-fixed-h", "beta2": 0.9}, "ivon-fixed-h"), ({"bogus": 1}, "bogus"),
                       ({"method": "ivon", "ess": -5.0}, "ess"), ({"schedule": "linear"}, "linear"),
                       ({"method": "ivon", "ess": "big"}, "ess='big'"), ({"method": "ivon", "ess": "auto"}, "val"),
                       ({"method": "ivon", "ess": float("inf")}, "ess=inf"),
                       ({"method": "ivon", "ess_factor": float("inf")}, "ess_factor"),
                       ({"method": "ivon", "hess_init": float("inf")}, "hess_init"),
                       ({"weight_decay": float("inf")}, "weight_decay"), ({"method": "ivon", "ess_grid": []}, "grid"),
                       ({"method": "ivon", "ess_grid": [1.0, -2.0]}, "ess_grid")]:  # fmt: skip
        with pytest.raises(InputError, match=match):
            resolve_config(TrainConfig.from_dict(bad))


def test_rng_state_round_trip_through_checkpoint_file(tmp_path):
    gens = {"data": torch.Generator().manual_seed(1), "noise": torch.Generator().manual_seed(2)}
    torch.manual_seed(3), np.random.seed(4), random.seed(5)
    torch_save({"rng": [ckpt.rng_state(gens)]}, tmp_path / "c.pt")
    draw = lambda: (torch.rand(3), torch.rand(2, generator=gens["data"]), torch.randn(2, generator=gens["noise"]),  # noqa: E731
                    np.random.rand(2), np.random.randn(), random.random())  # fmt: skip
    first = draw()
    ckpt.set_rng_state(torch.load(tmp_path / "c.pt", weights_only=True)["rng"][0], gens)  # as the engine loads
    second = draw()
    for a, b in zip(first, second, strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_seed_streams_are_distinct_and_stable():
    seeds = {seed_int(0, s) for s in range(50)} | {seed_int(1, s) for s in range(50)}
    assert len(seeds) == 100 and all(0 <= s < 2**63 for s in seeds)
    assert seed_int(7, 3) == seed_int(7, 3)
