"""MLflow backend: one MLflow run per run folder, through ``mlflow.tracking.MlflowClient``.

Store: ``MLFLOW_TRACKING_URI`` when set (MLflow's own convention; a server, a database), else the SQLite store
``ROOT/mlflow.db`` with artifacts in ``ROOT/mlartifacts`` (``ROOT``: the sweep folder for a sweep's runs, the run
folder otherwise; MLflow 3 refuses its old file store ``./mlruns``, SQLite needs no server and works offline;
``mlflow ui --backend-store-uri sqlite:///ROOT/mlflow.db`` shows it). Experiment: ``MLFLOW_EXPERIMENT_NAME`` when
set, else the sweep folder's name (one experiment per sweep) or ``varsmooth``. The run: named after the run folder
(a sweep's run: its NAME), tagged with ``corruption``, ``method``, ``seed`` and ``varsmooth.folder``; params = the
resolved config (flattened: ``model_options.hidden``); metrics per epoch (step = epoch) under their
``metrics.jsonl`` names; then ``final/<key>`` (``final.json``'s numbers), ``ess_search/f<factor>/<score>`` (step =
the rung's epoch) and the artifacts ``final.json`` and ``figures/*.png``.

Live: an epoch reaches MLflow once its checkpoint is written, at the next step. Resume: the run id is kept in
``RUN/mlflow_run.json`` (with the tracking URI it belongs to) when the run is created; a later process on the
folder continues that run (status RUNNING again), logs only the params it lacks and only the epochs after the last
one it holds. A store that changed (another ``MLFLOW_TRACKING_URI``) gets a new
run with the whole history. Writes to a local store are serialised across processes (``ROOT/mlflow.db.lock``,
``fcntl.flock``): a sweep's parallel runs share one SQLite file.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..io import read_json, write_json
from .base import Backend, RunContext, scalars

__all__ = ["MlflowBackend", "RUN_FILE", "tracking_uri"]

RUN_FILE = "mlflow_run.json"
BATCH = 1000  # metrics per log_batch call (MLflow's limit)


def tracking_uri(root: Path) -> str:
    """``MLFLOW_TRACKING_URI``, else the local SQLite store in ``root``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{root.resolve() / 'mlflow.db'}"


class MlflowBackend(Backend):
    """Every MLflow call runs on one worker thread, in order, so training does not wait for the store; an error
    there surfaces at the next epoch (or at the end)."""

    after_checkpoint = True  # a logged value cannot be taken back: only checkpointed epochs (varsmooth.loggers)

    def __init__(self) -> None:
        self.client: Any = None
        self.run_id: str | None = None
        self.logged = 0  # the last epoch the MLflow run holds
        self.lock: Path | None = None
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="varsmooth-mlflow")
        self.pending: list[Future] = []

    def _submit(self, fn: Any, *args: Any) -> None:
        for future in self.pending:
            if future.done() and future.exception() is not None:
                raise future.exception()  # type: ignore[misc]
        self.pending = [f for f in self.pending if not f.done()] + [self.worker.submit(fn, *args)]

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if self.lock is None:
            yield
            return
        with open(self.lock, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def open(self, ctx: RunContext) -> None:
        ctx.root.mkdir(parents=True, exist_ok=True)
        self._submit(self._open, ctx)

    def log_epochs(self, records: Sequence[Mapping[str, Any]]) -> None:
        self._submit(self._log_epochs, [dict(r) for r in records])

    def log_final(self, values: Mapping[str, Sequence[tuple[int, float]]], files: Sequence[Path]) -> None:
        self._submit(self._log_final, dict(values), list(files))

    def close(self, status: str) -> None:
        self._submit(self._close, status)
        self.worker.shutdown(wait=True)
        for future in self.pending:
            if future.exception() is not None:
                raise future.exception()  # type: ignore[misc]

    def _open(self, ctx: RunContext) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        uri = tracking_uri(ctx.root)
        local = not os.environ.get("MLFLOW_TRACKING_URI")
        self.lock = ctx.root / "mlflow.db.lock" if local else None
        with self._locked(), _quiet():
            self.client = MlflowClient(tracking_uri=uri)
            experiment = self._experiment(ctx, local)
            parent = None if ctx.parent is None else self._run(ctx.parent, uri, experiment)
            self.run_id = self._run(ctx, uri, experiment, parent)
            run = self.client.get_run(self.run_id)
            self.client.update_run(self.run_id, status="RUNNING")
            have = run.data.params
            params = [(k, str(v)) for k, v in ctx.config.items() if k not in have]
            for i in range(0, len(params), 100):
                self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in params[i : i + 100]])
            held = self.client.get_metric_history(self.run_id, "train_loss")
            self.logged = max((m.step for m in held), default=0)

    def _experiment(self, ctx: RunContext, local: bool) -> str:
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or ctx.experiment
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        artifacts = (ctx.root.resolve() / "mlartifacts").as_uri() if local else None
        try:
            return self.client.create_experiment(name, artifact_location=artifacts,
                                                 tags={"varsmooth.folder": str(ctx.root)})  # fmt: skip
        except Exception:  # noqa: BLE001 - created meanwhile by another process (a remote store)
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def _run(self, ctx: RunContext, uri: str, experiment: str, parent: str | None = None) -> str:
        """The MLflow run of ``ctx.folder``: the one its ``mlflow_run.json`` names in this store, else a new one."""
        path = ctx.folder / RUN_FILE
        if path.is_file():
            saved = read_json(path)
            if isinstance(saved, dict) and saved.get("tracking_uri") == uri and saved.get("run_id"):
                with contextlib.suppress(Exception):  # a run deleted from the store: a new one
                    self.client.get_run(saved["run_id"])
                    return str(saved["run_id"])
        tags = {**ctx.tags, "varsmooth.folder": str(ctx.folder)}
        if parent is not None:
            tags["mlflow.parentRunId"] = parent
        run = self.client.create_run(experiment, run_name=ctx.name, tags=tags)
        ctx.folder.mkdir(parents=True, exist_ok=True)
        write_json(path, {"tracking_uri": uri, "experiment_id": experiment, "run_id": run.info.run_id})
        return run.info.run_id

    def _log_metrics(self, metrics: list) -> None:
        with self._locked():
            for i in range(0, len(metrics), BATCH):
                self.client.log_batch(self.run_id, metrics=metrics[i : i + BATCH])

    def _log_epochs(self, records: Sequence[Mapping[str, Any]]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        new = [r for r in records if int(r["epoch"]) > self.logged]
        metrics = [Metric(k, v, now, int(r["epoch"])) for r in new for k, v in scalars(r).items()]
        if metrics:
            self._log_metrics(metrics)
            self.logged = int(new[-1]["epoch"])

    def _log_final(self, values: Mapping[str, Sequence[tuple[int, float]]], files: Sequence[Path]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        have = self.client.get_run(self.run_id).data.metrics  # a run logged to the end before: not again
        self._log_metrics([Metric(k, v, now, s) for k, series in values.items() if k not in have for s, v in series])
        with self._locked():
            for path in files:
                self.client.log_artifact(self.run_id, str(path), "figures" if path.suffix == ".png" else None)

    def _close(self, status: str) -> None:
        if self.run_id is not None:
            with self._locked():
                self.client.set_terminated(self.run_id, status)
            self.run_id = None


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """MLflow's INFO lines while it creates a store's tables (stderr is for progress bars and errors)."""
    loggers = [logging.getLogger(n) for n in ("mlflow.store.db.utils", "alembic.runtime.migration")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
