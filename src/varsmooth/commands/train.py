"""``varsmooth train``: one training run (one dataset, model, method, label corruption and seed) into a run folder.

Example: ``varsmooth train --dataset mnist-subset --model mlp --method ivon --corruption symmetric:0.4 --seed 0
--out runs/ivon-sym40``. Re-running the same command continues from the folder's checkpoint. Under
``torchrun --nproc_per_node N -m varsmooth.cli train ...`` the run is data-parallel over N processes.

The flags are generated from :class:`varsmooth.engine.TrainConfig`'s fields (``batch_size`` -> ``--batch-size``,
help text and default from the field), so the config is their one source; only ``--out`` is this command's own.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import types
import typing
from pathlib import Path

from ..engine import TrainConfig, TrainingDiverged, train
from ..errors import InputError
from ..report.summary import summarize


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


def _flag_kwargs(f: dataclasses.Field, hint: typing.Any) -> dict:
    """argparse keyword arguments of one TrainConfig field, from its type hint."""
    args = set(typing.get_args(hint)) - {type(None)} if isinstance(hint, types.UnionType) else {hint}
    origin = {typing.get_origin(a) or a for a in args}
    if args == {float, str}:  # ess: a number or "auto"
        return {"type": _ess}
    if bool in args:
        return {"action": argparse.BooleanOptionalAction}
    if dict in origin:
        return {"type": _options}
    if list in origin:
        (item,) = typing.get_args(next(a for a in args if typing.get_origin(a) is list))
        return {"type": item, "nargs": "+"}
    (kind,) = args
    return {"type": kind}


def add_arguments(p: argparse.ArgumentParser) -> None:
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_text = f.metadata.get("help", "").replace("%", "%%")
        if default is not None and not isinstance(default, bool):
            help_text += f" (default: {default})".replace("%", "%%")
        kwargs = _flag_kwargs(f, hints[f.name])
        if f.metadata.get("metavar") and "action" not in kwargs:
            kwargs["metavar"] = f.metadata["metavar"]
        flag = f.name.replace("_", "-")
        if f.name == "loggers":  # --log tensorboard --log mlflow, as Lightning and HF name it
            flag, kwargs = "log", {"action": "append", "dest": f.name, "metavar": "NAME"}
        # SUPPRESS: an option not given stays out of the namespace, so TrainConfig's own default applies
        p.add_argument(f"--{flag}", default=argparse.SUPPRESS, help=help_text, **kwargs)
    p.add_argument("--out", required=True, help="run folder (resumed when it holds a checkpoint)")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig of parsed arguments: every option given sets the field of its name."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in vars(args).items() if k in names})


def main(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    if cfg.data_dir is not None and not Path(cfg.data_dir).expanduser().is_dir():
        raise InputError(f"--data-dir {cfg.data_dir!r} is not a folder")
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
    if m.get("corruption_realised_rate") is not None:
        line += f", flip rate {m['corruption_realised_rate']:.3f}"
    if result.method.dist.is_main:
        print(f"{line} -> {args.out}")
        print(summarize(args.out))  # stdout; progress bars are on stderr
    return 0
