"""Glue between experiments, sweeps and the training engine (no training loop here: it calls ``train``).

A sweep configuration is ``{"name": str, "tags": {column: value}, "train": {TrainConfig fields}}`` and optionally
``"test_subset": n`` (evaluate on a seeded random n of the test split): ``train`` is what the engine runs, ``tags``
are the columns the run contributes to the experiment's tidy ``results.csv`` (method, corruption, alpha, seed, ...).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data import LabeledData, LabeledSplit, load_dataset
from ..engine import TrainConfig, TrainResult, train
from ..errors import InputError
from ..io import write_csv
from .sweep import run_sweep


@functools.lru_cache(maxsize=4)
def _load(dataset: str, data_dir: str | None, options: tuple):
    return load_dataset(dataset, data_dir, **dict(options))


def load_cached(train_cfg: dict[str, Any]):
    """The dataset of a training config, loaded once per process (sweeps run many configs on one dataset)."""
    options = tuple(sorted((train_cfg.get("data_options") or {}).items()))
    return _load(train_cfg.get("dataset", "mnist-subset"), train_cfg.get("data_dir"), options)


def load_data(train_cfg: dict[str, Any], test_subset: int | None = None, seed: int = 0) -> LabeledData:
    """The dataset of ``train_cfg`` (cached per process), its test split optionally cut to a seeded random
    ``test_subset`` (evaluating a CNN on 10,000 test images every epoch dominates a CPU run)."""
    data = load_cached(train_cfg)
    n = len(data.test)
    if test_subset is None or test_subset >= n:
        return data
    if test_subset < 1:
        raise InputError(f"test_subset={test_subset} is not allowed; use a positive integer or null")
    keep = np.sort(np.random.default_rng(seed).choice(n, size=test_subset, replace=False))
    idx = torch.from_numpy(keep)
    if not isinstance(data.test.features, torch.Tensor):
        raise InputError("test_subset needs a dataset held in memory; set test_subset: null")
    return dataclasses.replace(data, test=LabeledSplit(data.test.features[idx], data.test.labels[idx]))


def train_sweep_run(cfg: dict[str, Any], run_dir: Path, *, callbacks=()) -> TrainResult:
    """One engine run of a sweep config's ``cfg["train"]`` in ``run_dir`` (resumes from its checkpoint; a finished
    run is only evaluated again); returns the :class:`~varsmooth.engine.TrainResult`. ``cfg["test_subset"]``: the
    test split cut as in :func:`load_data`, seeded by the run's seed."""
    train_cfg = {"progress": False, **cfg["train"]}
    data = load_data(train_cfg, cfg.get("test_subset"), int(train_cfg.get("seed", 0)))
    return train(TrainConfig.from_dict(train_cfg), run_dir, callbacks=callbacks, data=data)


def named_run(config: dict[str, Any], name: str, preset: dict[str, Any], *, progress: bool) -> dict[str, Any]:
    """Sweep configuration ``config`` renamed ``name``, on the preset's ``test_subset``, with per-epoch progress bars
    when ``progress`` (the one-run-per-setting experiments: demo, noise-gallery, smoothed-labels)."""
    train_cfg = {**config["train"], "progress": progress}
    return {**config, "name": name, "train": train_cfg, "test_subset": preset.get("test_subset")}


def sweep_finished(
    configs: list[dict[str, Any]], out: Path, runtime: Any, run_fn: str
) -> tuple[list[tuple[dict, dict | None]], bool]:
    """Run the unfinished ``configs`` as a resumable sweep (:func:`.sweep.run_sweep`; ``runtime``: jobs, shard,
    progress); returns every ``(config, metrics or None)`` and whether all are finished (another shard's may not)."""
    results = run_sweep(configs, out, run_fn, jobs=runtime.jobs, shard=runtime.shard, progress=runtime.progress,
                        retry_failed=runtime.retry_failed, executor=runtime.executor,
                        gpus_per_run=runtime.gpus_per_run, cpus_per_run=runtime.cpus_per_run)  # fmt: skip
    return results, all(m is not None for _, m in results)


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch threads (None: unchanged). On a shared 2-core machine one thread per process
    avoids OpenMP oversubscription, which slows training several times over."""
    old = torch.get_num_threads()
    if n is not None:
        if not isinstance(n, int) or n < 1:
            raise InputError(f"threads={n!r} is not allowed; use a positive integer or null")
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def numeric_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The finite numbers among final metrics (accuracies, NLL, ECE, realised noise rate, sigma statistics)."""
    return {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }


def tidy_rows(
    results: list[tuple[dict, dict | None]], metrics: list[str], failures: Sequence[dict] = ()
) -> list[dict[str, Any]]:
    """One row per finished run and metric: the run's tags, ``metric`` and ``value``; then one row per failed run
    (``failures``, :func:`.sweep.failed_runs`): its tags, metric ``failed`` and value 1."""
    rows = []
    for cfg, values in results:
        if values is None:
            continue
        for metric in metrics:
            if metric in values:
                rows.append({**cfg["tags"], "metric": metric, "value": values[metric]})
    rows += [{**f.get("tags", {}), "metric": "failed", "value": 1} for f in failures]
    return rows


def write_results(out: Path, rows: list[dict[str, Any]]) -> Path:
    """Write the tidy ``results.csv`` (columns: the tags, then metric, value)."""
    columns = [c for c in dict.fromkeys(k for row in rows for k in row) if c not in ("metric", "value")]
    write_csv(out / "results.csv", rows, columns + ["metric", "value"])
    return out / "results.csv"
