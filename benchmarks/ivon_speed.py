"""Median train-step time (forward, backward, optimizer step) of IVON vs AdamW, SGD and ivon-opt.

All optimizers train their own copy of the same model on the same fixed batch; their steps are interleaved
(one block of ``--inner`` steps per optimizer per repeat, in rotating order) so that load from other processes
hits all of them alike. Prints median milliseconds per step and the ratio of medians to AdamW (foreach).

    python benchmarks/ivon_speed.py --repeats 30 --models mlp,cnn,resnet18 --threads 1 [--clock cpu]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from varsmooth.models import build_model
from varsmooth.optim import IVON

try:
    import ivon as ivon_opt  # GPL reference implementation: benchmark/test oracle only
except ImportError:  # pragma: no cover
    ivon_opt = None

MODELS = {  # name: (architecture, input shape, batch size, train steps per timed block)
    "mlp": ("mlp", (784,), 128, 5),  # varsmooth.models MLP 784-256-256-10
    "cnn": ("small-cnn", (1, 28, 28), 128, 2),  # LeNet-style, defined below
    "cnn3": ("cnn3", (1, 28, 28), 128, 1),  # the paper's 3-layer CNN (heavy convolutions at 28x28)
    "resnet18": ("resnet18", (3, 32, 32), 50, 1),  # varsmooth.models CIFAR ResNet-18
}
IVON_KW = dict(lr=0.1, ess=60000.0, hess_init=0.5, weight_decay=1e-4)


def small_cnn(num_classes: int = 10) -> nn.Module:
    """conv5x5(32)-pool-conv5x5(64)-pool-fc(128)-fc: 0.2 M parameters for 28x28 inputs."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 4 * 4, 128), nn.ReLU(), nn.Linear(128, num_classes),
    )  # fmt: skip


def make_optimizers(model: nn.Module) -> dict[str, tuple[nn.Module, torch.optim.Optimizer, bool]]:
    """name -> (model copy, optimizer, is_variational)."""
    out = {}

    def add(name, factory, variational):
        m = copy.deepcopy(model)
        out[name] = (m, factory(m.parameters()), variational)

    add("adamw", lambda p: torch.optim.AdamW(p, lr=1e-3, weight_decay=1e-4, foreach=True), False)
    add("sgd", lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9, foreach=True), False)
    add("ivon", lambda p: IVON(p, **IVON_KW), True)
    add("ivon-ref", lambda p: IVON(p, **IVON_KW, foreach=False), True)
    if ivon_opt is not None:
        add("ivon-opt", lambda p: ivon_opt.IVON(p, **IVON_KW), True)
    return out


def train_step(model: nn.Module, opt, variational: bool, x, y) -> None:
    if variational:
        with opt.sampled_params(train=True):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
    else:
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
    opt.step()


def bench_model(name: str, repeats: int, inner: int | None, warmup: int, clock=time.perf_counter) -> dict[str, float]:
    arch, shape, batch, default_inner = MODELS[name]
    inner = inner or default_inner
    torch.manual_seed(0)
    model = small_cnn() if arch == "small-cnn" else build_model(arch, 10, shape)
    x, y = torch.randn(batch, *shape), torch.randint(0, 10, (batch,))
    opts = make_optimizers(model)
    for m, opt, var in opts.values():
        for _ in range(warmup):
            train_step(m, opt, var, x, y)
    times: dict[str, list[float]] = {k: [] for k in opts}
    names = list(opts)
    for r in range(repeats):
        for k in names[r % len(names) :] + names[: r % len(names)]:  # rotate the order
            m, opt, var = opts[k]
            t0 = clock()
            for _ in range(inner):
                train_step(m, opt, var, x, y)
            times[k].append((clock() - t0) / inner)
    return {k: statistics.median(v) * 1e3 for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=30, help="interleaved blocks per optimizer")
    ap.add_argument("--inner", type=int, default=None, help="train steps per timed block (default: per model)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--models", default="mlp,cnn,resnet18", help=f"comma list of {','.join(MODELS)}")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="wall time or this process's CPU time")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    bad = [m for m in models if m not in MODELS]
    if bad:
        ap.error(f"unknown model(s) {bad}; allowed: {', '.join(MODELS)}")
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    print(f"torch {torch.__version__}, threads {args.threads}, {args.repeats} interleaved repeats, {args.clock} clock")
    print(f"{'model':<10}{'optimizer':<10}{'median ms':>11}{'/ AdamW':>9}")
    for name in models:
        res = bench_model(name, args.repeats, args.inner, args.warmup, clock)
        for k, v in res.items():
            print(f"{name:<10}{k:<10}{v:>11.3f}{v / res['adamw']:>9.3f}")


if __name__ == "__main__":
    main()
