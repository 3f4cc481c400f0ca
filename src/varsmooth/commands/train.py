"""``varsmooth train``: one training run (one dataset, model, method, label noise and seed) into a run folder.

Example: ``varsmooth train --dataset mnist-subset --model mlp --method ivon --noise symmetric:0.4 --seed 0
--out runs/ivon-sym40``. Re-running the same command continues from the folder's checkpoint. Under
``torchrun --nproc_per_node N -m varsmooth.cli train ...`` the run is data-parallel over N processes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import InputError


def _options(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"hidden\": [128]}}', got {text!r}")
    return value


def _ess(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number or 'auto', got {text!r}") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..methods import METHODS

    p.add_argument("--dataset", default="mnist-subset", help="dataset name (default: mnist-subset, bundled)")
    p.add_argument("--data-dir", default=None, help="folder with the dataset's files (not needed for bundled sets)")
    p.add_argument("--model", default="mlp", help="logreg | mlp | cnn3 | resnet18 | resnet34 | resnet50")
    p.add_argument("--method", default="erm", help=" | ".join(METHODS))
    p.add_argument(
        "--noise",
        default="none",
        metavar="KIND:RATE",
        help="synthetic label noise: symmetric:R, pairflip:R, class-dependent:KAPPA[:BETA] or none",
    )
    p.add_argument(
        "--noisy-labels",
        default=None,
        metavar="FILE",
        help="natural noisy training labels (.npy/.csv/.txt, or CIFAR-N .pt)",
    )
    p.add_argument("--noisy-labels-key", default=None, help="entry of a CIFAR-N .pt file (e.g. worse_label)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--noise-seed", type=int, default=None, help="seed of the label flips (default: --seed)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the method's)")
    p.add_argument("--weight-decay", type=float, default=None)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--schedule", default=None, help="step | cosine | constant (default: step; IVON cosine)")
    p.add_argument("--schedule-epochs", type=int, default=None, help="schedule length (default: --epochs)")
    p.add_argument(
        "--milestones",
        type=int,
        nargs="+",
        default=None,
        help="epochs at which the step schedule multiplies the lr by --lr-decay (default: 50%%, 75%%)",
    )
    p.add_argument("--lr-decay", type=float, default=0.1)
    p.add_argument("--schedule-unit", default="step", help="cosine/warm-up updated every 'step' or 'epoch'")
    p.add_argument("--warmup-epochs", type=float, default=None)
    p.add_argument("--alpha", type=float, default=None, help="LS smoothing / OLS hard-label weight")
    p.add_argument("--rho", type=float, default=None, help="SAM neighbourhood size")
    p.add_argument("--adaptive", action="store_true", help="adaptive SAM")
    p.add_argument(
        "--ess",
        type=_ess,
        default=None,
        help="IVON effective sample size: a number or 'auto' (chosen on the validation split; the default when "
        "--val-fraction > 0 and no --ess-factor is given); otherwise N * ess-factor",
    )
    p.add_argument(
        "--ess-factor", type=float, default=None, help="ess = factor * N (default 1 with no validation split)"
    )
    p.add_argument("--hess-init", type=float, default=None)
    p.add_argument("--beta1", type=float, default=0.9, help="IVON gradient momentum")
    p.add_argument(
        "--beta2", type=float, default=None, help="IVON Hessian momentum (default: 1 - 2 / total steps)"
    )
    p.add_argument("--clip-radius", type=float, default=None, help="IVON update clipping (default: none)")
    p.add_argument("--mc-samples", type=int, default=1, help="IVON training samples per step")
    p.add_argument("--test-samples", type=int, default=32, help="IVON posterior-predictive samples")
    p.add_argument("--train-subset", type=int, default=None, metavar="N", help="train on N random examples")
    p.add_argument("--val-fraction", type=float, default=0.0, help="hold out this fraction as validation")
    p.add_argument("--model-options", type=_options, default={}, metavar="JSON")
    p.add_argument("--data-options", type=_options, default={}, metavar="JSON")
    p.add_argument("--device", default="auto", help="cpu | cuda | cuda:N | auto")
    p.add_argument("--num-workers", type=int, default=0, help="processes loading batches (lazy image datasets)")
    p.add_argument("--eval-every", type=int, default=1, help="evaluate on the test split every k epochs and at the end")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--out", required=True, help="run folder (resumed when it holds a checkpoint)")


def config_from_args(args: argparse.Namespace):
    """The TrainConfig of parsed arguments: every option named like a TrainConfig field (``--batch-size`` ->
    ``batch_size``) sets that field; ``--no-progress`` clears ``progress``."""
    import dataclasses

    from ..train import TrainConfig

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    kw = {k: v for k, v in vars(args).items() if k in fields}
    return TrainConfig(**kw, progress=not args.no_progress)


def main(args: argparse.Namespace) -> int:
    from ..train import TrainingDiverged, train

    cfg = config_from_args(args)
    if args.data_dir is not None and not Path(args.data_dir).expanduser().is_dir():
        raise InputError(f"--data-dir {args.data_dir!r} is not a folder")
    try:
        result = train(cfg, Path(args.out))
    except TrainingDiverged as err:
        sys.stderr.write(f"varsmooth: error: {err}\n")
        return 1
    m = result.metrics
    line = f"{cfg.method}: test acc {m.get('test_acc', float('nan')):.4f}"
    if "test_pred_acc" in m:
        line += f" (predictive {m['test_pred_acc']:.4f})"
    if "ess_search_cost_runs" in m:
        line += f", ess auto: {m['ess_factor_chosen']:g} N (search cost {m['ess_search_cost_runs']:.2f} runs)"
    if m.get("noise_realised_rate") is not None:
        line += f", label noise {m['noise_realised_rate']:.3f}"
    if result.method.dist.is_main:
        print(f"{line} -> {args.out}")
    return 0
