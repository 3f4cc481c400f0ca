"""Resumable sweeps: run a list of configurations once each, in parallel processes or on a Ray cluster.

Each configuration has a unique ``name`` and runs in ``OUT/runs/<name>/``. A run is *finished* when its
``result.json`` exists with the same config; finished runs are skipped on re-run, and an unfinished run is handed
to the run function again, which resumes from the checkpoint it left in its folder (the training engine does).
``jobs`` runs independent configurations in that many local processes (the default executor, ``"local"``);
``executor="ray"`` hands each one to a Ray cluster as a task (:mod:`.ray_executor`: GPU shares, retries of lost
workers, every node writing into the shared output folder). ``shard=(i, n)`` runs only every n-th configuration
starting at i, so n machines sharing an output folder cover the sweep once (by hand; Ray supersedes it).

*Failures.* A run whose function raises -- an engine run that diverges (``TrainingDiverged``) or any other
``Exception`` -- is recorded as *failed* in ``OUT/runs/<name>/failure.json`` (its config, a one-line ``reason``, the
``error`` type, ``last_good_epoch``: the epoch of the checkpoint it left, 0 for none, ``attempts`` and the
``traceback``) and the sweep goes on with the other runs. Bad input (``InputError``) and OS errors (a full disk, a
read-only folder) are not a run's failure: they stop the sweep with their one line. A re-run skips a recorded
failure of the same config -- training is deterministic, so it would fail the same way -- unless ``retry_failed``;
a retry resumes from the last good checkpoint, and one that finishes removes the record. :func:`failed_runs`
lists them.

*Locks* (:mod:`varsmooth.lock`): the sweep holds ``OUT/.lock`` (a lock file per shard, ``.lock.shard-i-of-n``, so
the shards of one sweep may share a folder) and each run holds its run folder while it runs, so a second process
on the same folder (or the same run) stops at once with one line naming the holder.
"""

from __future__ import annotations

import datetime
import importlib
import json
import os
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..errors import InputError
from ..io import read_json, write_json
from ..lock import LOCK_NAME, hold

RunFn = Callable[[dict, Path], dict]
EXECUTORS = ("local", "ray")  # where a sweep's runs execute: local processes (--jobs), or a Ray cluster


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with 0 <= i < n."""
    try:
        i, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise InputError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from None
    if not 0 <= i < n:
        raise InputError(f"--shard {text!r}: need 0 <= i < n")
    return i, n


def result_path(out: str | Path, name: str) -> Path:
    return Path(out) / "runs" / name / "result.json"


def failure_path(out: str | Path, name: str) -> Path:
    return Path(out) / "runs" / name / "failure.json"


def lock_name(shard: tuple[int, int]) -> str:
    """The sweep folder's lock file of a shard: ``.lock`` for the whole sweep, else one per shard."""
    i, n = shard
    return LOCK_NAME if n == 1 else f"{LOCK_NAME}.shard-{i}-of-{n}"


def load_result(out: str | Path, cfg: dict) -> dict | None:
    """The metrics of a finished run with this exact config, else None."""
    path = result_path(out, cfg["name"])
    if not path.exists():
        return None
    saved = read_json(path, keys=("config", "metrics"))
    return saved["metrics"] if saved["config"] == cfg else None


def load_failure(out: str | Path, cfg: dict) -> dict | None:
    """The failure record of this exact config (``failure.json``), else None (an unreadable record: None)."""
    path = failure_path(out, cfg["name"])
    if not path.exists():
        return None
    try:
        saved = read_json(path)
    except (OSError, ValueError):
        return None
    return saved if isinstance(saved, dict) and saved.get("config") == cfg else None


def failed_runs(configs: Sequence[dict[str, Any]], out: str | Path) -> list[dict[str, Any]]:
    """The recorded failures among ``configs`` (not finished since), in order: ``{name, reason, error,
    last_good_epoch, attempts, file}`` plus the config's ``tags`` when it has them."""
    out_list = []
    for cfg in configs:
        if load_result(out, cfg) is not None:
            continue
        rec = load_failure(out, cfg)
        if rec is not None:
            row = {"name": cfg["name"], **({"tags": cfg["tags"]} if "tags" in cfg else {})}
            row.update({k: rec.get(k) for k in ("reason", "error", "last_good_epoch", "attempts")})
            row["file"] = f"runs/{cfg['name']}/failure.json"
            out_list.append(row)
    return out_list


def _last_good_epoch(err: BaseException, run_dir: Path) -> int:
    """The epoch of the last checkpoint a failed run left: the error's own ``last_good_epoch`` (the engine's
    TrainingDiverged), else the last line of the run's ``metrics.jsonl`` (written after each checkpoint), else 0."""
    epoch = getattr(err, "last_good_epoch", None)
    if isinstance(epoch, int):
        return epoch
    try:
        lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
        return int(json.loads(lines[-1])["epoch"]) if lines else 0
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def _record_failure(out: str | Path, cfg: dict, err: Exception) -> None:
    run_dir = Path(out) / "runs" / cfg["name"]
    old = load_failure(out, cfg)
    first = next((line.strip() for line in str(err).splitlines() if line.strip()), "")
    reason = f"{type(err).__name__}: {first}" if first else type(err).__name__
    write_json(failure_path(out, cfg["name"]), {
        "config": cfg,
        "reason": reason if len(reason) <= 500 else reason[:497] + "...",
        "error": type(err).__name__,
        "last_good_epoch": _last_good_epoch(err, run_dir),
        "attempts": int(old.get("attempts", 0)) + 1 if old else 1,
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "traceback": "".join(traceback.format_exception(type(err), err, err.__traceback__)),
    })  # fmt: skip


def _resolve(run_fn: str | RunFn) -> RunFn:
    if callable(run_fn):
        return run_fn
    module, _, attr = run_fn.partition(":")
    return getattr(importlib.import_module(module), attr)


def run_one(run_fn: str | RunFn, cfg: dict, out: str, threads: int | None) -> dict | None:
    """Run one config in its locked run folder; its metrics, or None when it failed (recorded in failure.json)."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    run_dir = Path(out) / "runs" / cfg["name"]
    with hold(run_dir, what="run folder"):
        try:
            metrics = _resolve(run_fn)(cfg, run_dir)
        except (InputError, OSError):  # bad input, a full disk, a read-only folder: not this run's failure
            raise
        except Exception as err:  # noqa: BLE001 - any failure of one run is recorded and the sweep goes on
            _record_failure(out, cfg, err)
            return None
        write_json(run_dir / "result.json", {"config": cfg, "metrics": metrics})
        failure_path(out, cfg["name"]).unlink(missing_ok=True)
    return metrics


def run_sweep(
    configs: Sequence[dict[str, Any]],
    out: str | Path,
    run_fn: str | RunFn,
    *,
    jobs: int = 1,
    shard: tuple[int, int] = (0, 1),
    progress: bool = True,
    retry_failed: bool = False,
    executor: str = "local",
    gpus_per_run: float = 0.0,
    cpus_per_run: int = 1,
) -> list[tuple[dict, dict | None]]:
    """Run every unfinished config of this shard; return ``(config, metrics or None)`` for all configs, in order
    (None: not finished -- failed, see :func:`failed_runs`, or another shard's).

    ``run_fn(cfg, run_dir) -> metrics`` (a flat dict of numbers) is a callable, or ``"module:function"`` — the
    string form is required for ``jobs > 1`` (worker processes import it). ``retry_failed``: run recorded failures
    again (else they are skipped). Holds the sweep folder's lock throughout (InputError if another process does).

    ``executor``: ``"local"`` (``jobs`` processes here) or ``"ray"`` (a Ray task per run, each given
    ``gpus_per_run`` GPUs and ``cpus_per_run`` CPUs; the cluster ``RAY_ADDRESS`` names, else a local one; needs
    the string form of ``run_fn``). Either way the same run folders and results.
    """
    names = [cfg["name"] for cfg in configs]
    if len(set(names)) != len(names):
        raise ValueError("sweep configurations must have unique names")
    if jobs < 1:
        raise InputError(f"--jobs must be >= 1, got {jobs}")
    if executor not in EXECUTORS:
        raise InputError(f"unknown executor {executor!r}; allowed: {', '.join(EXECUTORS)}")
    if executor == "ray":
        if callable(run_fn):
            raise ValueError("executor 'ray' needs run_fn as a 'module:function' string")
        from .ray_executor import checked_cluster

        with checked_cluster(out, gpus_per_run=gpus_per_run, cpus_per_run=cpus_per_run):
            return _sweep(configs, out, run_fn, jobs=jobs, shard=shard, progress=progress, retry_failed=retry_failed,
                          ray_resources=(gpus_per_run, cpus_per_run))  # fmt: skip
    return _sweep(configs, out, run_fn, jobs=jobs, shard=shard, progress=progress, retry_failed=retry_failed)


def _sweep(
    configs: Sequence[dict[str, Any]],
    out: str | Path,
    run_fn: str | RunFn,
    *,
    jobs: int,
    shard: tuple[int, int],
    progress: bool,
    retry_failed: bool,
    ray_resources: tuple[float, int] | None = None,
) -> list[tuple[dict, dict | None]]:
    """:func:`run_sweep` after its checks; ``ray_resources``: (GPUs, CPUs) of a Ray task per run, else local."""
    index, count = shard
    with hold(out, what="sweep folder", name=lock_name(shard), clean=count == 1):
        todo = [cfg for k, cfg in enumerate(configs) if k % count == index and load_result(out, cfg) is None
                and (retry_failed or load_failure(out, cfg) is None)]  # fmt: skip
        bar = tqdm(total=len(todo), desc="sweep", unit="run", disable=not progress or not todo)
        failed = 0

        def done(metrics: dict | None) -> None:
            nonlocal failed
            failed += metrics is None
            if failed:
                bar.set_postfix(failed=failed, refresh=False)
            bar.update()

        if ray_resources is not None:
            from .ray_executor import run_tasks

            gpus, cpus = ray_resources
            for cfg, outcome in run_tasks(run_one, run_fn, todo, out, gpus_per_run=gpus, cpus_per_run=cpus):
                if isinstance(outcome, BaseException):  # every attempt's worker died: a failed run, the rest go on
                    _record_failure(out, cfg, outcome)
                    outcome = None
                done(outcome)
        elif jobs == 1 or len(todo) <= 1:
            for cfg in todo:
                done(run_one(run_fn, cfg, str(out), None))
        else:
            if callable(run_fn):
                raise ValueError("jobs > 1 needs run_fn as a 'module:function' string")
            threads = max(1, (os.cpu_count() or 1) // jobs)
            with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
                futures = [pool.submit(run_one, run_fn, cfg, str(out), threads) for cfg in todo]
                try:
                    for future in futures:
                        done(future.result())
                except BaseException:
                    for future in futures:
                        future.cancel()
                    raise
        bar.close()
    return [(cfg, load_result(out, cfg)) for cfg in configs]
