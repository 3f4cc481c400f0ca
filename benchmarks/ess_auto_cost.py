"""What ``ess: auto`` costs: wall time of one IVON run that chooses its ess / one IVON run at a fixed ess.

Side by side in one process, interleaved per repeat, on the same data and config: ``fixed`` trains IVON at
``ess = N`` (``--ess-factor``), ``auto`` trains the same config with ``ess="auto"`` (every factor of the engine's
grid trained to the end, the best on the noisy validation split kept; :mod:`varsmooth.engine.ess_search`).
Prints each repeat's times, the median ratio auto / fixed (its training costs 3 runs: every candidate of
the default grid trains the whole run) and the choice.

    python benchmarks/ess_auto_cost.py --data-dir /path/to/mnist --train-subset 10000 --epochs 15 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from varsmooth.data import load_dataset
from varsmooth.engine import TrainConfig, train


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None, help="MNIST IDX folder (default: the bundled mnist-subset)")
    p.add_argument("--train-subset", type=int, default=None)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--corruption", default="symmetric:0.4", help="label corruption")
    p.add_argument("--ess-factor", type=float, default=1.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    name = "mnist" if args.data_dir else "mnist-subset"
    data = load_dataset(name, args.data_dir)
    base = dict(dataset=name, model="mlp", method="ivon", corruption=args.corruption, epochs=args.epochs,
                train_subset=args.train_subset, val_fraction=0.1, test_samples=16, eval_every=5,
                progress=False)  # fmt: skip
    ratios = []
    for rep in range(args.repeats):
        times = {}
        for label, extra in (("fixed", {"ess_factor": args.ess_factor}), ("auto", {"ess": "auto"})):
            with tempfile.TemporaryDirectory() as tmp:  # a real run folder: checkpoints are part of the cost
                t0 = time.perf_counter()
                result = train(TrainConfig(**base, seed=rep, **extra), tmp, data=data)
                times[label] = time.perf_counter() - t0
            if label == "auto":
                chosen = result.metrics["ess_factor_chosen"]
        ratios.append(times["auto"] / times["fixed"])
        print(f"repeat {rep}: fixed {times['fixed']:.1f} s, auto {times['auto']:.1f} s, ratio {ratios[-1]:.2f}, "
              f"chose ess = {chosen:g} N", flush=True)  # fmt: skip
    print(f"ess auto / one IVON run: median {statistics.median(ratios):.2f} over {len(ratios)} repeats "
          f"(min {min(ratios):.2f}, max {max(ratios):.2f}); training cost 3 runs (the grid)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
