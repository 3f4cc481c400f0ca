"""Cost of the network label-noise estimators in units of plain forward passes over the same data.

    python benchmarks/noise_speed.py [--n 10000] [--samples 32] [--repeats 3] [--batch-size 1000] [--threads 1]

For each model (an MLP 784-256-256-10 and a small 3-layer CNN on MNIST-shaped inputs), every repeat times, side by
side: S forward passes over the N inputs (eval mode, no gradients, the same batches), the Monte-Carlo expected noise
with S samples (:func:`varsmooth.noise.network.expected_label_noise`: S + 1 passes, so its floor is (S + 1) / S) and
the linearized noise of Eq. 19 with S samples (:func:`~varsmooth.noise.network.linearized_label_noise`, one JVP
per sample). Each estimator run is framed by S forward passes right before and after it (paired, so a shared
machine's drifting speed cancels); it prints the medians over repeats of ``time / (S x forward pass)``, by wall
clock and by this process's CPU time (read the latter on a shared CPU, with ``--threads 1``); targets: MC <= 1.1,
linearized <= 3.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from varsmooth.models import build_model
from varsmooth.noise.network import expected_label_noise, linearized_label_noise


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process): on a shared CPU the process time is immune to other load."""
    _sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    _sync(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def bench(name: str, model: torch.nn.Module, x: torch.Tensor, args, device) -> dict[str, float]:
    model = model.to(device).eval()
    x = x.to(device)
    s, b = args.samples, args.batch_size

    def forward(passes=1):
        with torch.no_grad():
            for _ in range(passes):
                for lo in range(0, len(x), b):
                    model(x[lo : lo + b])

    def mc():
        expected_label_noise(model, x, 1e-2, samples=s, batch_size=b)

    def lin():
        linearized_label_noise(model, x, 1e-2, samples=s, batch_size=b, sample_chunk=args.sample_chunk)

    forward()  # warm-up (allocator, kernels)
    expected_label_noise(model, x[:b], 1e-2, samples=1, batch_size=b)
    linearized_label_noise(model, x[:b], 1e-2, samples=2, batch_size=b, sample_chunk=args.sample_chunk)
    # Paired design: every estimator run is framed by S forward passes just before and after it, and its ratio
    # uses the mean of those two, so slow drifts of a shared machine's speed cancel; medians over repeats.
    ratios = {(k, c): [] for k in ("mc", "linearized") for c in ("wall", "cpu")}
    fwd_times = {"wall": [], "cpu": []}
    before = _timed(lambda: forward(s), device)
    for _ in range(args.repeats):
        for key, fn in (("mc", mc), ("linearized", lin)):
            est = _timed(fn, device)
            after = _timed(lambda: forward(s), device)
            for i, c in enumerate(("wall", "cpu")):
                ratios[key, c].append(est[i] / (0.5 * (before[i] + after[i])))
                fwd_times[c].append(after[i] / s)
            before = after
    row = {"model": name}
    for c in ("wall", "cpu"):
        row |= {f"forward_{c}_s": statistics.median(fwd_times[c]),
                f"mc_{c}_ratio": statistics.median(ratios["mc", c]),
                f"lin_{c}_ratio": statistics.median(ratios["linearized", c])}  # fmt: skip
        print(
            f"{name:>5} [{c:>4} clock]  forward pass {row[f'forward_{c}_s']:.3f}s  MC/(S fwd) "
            f"{row[f'mc_{c}_ratio']:.3f} (floor {(s + 1) / s:.3f}, target <= 1.1)  linearized/(S fwd) "
            f"{row[f'lin_{c}_ratio']:.3f} (target <= 3)",
            flush=True,
        )
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10_000, help="number of MNIST-shaped inputs")
    p.add_argument("--samples", type=int, default=32, help="S, posterior samples per estimator")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--sample-chunk", type=int, default=None, help="samples per vmapped JVP (default: automatic)")
    p.add_argument("--cnn-widths", type=int, nargs=3, default=(4, 8, 16))
    p.add_argument("--models", nargs="+", default=["mlp", "cnn3"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    x = torch.randn(args.n, 1, 28, 28, generator=torch.Generator().manual_seed(args.seed))
    print(
        f"device {device}, threads {torch.get_num_threads()}, N {args.n}, S {args.samples}, "
        f"batch {args.batch_size}, repeats {args.repeats} (medians)"
    )
    for name in args.models:
        opts = {"widths": tuple(args.cnn_widths)} if name == "cnn3" else {}
        bench(name, build_model(name, 10, (1, 28, 28), **opts), x, args, device)


if __name__ == "__main__":
    main()
