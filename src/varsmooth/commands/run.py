"""``varsmooth run [EXPERIMENT] [--preset P] [--data-dir D] [--seeds S ...] [--set key=value ...] --out DIR``.

Exit code 0, 2 for bad input (one line), 1 when runs of the sweep failed and were recorded (one line: how many of
how many; they are listed in ``OUT/summary.json``); ``--retry-failed`` runs them again."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import experiments as ex
from ..errors import InputError
from ..experiments.sweep import parse_shard
from ..loggers import check_loggers
from ..summary import summarize

DEFAULT_EXPERIMENT = "demo"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("experiment", nargs="?", default=None,
                   help=f"experiment id (see `varsmooth list`); default: the {DEFAULT_EXPERIMENT!r} demo")
    p.add_argument("--preset", default=None, help="smoke | cpu | paper (default: cpu, or the demo's own)")
    p.add_argument("--data-dir", default=None, help="folder with the dataset files the experiment reads")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="random seeds (overrides the preset's)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one key of the preset (repeatable); values are YAML")
    p.add_argument("--out", default=None, help="output folder (default: runs/EXPERIMENT-PRESET)")
    p.add_argument("--jobs", type=int, default=1, help="independent runs of a sweep in parallel processes")
    p.add_argument("--shard", default="0/1", help="i/n: run only every n-th configuration of a sweep, from i")
    p.add_argument("--retry-failed", action="store_true",
                   help="run a sweep's failed runs again (by default a re-run skips them: training is deterministic)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--log", action="append", default=[], metavar="NAME",
                   help="log every run's curves to tensorboard (OUT/runs/NAME/tb) or mlflow (MLFLOW_TRACKING_URI, "
                   "else OUT/mlflow.db; one experiment per sweep); repeatable (varsmooth.loggers)")


def main(args: argparse.Namespace) -> int:
    exp_id = args.experiment or DEFAULT_EXPERIMENT
    preset = args.preset or next(iter(ex.presets(exp_id)))
    overrides = dict(ex.parse_override(text) for text in args.overrides)
    if args.data_dir is not None:
        overrides["data_dir"] = str(Path(args.data_dir).expanduser())
    if args.seeds is not None:
        overrides["seeds"] = list(args.seeds)
    cfg = ex.resolve_preset(exp_id, preset, overrides)  # every check happens before anything is written
    if args.log:  # into every run's TrainConfig (the preset's train block), so it travels with each run's config
        if not isinstance(cfg.get("train"), dict):
            raise InputError(f"--log: experiment {exp_id!r} has no engine runs to log (no train block in its presets)")
        cfg["train"] = {**cfg["train"], "loggers": check_loggers(args.log)}
    if args.jobs < 1:
        raise InputError(f"--jobs must be >= 1, got {args.jobs}")
    runtime = ex.Runtime(jobs=args.jobs, shard=parse_shard(args.shard), progress=not args.no_progress,
                         retry_failed=args.retry_failed)  # fmt: skip
    out = Path(args.out or f"runs/{exp_id}-{preset}")
    summary = ex.run_experiment(exp_id, cfg, out, preset=preset, runtime=runtime)
    # the answer on stdout (progress bars are on stderr, so stdout can be piped)
    print(summarize(out))
    if summary.get("runs_failed"):  # recorded failures: exit 1 (2 is for bad input)
        sys.stderr.write(f"varsmooth: error: {summary['runs_failed']} of {summary.get('runs_total', '?')} runs "
                         f"failed (see {out / 'summary.json'})\n")  # fmt: skip
        return 1
    return 0
