"""Live training curves in TensorBoard and MLflow: ``TrainConfig.loggers`` (``varsmooth train --log NAME``).

One small interface, :class:`Backend`, fed by the engine's per-epoch record -- the same dict that becomes a line of
``metrics.jsonl`` (loss, accuracies, NLL, ECE, IVON's sigma and h / h0 quantiles, the induced label noise on flipped
and clean training examples): nothing is computed twice. :class:`RunLogger` is the engine callback
(``cb(epoch, state)``) that hands each epoch's record to every backend; at the end of the run it adds the final
metrics (``final.json``), the ess search's rungs (``config.json``'s ``ess_search``: each candidate's validation
scores at each rung) and two figures it draws into ``RUN/figures/`` from the run's final predictions (reliability
diagram; IVON's label-noise histogram over flipped and clean training examples; not for an ess-search candidate).

Backends (:mod:`.tensorboard`, :mod:`.mlflow`) and where they write:

- ``tensorboard``: event files in ``RUN/tb`` (a sweep's run: ``OUT/runs/NAME/tb``; ``tensorboard --logdir OUT``).
- ``mlflow``: one MLflow run per run folder in the store ``MLFLOW_TRACKING_URI`` names, else the local SQLite store
  ``ROOT/mlflow.db`` (artifacts in ``ROOT/mlartifacts``), ``ROOT`` being the sweep folder ``OUT`` for a sweep's runs
  and the run folder for ``varsmooth train``. A sweep is one MLflow experiment (named after ``OUT``, or
  ``MLFLOW_EXPERIMENT_NAME``), its runs tagged with corruption, method and seed.

*Resume.* Nothing is kept in the checkpoint: a logger's first call in a process writes the whole history the run
has so far (the checkpoint's epochs too), and each backend makes that idempotent -- TensorBoard purges the steps it
rewrites (``purge_step``), MLflow continues the run whose id ``RUN/mlflow_run.json`` records, skips the epochs it
already holds and is given an epoch only once its checkpoint is written (at the next step), so an epoch that a kill
made run twice reaches it once. So a killed and resumed run is one TensorBoard run and one MLflow run without
duplicate steps, and ``--log`` added to a finished run (or sweep) logs its whole history once. An ess-search candidate
(``RUN/ess-search/fF``) is a run folder of its own: its own TensorBoard run, and an MLflow child run of the run's.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..io import read_json
from .base import DPI, FIGURES, LOGGERS, SEARCH_DIR, Backend, RunContext, check_loggers, scalars, tag_of

__all__ = ["LOGGERS", "Backend", "RunContext", "RunLogger", "attach", "check_loggers", "require_folder", "scalars",
           "tag_of"]

def _backend(name: str) -> Backend:
    if name == "tensorboard":
        from .tensorboard import TensorBoardBackend

        return TensorBoardBackend()
    from .mlflow import MlflowBackend

    return MlflowBackend()


class RunLogger:
    """The engine callback of one run folder: every epoch's record to each backend (opened at the first epoch, so a
    run that fails before it writes nothing); :meth:`done` adds the final metrics, the ess search and the figures.

    A backend with ``after_checkpoint`` (MLflow, which cannot take back a value) gets an epoch once its checkpoint
    is written -- at the next step (``on_batch``) or at the end -- so an epoch that a kill makes run twice reaches
    it once, with the values ``metrics.jsonl`` keeps."""

    def __init__(self, names: Sequence[str], folder: Path):
        self.names, self.folder = list(names), folder
        self.backends: list[Backend] = []
        self.logged: list[int] = []  # per backend, the last epoch handed to it in this process
        self.pending: tuple[Any, Sequence[Mapping[str, Any]]] | None = None  # (config, history) not yet all out

    def __call__(self, epoch: int, state: Any) -> None:
        self._write(state.cfg, state.history, checkpointed=epoch - 1)
        self.pending = (state.cfg, state.history)

    def on_batch(self, epoch: int, pos: Any, out: Any, labels: Any) -> None:
        if self.pending is not None:  # the previous epoch's checkpoint is written now
            (config, history), self.pending = self.pending, None
            self._write(config, history, checkpointed=history[-1]["epoch"])

    def _write(self, config: Any, history: Sequence[Mapping[str, Any]], *, checkpointed: int) -> None:
        """Hand each backend the epochs of ``history`` it lacks, up to ``checkpointed`` for an ``after_checkpoint``
        one; ``config``: the run's TrainConfig (its resolved dict opens the backends)."""
        if not self.backends:
            ctx = RunContext.of(self.folder, config.to_dict())
            for name in self.names:
                backend = _backend(name)
                backend.open(ctx)
                self.backends.append(backend)
                self.logged.append(0)
        for i, backend in enumerate(self.backends):
            upto = checkpointed if backend.after_checkpoint else math.inf
            new = [h for h in history if self.logged[i] < h["epoch"] <= upto]
            if new:
                backend.log_epochs(new)
                self.logged[i] = new[-1]["epoch"]

    def done(self, result: Any) -> Any:
        """After the run: the history not yet written (a finished run logged for the first time), then the final
        metrics, the ess search's rungs and the figures; returns ``result``."""
        if not result.method.dist.is_main:
            return result
        self.pending = None
        self._write(result.config, result.history, checkpointed=result.history[-1]["epoch"]
                    if result.history else 0)  # fmt: skip
        step = result.history[-1]["epoch"] if result.history else 0
        values = {f"final/{k}": [(step, v)] for k, v in scalars(result.metrics).items()}
        config_file = self.folder / "config.json"
        search = read_json(config_file).get("ess_search") if config_file.is_file() else None
        for rung in (search or {}).get("rungs", []):  # each candidate's validation scores at each rung's epoch
            for factor, scores in rung["scores"].items():
                for key, v in scalars(scores).items():
                    values.setdefault(f"ess_search/f{factor}/{key}", []).append((int(rung["epochs"]), v))
        final = [f for f in (self.folder / "final.json",) if f.is_file()]
        for backend in self.backends:  # MLflow's worker stores these while the figures are drawn
            backend.log_final(values, final)
        if self.folder.parent.name != SEARCH_DIR:  # a candidate's predictions are not the run's: no figures
            drawn = figures(result, self.folder / FIGURES, self.folder.name)
            for backend in self.backends:
                backend.log_final({}, drawn)
        self.close("FINISHED")
        return result

    def close(self, status: str) -> None:
        backends, self.backends = self.backends, []
        for backend in backends:
            backend.close(status)


def figures(result: Any, folder: Path, title: str) -> list[Path]:
    """Draw the run's final figures into ``folder``: ``reliability.png`` (test split, at the mean and, for IVON,
    the posterior predictive) and, when the run predicted its training set with IVON, ``noise_histogram.png`` (the
    size ``||eps_i||_2`` of the induced label noise ``eps_i = p_mean - p_pred`` over flipped and clean training
    examples, :mod:`varsmooth.engine.evaluation`)."""
    from .. import plots

    if result.test_probs is None:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    run, method = result.run, result.config.method
    test_labels = run.data.test.labels.numpy()
    preds = {f"{method} (mean)" if result.test_probs_pred is not None else method: (test_labels, result.test_probs)}
    if result.test_probs_pred is not None:
        preds[f"{method} (predictive)"] = (test_labels, result.test_probs_pred)
    out = [plots.save_figure(plots.reliability_diagram_figure(preds, title=title), folder / "reliability.png", dpi=DPI)]
    if result.train_probs is not None and result.train_probs_pred is not None:
        pos = run.train_pos
        size = np.linalg.norm(result.train_probs[pos] - result.train_probs_pred[pos], axis=1)
        groups = {"all": size}
        if run.flip_mask is not None and run.flip_mask[pos].any():
            flipped = run.flip_mask[pos]
            groups = {"flipped labels": size[flipped], "clean labels": size[~flipped]}
        out.append(plots.noise_histogram(groups, folder / "noise_histogram.png", logy=True,
                                         xlabel="label-noise size ||eps_i||_2", title=title))  # fmt: skip
    return out


def require_folder(names: Sequence[str], folder: Path | None) -> None:
    """InputError when loggers are asked for a run without a run folder (they write into it)."""
    if names and folder is None:
        raise InputError(f"loggers ({', '.join(names)}) write into the run folder; give one (--out)")


@contextlib.contextmanager
def attach(cfg: Any, folder: Path | None) -> Iterator[_Attached]:
    """The loggers of one engine run (``cfg.loggers`` into ``folder``): ``.callbacks`` to add to the run's, and
    ``.done(result)`` to call with its result. Closes the backends (FAILED, or KILLED on an interrupt) when the
    block raises."""
    names = list(getattr(cfg, "loggers", None) or [])
    require_folder(names, folder)
    logger = RunLogger(names, Path(folder)) if names else None
    attached = _Attached(logger)
    try:
        yield attached
    except BaseException as err:
        if logger is not None:
            with contextlib.suppress(Exception):  # the run's own error is the one to report
                logger.close("FAILED" if isinstance(err, Exception) else "KILLED")
        raise


class _Attached:
    def __init__(self, logger: RunLogger | None):
        self.logger = logger
        self.callbacks = [] if logger is None else [logger]

    def done(self, result: Any) -> Any:
        return result if self.logger is None else self.logger.done(result)
