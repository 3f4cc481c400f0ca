"""``varsmooth run [EXPERIMENT] [--preset P] [--data-dir D] [--seeds S ...] [--set key=value ...] --out DIR``.

Exit code 0, 2 for bad input (one line), 1 when runs of the sweep failed and were recorded (one line: how many of
how many; they are listed in ``OUT/summary.json``); ``--retry-failed`` runs them again. ``--executor ray`` runs a
sweep's runs as tasks on the Ray cluster ``RAY_ADDRESS`` names (``--gpus-per-run``, ``--cpus-per-run``; docs:
scaling-out.md)."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from .. import experiments as ex
from ..errors import InputError
from ..experiments import DEFAULT_EXPERIMENT
from ..experiments.sweep import EXECUTORS, parse_shard
from ..loggers import check_loggers
from ..report.summary import summarize


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
    p.add_argument("--executor", choices=EXECUTORS, default="local",
                   help="where a sweep's runs execute: local processes (--jobs), or a Ray cluster (RAY_ADDRESS; "
                        "none set: a local one); ray needs pip install 'varsmooth[ray]'")
    p.add_argument("--gpus-per-run", type=float, default=None, metavar="F",
                   help="with --executor ray: GPUs per run, fractions share a card (0.5: two runs a GPU); default 0")
    p.add_argument("--cpus-per-run", type=int, default=None, metavar="N",
                   help="with --executor ray: CPUs per run, its torch threads; default 1")
    p.add_argument("--plan", action="store_true",
                   help="train nothing, write nothing: print the runs, their steps and the device-hours they will "
                   "take, timed on this device")
    p.add_argument("--cluster-gpus", type=int, default=None, metavar="N",
                   help="with --plan: also the wall time on a cluster of N GPUs")
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
    if args.cluster_gpus is not None and (not args.plan or args.cluster_gpus < 1):
        raise InputError(f"--cluster-gpus {args.cluster_gpus} is not allowed; give N >= 1, with --plan")
    if args.plan:
        return _plan(exp_id, preset, cfg, args)
    if args.log:  # into every run's TrainConfig (the preset's train block), so it travels with each run's config
        if not isinstance(cfg.get("train"), dict):
            raise InputError(f"--log: experiment {exp_id!r} has no engine runs to log (no train block in its presets)")
        cfg["train"] = {**cfg["train"], "loggers": check_loggers(args.log)}
    if args.jobs < 1:
        raise InputError(f"--jobs must be >= 1, got {args.jobs}")
    runtime = ex.Runtime(jobs=args.jobs, shard=parse_shard(args.shard), progress=not args.no_progress,
                         retry_failed=args.retry_failed, **_executor_options(args))  # fmt: skip
    out = Path(args.out or f"runs/{exp_id}-{preset}")
    with _cluster(runtime, out):
        summary = ex.run_experiment(exp_id, cfg, out, preset=preset, runtime=runtime)
    # the answer on stdout (progress bars are on stderr, so stdout can be piped)
    print(summarize(out))
    if summary.get("runs_failed"):  # recorded failures: exit 1 (2 is for bad input)
        sys.stderr.write(f"varsmooth: error: {summary['runs_failed']} of {summary.get('runs_total', '?')} runs "
                         f"failed (see {out / 'summary.json'})\n")  # fmt: skip
        return 1
    return 0


def _executor_options(args: argparse.Namespace) -> dict:
    """The Runtime fields of ``--executor``, ``--gpus-per-run``, ``--cpus-per-run`` (checked; InputError)."""
    if args.executor != "ray":
        given = [flag for flag, value in (("--gpus-per-run", args.gpus_per_run), ("--cpus-per-run", args.cpus_per_run))
                 if value is not None]  # fmt: skip
        if given:
            raise InputError(f"{given[0]} needs --executor ray (the local executor runs on this machine's devices)")
        return {}
    from ..experiments.ray_executor import check_options, import_ray

    if args.jobs != 1:
        raise InputError(f"--jobs {args.jobs} is for the local executor; with --executor ray the cluster runs as many "
                         "runs at once as its CPUs and GPUs allow (--cpus-per-run, --gpus-per-run)")  # fmt: skip
    if args.shard != "0/1":
        raise InputError("--shard splits a sweep across machines by hand; with --executor ray the cluster does: "
                         "drop --shard")  # fmt: skip
    gpus = 0.0 if args.gpus_per_run is None else args.gpus_per_run
    cpus = 1 if args.cpus_per_run is None else args.cpus_per_run
    check_options(gpus, cpus)
    import_ray()
    return {"executor": "ray", "gpus_per_run": gpus, "cpus_per_run": cpus}


@contextlib.contextmanager
def _cluster(runtime: ex.Runtime, out: Path):
    """For ``--executor ray``: the Ray connection for the whole experiment, its cluster and ``out`` checked before
    anything is written (the experiment's sweeps reuse it). Nothing for the local executor."""
    if runtime.executor != "ray":
        yield
        return
    from ..experiments.ray_executor import checked_cluster

    with checked_cluster(out, gpus_per_run=runtime.gpus_per_run, cpus_per_run=runtime.cpus_per_run):
        yield


def _plan(exp_id: str, preset: str, cfg: dict, args: argparse.Namespace) -> int:
    from ..engine.runfolder import device_of
    from .plan import format_plan, plan, plan_configs

    result = plan(plan_configs(exp_id, cfg), device_of("auto"))
    print(format_plan(result, exp_id=exp_id, preset=preset, gpus_per_run=args.gpus_per_run,
                      cluster_gpus=args.cluster_gpus))  # fmt: skip
    return 0
