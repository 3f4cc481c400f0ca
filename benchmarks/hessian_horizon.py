"""Which Hessian horizon c (beta2 = 1 - c / total steps) should the engine use when no beta2 is given?

For each label corruption, seed, ess factor and c in ``--horizons`` (and the paper's fixed beta2 = 1 - 1e-5 as
``c = paper``), one IVON run through the engine on the same data; prints test accuracy at the mean and posterior
predictive, the noisy-validation predictive accuracy (what ``ess: auto`` ranks by), how far h moved (median h / h0,
the weight h0 keeps) and sigma. The chosen constant is :data:`varsmooth.engine.trainconfig.HESSIAN_HORIZON`; the
measured table is in docs/experiments/ivon-defaults.md ("What the Hessian learns").

    python benchmarks/hessian_horizon.py --data-dir /path/to/mnist --train-subset 10000 --epochs 15 \
        --seeds 0 1 --threads 1
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics
import sys

import torch

from varsmooth.data import load_dataset
from varsmooth.engine import TrainConfig, resolve_config, train
from varsmooth.engine.rundata import prepare
from varsmooth.engine.trainconfig import hessian_horizon_beta2

PAPER_BETA2 = 0.99999
KEYS = ("test_acc", "test_pred_acc", "val_pred_acc", "h_ratio_median", "hess_init_weight", "sigma_median")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None, help="MNIST IDX folder (default: the bundled mnist-subset)")
    p.add_argument("--train-subset", type=int, default=10000)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--corruptions", nargs="+", default=["symmetric:0.5", "pairflip:0.45"])
    p.add_argument("--ess-factors", type=float, nargs="+", default=[1.0, 0.25])
    p.add_argument("--horizons", type=float, nargs="+", default=[0.5, 1.0, 2.0, 4.0, 8.0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    name = "mnist" if args.data_dir else "mnist-subset"
    data = load_dataset(name, args.data_dir)
    subset = args.train_subset if args.data_dir else None
    rows = []
    for corruption, f, seed in itertools.product(args.corruptions, args.ess_factors, args.seeds):
        for c in [*args.horizons, None]:
            base = TrainConfig(dataset=name, model="mlp", method="ivon", corruption=corruption, seed=seed,
                               epochs=args.epochs,
                               train_subset=subset, val_fraction=0.1, ess_factor=f, test_samples=16,
                               eval_every=args.epochs, progress=False, save_train_predictions=False)  # fmt: skip
            n_train = len(prepare(resolve_config(base), data).train_pos)
            steps = args.epochs * math.ceil(n_train / base.batch_size)
            beta2 = PAPER_BETA2 if c is None else hessian_horizon_beta2(steps, c)
            m = train(TrainConfig(**{**base.to_dict(), "beta2": beta2}), data=data).metrics
            rows.append({"corruption": corruption,
                         "ess_factor": f, "seed": seed, "c": "paper" if c is None else f"{c:g}",
                         "beta2": beta2, **{k: m[k] for k in KEYS}})  # fmt: skip
            print(rows[-1], file=sys.stderr, flush=True)
    print("| corruption | ess | c | " + " | ".join(KEYS) + " |")
    print("|---" * (3 + len(KEYS)) + "|")
    key = lambda r: (r["corruption"], -r["ess_factor"], r["c"])  # noqa: E731
    for (corruption, neg_f, c), group in itertools.groupby(sorted(rows, key=key), key=key):
        g, f = list(group), -neg_f
        cells = [f"{statistics.mean(r[k] for r in g):.4f}" for k in KEYS]
        print(f"| {corruption} | N x {f:g} | {c} | " + " | ".join(cells) + f" |  (n={len(g)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
