"""Resumable sweeps: run a list of configurations once each, in parallel processes, split across machines.

Each configuration has a unique ``name`` and runs in ``OUT/runs/<name>/``. A run is *finished* when its
``result.json`` exists with the same config; finished runs are skipped on re-run, and an unfinished run is handed
to the run function again, which resumes from the checkpoint it left in its folder (the training engine does).
``jobs`` runs independent configurations in that many processes; ``shard=(i, n)`` runs only every n-th
configuration starting at i, so n machines sharing an output folder cover the sweep once.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..errors import InputError
from ..io import read_json, write_json

RunFn = Callable[[dict, Path], dict]


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


def load_result(out: str | Path, cfg: dict) -> dict | None:
    """The metrics of a finished run with this exact config, else None."""
    path = result_path(out, cfg["name"])
    if not path.exists():
        return None
    saved = read_json(path)
    return saved["metrics"] if saved["config"] == cfg else None


def _resolve(run_fn: str | RunFn) -> RunFn:
    if callable(run_fn):
        return run_fn
    module, _, attr = run_fn.partition(":")
    return getattr(importlib.import_module(module), attr)


def _run_one(run_fn: str | RunFn, cfg: dict, out: str, threads: int | None) -> dict:
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    run_dir = Path(out) / "runs" / cfg["name"]
    run_dir.mkdir(parents=True, exist_ok=True)
    metrics = _resolve(run_fn)(cfg, run_dir)
    write_json(run_dir / "result.json", {"config": cfg, "metrics": metrics})
    return metrics


def run_sweep(
    configs: Sequence[dict[str, Any]],
    out: str | Path,
    run_fn: str | RunFn,
    *,
    jobs: int = 1,
    shard: tuple[int, int] = (0, 1),
    progress: bool = True,
) -> list[tuple[dict, dict | None]]:
    """Run every unfinished config of this shard; return ``(config, metrics or None)`` for all configs, in order.

    ``run_fn(cfg, run_dir) -> metrics`` (a flat dict of numbers) is a callable, or ``"module:function"`` — the
    string form is required for ``jobs > 1`` (worker processes import it).
    """
    names = [cfg["name"] for cfg in configs]
    if len(set(names)) != len(names):
        raise ValueError("sweep configurations must have unique names")
    if jobs < 1:
        raise InputError(f"--jobs must be >= 1, got {jobs}")
    index, count = shard
    todo = [cfg for k, cfg in enumerate(configs) if k % count == index and load_result(out, cfg) is None]
    bar = tqdm(total=len(todo), desc="sweep", unit="run", disable=not progress or not todo)
    if jobs == 1 or len(todo) <= 1:
        for cfg in todo:
            _run_one(run_fn, cfg, str(out), None)
            bar.update()
    else:
        if callable(run_fn):
            raise ValueError("jobs > 1 needs run_fn as a 'module:function' string")
        threads = max(1, (os.cpu_count() or 1) // jobs)
        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(_run_one, run_fn, cfg, str(out), threads) for cfg in todo]
            for future in futures:
                future.result()
                bar.update()
    bar.close()
    return [(cfg, load_result(out, cfg)) for cfg in configs]
