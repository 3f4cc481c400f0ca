"""Glue between experiments, sweeps and the training engine (no training loop here: it calls ``train``).

A sweep configuration is ``{"name": str, "tags": {column: value}, "train": {TrainConfig fields}}``: ``train`` is
what the engine runs, ``tags`` are the columns the run contributes to the experiment's tidy ``results.csv``
(method, corruption, alpha, seed, ...).
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

from ..data import load_dataset
from ..engine import TrainConfig, TrainResult, train
from ..io import write_csv


@functools.lru_cache(maxsize=4)
def _load(dataset: str, data_dir: str | None, options: tuple):
    return load_dataset(dataset, data_dir, **dict(options))


def load_cached(train_cfg: dict[str, Any]):
    """The dataset of a training config, loaded once per process (sweeps run many configs on one dataset)."""
    options = tuple(sorted((train_cfg.get("data_options") or {}).items()))
    return _load(train_cfg.get("dataset", "mnist-subset"), train_cfg.get("data_dir"), options)


def train_sweep_run(cfg: dict[str, Any], run_dir: Path, *, callbacks=()) -> TrainResult:
    """One engine run of a sweep config's ``cfg["train"]`` in ``run_dir`` (resumes from its checkpoint);
    returns the :class:`~varsmooth.engine.TrainResult`."""
    train_cfg = {"progress": False, **cfg["train"]}
    return train(TrainConfig.from_dict(train_cfg), run_dir, callbacks=callbacks, data=load_cached(train_cfg))


def numeric_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The finite numbers among final metrics (accuracies, NLL, ECE, realised noise rate, sigma statistics)."""
    return {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }


def tidy_rows(results: list[tuple[dict, dict | None]], metrics: list[str]) -> list[dict[str, Any]]:
    """One row per finished run and metric: the run's tags, ``metric`` and ``value``."""
    rows = []
    for cfg, values in results:
        if values is None:
            continue
        for metric in metrics:
            if metric in values:
                rows.append({**cfg["tags"], "metric": metric, "value": values[metric]})
    return rows


def write_results(out: Path, rows: list[dict[str, Any]]) -> Path:
    """Write the tidy ``results.csv`` (columns: the tags, then metric, value)."""
    columns = [c for c in dict.fromkeys(k for row in rows for k in row) if c not in ("metric", "value")]
    write_csv(out / "results.csv", rows, columns + ["metric", "value"])
    return out / "results.csv"
