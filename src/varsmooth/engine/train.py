"""The one training engine: every method, dataset and model trains through :func:`train`.

Per epoch: a seeded permutation of the training examples (the ``data`` generator), batches of ``batch_size``
(optionally augmented with the ``augment`` generator), one :meth:`Method.train_step` each with the learning rate of
:mod:`varsmooth.schedules` set before the step, a NaN/inf guard on the loss, then evaluation (accuracy,
NLL, 15-bin ECE on the test split and the validation split; IVON at the mean and as posterior predictive over
``test_samples`` samples, with a generator seeded per epoch so evaluation never perturbs training), callbacks,
a checkpoint (:mod:`varsmooth.checkpoint`) and one line of ``metrics.jsonl``; at the end ``final.json`` and
``arrays.npz`` (:mod:`.finish`).

The run folder (:mod:`.runfolder`): calling :func:`train` again on a folder with a checkpoint resumes from it when
the config matches and raises :class:`InputError` otherwise. The options in ``RESUME_FREE`` -- device, progress,
data_dir, num_workers, eval_batch_size, eval_every -- may change, and ``epochs`` may grow: the schedule keeps the
length it was resolved with (``schedule_epochs``, recorded in the config), so the extra epochs continue at the
schedule's last learning rate (give ``schedule_epochs`` explicitly for a longer schedule in a new folder). Nothing
is written before every input has been checked, and a run that fails before its first checkpoint leaves nothing
behind. The folder is locked for the run (:mod:`varsmooth.lock`, by rank 0): a second process on it gets
InputError naming the holder. Under ``torchrun`` (``WORLD_SIZE`` > 1) see :mod:`varsmooth.parallel`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..data import LabeledData
from ..errors import InputError, os_errors
from ..io import append_jsonl, check_folder, versions
from ..lock import hold
from ..loggers import attach as attach_loggers
from ..loggers import require_folder
from ..models import build_model
from . import checkpoint as ckpt
from .batches import EpochTotals, TrainBatches
from .checkpoint import Checkpoint
from .ess_search import search_ess
from .evaluation import evaluate, predict_split
from .finish import final_outputs
from .methods import Method, StepOutput, build_method
from .parallel import DistContext, init_from_env
from .precision import check_runtime, compile_model, uses_channels_last
from .rundata import RunData, eval_seed, prepare, seed_run
from .runfolder import device_of, files, remove_partial, resume_point, schedule_of_resumed, write_header
from .schedules import lr_factor
from .trainconfig import TrainConfig, finalize_config, resolve_config

__all__ = ["TrainResult", "TrainState", "TrainingDiverged", "build", "train"]


class TrainingDiverged(RuntimeError):
    """The loss or the parameters became NaN/inf; the last good checkpoint is kept (``last_good_epoch``, 0: none)."""

    last_good_epoch: int = 0


@dataclass
class TrainState:
    """What callbacks see: ``callback(epoch, state)`` after each epoch's evaluation (epoch counts from 1)."""

    epoch: int
    cfg: TrainConfig
    model: nn.Module
    method: Method
    run: RunData
    metrics: dict
    device: torch.device
    history: list[dict]

    def predict(self, pos: np.ndarray, samples: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """``(p_mean, p_pred)`` (M, K) of the pool positions ``pos`` (M,) after this epoch (:func:`predict_split`,
        seeded like the epoch's evaluation); ``p_pred`` None when ``samples`` is None."""
        features, index = self.run.data.train.features, self.run.pool_index[np.asarray(pos)]
        seed = eval_seed(self.cfg.seed, self.epoch)
        return predict_split(self.method, features, index, samples=samples, seed=seed, device=self.device)


@dataclass
class TrainResult:
    config: TrainConfig  # resolved
    metrics: dict  # final metrics (also in final.json)
    history: list[dict]  # per-epoch metrics (also in metrics.jsonl)
    model: nn.Module
    method: Method  # .optimizer is the IVON / SGD / SAM optimizer; IVON: .posterior_std()
    run: RunData  # data, pool indices, labels trained on, clean labels, flip mask, validation mask
    test_probs: np.ndarray  # (N_test, K) at the mean
    test_probs_pred: np.ndarray | None  # (N_test, K) posterior predictive (IVON)
    train_probs: np.ndarray | None  # (P, K) over the pool (train + val), at the mean
    train_probs_pred: np.ndarray | None  # (P, K) posterior predictive (IVON)
    out: Path | None

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.method.optimizer


Callback = Callable[[int, TrainState], Any]


def factor_now(method: Method) -> float:
    """The learning-rate factor of the last step (current lr over base lr)."""
    return method.optimizer.param_groups[0]["lr"] / method.base_lrs[0] if method.base_lrs[0] else 0.0


def _diverged(cfg: TrainConfig, epoch: int, step: int, what: str, out: Path | None, last_good: int) -> TrainingDiverged:
    kept = (
        f"; the last good checkpoint (epoch {last_good}) is kept in {out / 'checkpoint.pt'}"
        if out is not None and last_good > 0
        else "; no checkpoint was written"
    )
    err = TrainingDiverged(
        f"training diverged at epoch {epoch + 1}, step {step + 1}: {what} "
        f"(method {cfg.method}, lr {cfg.lr}){kept}; lower the learning rate"
    )
    err.last_good_epoch = last_good
    return err


def train(
    cfg: TrainConfig,
    out: str | Path | None = None,
    *,
    callbacks: Sequence[Callback] = (),
    data: LabeledData | None = None,
    model_factory: Callable[[], nn.Module] | None = None,
) -> TrainResult:
    """Train one model with one method; write the run folder ``out`` (None: write nothing) and return the result.

    ``data``: an already loaded :class:`varsmooth.data.LabeledData` to use instead of loading ``cfg.dataset``.
    ``model_factory``: called once per run for the model to train (its own initial weights) instead of ``cfg.model``.
    ``callbacks``: callables ``cb(epoch, state: TrainState)`` run after each epoch's evaluation on rank 0 (before
    its checkpoint); a callback with ``on_batch(epoch, pos, out: StepOutput, labels)`` is also called after
    every step with the pool positions ``pos`` (B,) of the step's (local) batch. A callback with ``state_dict()`` /
    ``load_state_dict()`` is checkpointed and restored on resume. IVON with ``ess="auto"`` (the default when a
    validation split exists) first chooses ess (:mod:`varsmooth.engine.ess_search`). Raises
    InputError (bad input, nothing written) and :class:`TrainingDiverged` (NaN/inf loss; the last good checkpoint
    stays).
    """
    with os_errors():  # a full disk, a read-only folder: one InputError naming the file
        out = None if out is None else check_folder(out)
        cfg = resolve_config(schedule_of_resumed(cfg, out))  # a checked copy, before the (slow) data load
        check_runtime(cfg.precision, cfg.compile, device_of(cfg.device))  # fp16 without CUDA, --compile
        if data is not None:
            cfg = dataclasses.replace(cfg, dataset=data.name)  # record what was trained on
        run = prepare(cfg, data)
        cfg = finalize_config(cfg, len(run.train_pos))  # ess and beta2 need the training-set size
        return _train_or_search(cfg, out, run, callbacks, model_factory)


def _train_or_search(
    cfg: TrainConfig,
    out: Path | None,
    run: RunData,
    callbacks: Sequence[Callback],
    model_factory: Callable[[], nn.Module] | None = None,
) -> TrainResult:
    def run_fixed(c: TrainConfig, folder, *, callbacks=callbacks, record=None, warn=True) -> TrainResult:
        folder = None if folder is None else Path(folder)
        with attach_loggers(c, folder) as logs:  # c.loggers: TensorBoard / MLflow, fed each epoch's record
            return logs.done(_train_run(c, folder, run, [*callbacks, *logs.callbacks], record or {}, warn,
                                        model_factory))

    require_folder(cfg.loggers, out)  # loggers without a run folder: InputError before anything runs

    # the run folder's lock (varsmooth.lock) for the whole run, ess search included; rank 0 only (other ranks are
    # other processes and write nothing)
    locked = out is not None and int(os.environ.get("RANK", "0")) == 0
    with hold(out, what="run folder") if locked else contextlib.nullcontext():
        if cfg.method.startswith("ivon") and cfg.ess == "auto":
            return search_ess(cfg, len(run.train_pos), out, run_fixed, callbacks=callbacks, diverged=TrainingDiverged)
        return run_fixed(cfg, out)


def _train_run(
    cfg: TrainConfig, out: Path | None, run: RunData, callbacks: Sequence[Callback], record: dict, warn: bool,
    model_factory: Callable[[], nn.Module] | None = None,
) -> TrainResult:
    """One run of the finalized ``cfg`` (numeric ess and beta2) on the prepared ``run``; resumes from ``out``."""
    device = device_of(cfg.device)
    saved = resume_point(cfg, out, run)  # InputError when the folder holds another run
    dist = init_from_env(device)
    before = files(out)
    try:
        return _train(cfg, out, run, device, dist, saved, callbacks, record, warn, model_factory)
    except BaseException:
        remove_partial(out, before)
        raise
    finally:
        dist.close()


def build(
    cfg: TrainConfig,
    run: RunData,
    device: torch.device,
    *,
    dist: DistContext | None = None,
    generator: torch.Generator | None = None,
    model_factory: Callable[[], nn.Module] | None = None,
) -> tuple[nn.Module, Method]:
    """The model (initial weights from ``cfg.seed``, the same on every rank; or ``model_factory()``) and the method
    of a run; the global random streams are left as they were. ``generator`` drives IVON's weight noise. On CUDA a
    convolutional model is stored channels-last; with ``cfg.compile`` the method runs ``torch.compile(model)``."""
    dist = dist or DistContext()
    data = run.data
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            if model_factory is not None:
                model = model_factory()
            else:
                model = build_model(cfg.model, data.num_classes, data.input_shape, **cfg.model_options)
        model = model.to(device)
        if uses_channels_last(model, device):
            model = model.to(memory_format=torch.channels_last)
    except (MemoryError, RuntimeError) as err:  # e.g. model_options hidden=[10**11]
        if not isinstance(err, MemoryError | torch.OutOfMemoryError) and "allocate" not in str(err):
            raise
        raise InputError(f"model {cfg.model!r} with model_options={cfg.model_options} does not fit in memory on "
                         f"{device}; make it smaller") from None  # fmt: skip
    dist.broadcast_model(model)
    net = compile_model(model) if cfg.compile else model  # the method's forward; same parameters as model
    method = build_method(cfg.method, net, cfg, num_train=len(run.train_pos), num_classes=data.num_classes,
                          dist=dist, generator=generator)  # fmt: skip
    return model, method


def _train(
    cfg: TrainConfig,
    out: Path | None,
    run: RunData,
    device: torch.device,
    dist: DistContext,
    saved: Checkpoint | None,
    callbacks: Sequence[Callback],
    record: dict,
    warn: bool,
    model_factory: Callable[[], nn.Module] | None = None,
) -> TrainResult:
    data = run.data
    gens = seed_run(cfg.seed, dist.rank, device)
    model, method = build(cfg, run, device, dist=dist, generator=gens["noise"], model_factory=model_factory)
    history: list[dict] = []
    start = 0
    if saved is not None:  # resume: weights, optimizer, every random state and the callbacks' states
        ckpt.restore(saved, model, method, generators=gens, rank=dist.rank, world_size=dist.world_size,
                     callbacks=callbacks)  # fmt: skip
        history, start = list(saved.history), int(saved.epoch)
    main = dist.is_main
    header = {"config": cfg.to_dict(), "seed": cfg.seed, "versions": versions(), "world_size": dist.world_size,
              "corruption": run.corruption, **record}  # fmt: skip
    unwritten = out is not None and main  # config.json and metrics.jsonl: with the first checkpoint
    if unwritten and saved is not None:  # resumed: the config may say more epochs now
        write_header(out, header, history)
        unwritten = False

    train_pos = torch.from_numpy(run.train_pos)
    feed = TrainBatches(run, device, num_workers=cfg.num_workers, augment=data.augment,
                        channels_last=uses_channels_last(model, device))  # fmt: skip
    steps = math.ceil(len(train_pos) / cfg.batch_size)
    progress = cfg.progress and main
    epoch_probs = None
    epochs = tqdm(range(start, cfg.epochs), desc=f"{cfg.method}", disable=not progress, initial=start,
                  total=cfg.epochs, unit="epoch")  # fmt: skip
    for epoch in epochs:
        t0 = time.perf_counter()
        model.train()
        perm = train_pos[torch.randperm(len(train_pos), generator=gens["data"])]
        batches = perm.split(cfg.batch_size)
        shards = [dist.shard(b) for b in batches]
        totals = EpochTotals(device, len(batches))  # on the device: read once, after the last step
        bar = tqdm(feed.epoch(shards, gens["augment"]), total=len(batches), leave=False, disable=not progress,
                   desc=f"epoch {epoch + 1}")  # fmt: skip
        for step, (x, y) in enumerate(bar):
            (local, scale), batch = shards[step], batches[step]
            method.set_lr_factor(
                lr_factor(cfg.schedule, epoch=epoch, step=step, steps_per_epoch=steps,
                          total_epochs=cfg.schedule_epochs, milestones=cfg.milestones, gamma=cfg.lr_decay,
                          warmup_epochs=cfg.warmup_epochs, unit=cfg.schedule_unit)
            )  # fmt: skip
            res: StepOutput = method.train_step(x, y, scale=scale, global_batch=len(batch))
            totals.add(step, res.loss, res.logits, y)
            for cb in callbacks:
                if main and hasattr(cb, "on_batch"):
                    cb.on_batch(epoch + 1, local.numpy(), res, y)
        method.end_epoch()
        finite = torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all()
        epoch_totals = totals.read(dist, finite)  # the epoch's one read-back from the device
        if epoch_totals["bad_step"] is not None:
            what = f"loss = {epoch_totals['bad_loss']}"
            raise _diverged(cfg, epoch, int(epoch_totals["bad_step"]), what, out, start_or(history))
        if not epoch_totals["params_finite"]:
            raise _diverged(cfg, epoch, steps - 1, "non-finite parameters", out, start_or(history))
        epochs.set_postfix(loss=f"{epoch_totals['loss']:.4f}", refresh=False)
        dist.broadcast_model(model)  # rank 0's BatchNorm statistics
        record = {
            "epoch": epoch + 1,
            "lr": method.optimizer.param_groups[0]["lr"],
            "train_loss": epoch_totals["loss"],
            "train_acc": epoch_totals["acc"],
        }
        epoch_probs = None
        if main and ((epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs):
            metrics, epoch_probs = evaluate(method, cfg, run, device, epoch + 1)
            record.update(metrics)
        if main:
            record.update(method.stats())
            record["time_s"] = time.perf_counter() - t0
        history.append(record)
        if main:
            state = TrainState(epoch + 1, cfg, model, method, run, record, device, history)
            for cb in callbacks:
                cb(epoch + 1, state)
        rngs = dist.gather_objects(ckpt.rng_state(gens))
        if unwritten:
            write_header(out, header, history[:-1])
            unwritten = False
        if out is not None and main:
            ckpt.save(
                out / "checkpoint.pt",
                Checkpoint(
                    config=cfg.to_dict(),
                    epoch=epoch + 1,
                    model=model.state_dict(),
                    method={**method.state_dict(), "base_lrs": method.base_lrs},
                    rng=rngs,
                    history=history,
                    data_order=perm,
                    schedule={"epoch": epoch + 1, "steps_per_epoch": steps, "lr_factor": factor_now(method)},
                    labels=ckpt.labels_fingerprint(run.labels, run.pool_index),
                    callbacks=[cb.state_dict() if hasattr(cb, "state_dict") else None for cb in callbacks],
                ),
            )
            append_jsonl(out / "metrics.jsonl", record)
        dist.barrier()
    metrics, probs, train_probs, train_pred = final_outputs(cfg, out, run, method, device, dist, history,
                                                            epoch_probs, warn)  # fmt: skip
    return TrainResult(cfg, metrics, history, model, method, run, probs["mean"] if probs else None,
                       probs.get("pred") if probs else None, train_probs, train_pred, out)  # fmt: skip


def start_or(history: list[dict]) -> int:
    return history[-1]["epoch"] if history else 0


