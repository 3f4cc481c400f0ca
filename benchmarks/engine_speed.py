"""Images per second of ``varsmooth.engine.train`` against a bare hand-written PyTorch loop, side by side.

Both train the same model (same initial weights) with the same optimizer settings, batch, precision and device on
the same in-memory synthetic data (on the device), for one epoch of ``--steps`` steps, timed from the end of the
first step (allocations, lazy initialisation) to the end of the epoch. The bare loop is the minimal correct loop:
index a batch, forward under autocast, backward, ``optimizer.step()`` (IVON: inside ``sampled_params(train=True)``);
no metrics, no schedule. The engine's evaluation is timed apart (``evaluate`` wrapped with a timer) and reported in
its own column; the engine's per-epoch work (IVON's sigma statistics, the finite check, the epoch's one read-back)
is counted as engine time. On the CPU with one thread the clock is the process's CPU time, so other processes on
the machine do not enter the ratio.
Each (model, method) pair runs engine and bare alternately ``--repeats`` times; reported: medians of images/s
and the median of the per-repeat ratios engine / bare (target: >= 0.95).

    python benchmarks/engine_speed.py                     # CPU: mlp, cnn3, resnet18 x erm, ivon
    python benchmarks/engine_speed.py --device cuda --precision bf16 --steps 200,100,100
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import time

import torch
import torch.nn.functional as F

from varsmooth.data.base import LabeledData, LabeledSplit
from varsmooth.engine import TrainConfig, finalize_config, resolve_config, train
from varsmooth.engine.precision import autocast, uses_channels_last
from varsmooth.models import build_model
from varsmooth.optim import IVON

engine_train = importlib.import_module("varsmooth.engine.train")  # the module (the package exports the function)
MODELS = {"mlp": ((1, 28, 28), 128), "cnn3": ((1, 28, 28), 128), "resnet18": ((3, 32, 32), 50)}  # shape, batch


def synthetic(shape, batch: int, steps: int, classes: int = 10) -> LabeledData:
    g = torch.Generator().manual_seed(0)
    n = batch * steps
    x, y = torch.randn(n, *shape, generator=g), torch.randint(0, classes, (n,), generator=g)
    xt, yt = torch.randn(256, *shape, generator=g), torch.randint(0, classes, (256,), generator=g)
    return LabeledData(name="synthetic", train=LabeledSplit(x, y), test=LabeledSplit(xt, yt), num_classes=classes,
                       input_shape=tuple(shape), class_names=[str(i) for i in range(classes)])  # fmt: skip


def config(model: str, method: str, batch: int, args) -> TrainConfig:
    return TrainConfig(dataset="synthetic", model=model, method=method, epochs=1, batch_size=batch,
                       precision=args.precision, device=args.device, progress=False, test_samples=2,
                       save_train_predictions=False, eval_batch_size=256, compile=args.compile)  # fmt: skip


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Clock:
    """A callback timing the engine from the end of its first step to the end of the epoch (after evaluation,
    which ``evaluate``'s own timer takes out), on the benchmark's clock."""

    def __init__(self, clock):
        self.clock, self.first, self.end = clock, None, None

    def on_batch(self, epoch, pos, out, labels):
        if self.first is None:
            self.first = self.clock()

    def __call__(self, epoch, state):
        self.end = self.clock()


def run_engine(cfg: TrainConfig, data: LabeledData, clock) -> tuple[float, float]:
    """(training seconds of steps 2..S and the epoch's end, evaluation seconds) of one engine.train call."""
    spent = [0.0]
    real = engine_train.evaluate

    def timed(*a, **kw):
        t0 = clock()
        try:
            return real(*a, **kw)
        finally:
            spent[0] += clock() - t0

    engine_train.evaluate = timed
    timer = _Clock(clock)
    try:
        train(cfg, data=data, callbacks=[timer])
    finally:
        engine_train.evaluate = real
    return timer.end - timer.first - spent[0], spent[0]


def run_bare(cfg: TrainConfig, data: LabeledData, device: torch.device, clock) -> float:
    """Seconds of steps 2..S of one epoch of the hand-written loop."""
    cfg = finalize_config(resolve_config(cfg), len(data.train))
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, data.num_classes, data.input_shape).to(device)
    fmt = torch.channels_last if uses_channels_last(model, device) else torch.contiguous_format
    model = model.to(memory_format=fmt)
    net = torch.compile(model) if cfg.compile else model
    if cfg.method == "ivon":
        opt = IVON(model.parameters(), lr=cfg.lr, ess=cfg.ess, hess_init=cfg.hess_init, beta1=cfg.beta1,
                   beta2=cfg.beta2, weight_decay=cfg.weight_decay)  # fmt: skip
    else:
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    x_all, y_all = data.train.features.to(device), data.train.labels.to(device)
    amp = autocast(cfg.precision, device)
    model.train()
    perm = torch.randperm(len(y_all), device=device)
    for step, idx in enumerate(perm.split(cfg.batch_size)):
        if step == 1:
            sync(device)
            t0 = clock()
        x, y = x_all[idx].contiguous(memory_format=fmt) if x_all.dim() == 4 else x_all[idx], y_all[idx]
        if cfg.method == "ivon":
            with opt.sampled_params(train=True):
                opt.zero_grad(set_to_none=True)
                with amp:
                    loss = F.cross_entropy(net(x), y)
                loss.backward()
        else:
            opt.zero_grad(set_to_none=True)
            with amp:
                loss = F.cross_entropy(net(x), y)
            loss.backward()
        opt.step()
    sync(device)
    return clock() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--compile", action="store_true")
    p.add_argument("--models", default="mlp,cnn3,resnet18")
    p.add_argument("--methods", default="erm,ivon")
    p.add_argument("--steps", default="200,20,8", help="steps per epoch for each model, in --models order")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    p.add_argument("--clock", choices=("wall", "cpu"), default=None,
                   help="wall time or this process's CPU time (default: cpu on the CPU with 1 thread, else wall)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    clock_name = args.clock or ("cpu" if device.type == "cpu" and torch.get_num_threads() == 1 else "wall")
    clock = time.process_time if clock_name == "cpu" else time.perf_counter
    models, steps = args.models.split(","), [int(s) for s in args.steps.split(",")]
    print(f"device {device}, precision {args.precision}{', compiled' if args.compile else ''}, "
          f"{args.repeats} repeats, {clock_name} clock, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")  # fmt: skip
    print("| model | method | batch | steps | bare img/s | engine img/s | engine / bare | engine eval s |")
    print("|---|---|---|---|---|---|---|---|")
    for model, n_steps in zip(models, steps, strict=True):
        shape, batch = MODELS[model]
        data = synthetic(shape, batch, n_steps)
        for method in args.methods.split(","):
            cfg = config(model, method, batch, args)
            run_engine(cfg, data, clock), run_bare(cfg, data, device, clock)  # warm-up (allocator, compile, kernels)
            bare, engine, evals, ratios = [], [], [], []
            for _ in range(args.repeats):
                b = run_bare(cfg, data, device, clock)
                e, ev = run_engine(cfg, data, clock)
                bare.append(b), engine.append(e), evals.append(ev), ratios.append(b / e)
            images = batch * (n_steps - 1)  # steps 2..S
            print(f"| {model} | {method} | {batch} | {n_steps} | {images / statistics.median(bare):,.0f} | "
                  f"{images / statistics.median(engine):,.0f} | {statistics.median(ratios):.3f} | "
                  f"{statistics.median(evals):.2f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
