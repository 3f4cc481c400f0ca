"""The one training engine: every method, dataset and model trains through :func:`train`.

Per epoch: a seeded permutation of the training examples (the ``data`` generator), batches of ``batch_size``
(optionally augmented with the ``augment`` generator), one :meth:`Method.train_step` each with the learning rate of
:mod:`varsmooth.schedules` set before the step, a NaN/inf guard on every step's loss, then evaluation (accuracy,
NLL, 15-bin ECE on the test split and the validation split; IVON at the mean and as posterior predictive over
``test_samples`` samples, with a generator seeded per epoch so evaluation never perturbs training), callbacks,
a checkpoint (:mod:`varsmooth.checkpoint`) and one line of ``metrics.jsonl``.

A run folder ``out`` holds ``config.json`` (resolved config, seed, versions), ``metrics.jsonl``, ``checkpoint.pt``,
``final.json`` (final metrics, realised corruption rate, IVON's sigma statistics) and ``arrays.npz`` (labels,
flip mask, validation mask, final test and training predictions). Calling :func:`train` again on a folder with a
checkpoint resumes from it when the config matches and raises :class:`InputError` otherwise. The options in
``RESUME_FREE`` -- device, progress, data_dir, num_workers, eval_batch_size, eval_every -- may change, and
``epochs`` may grow: the schedule keeps the length it was resolved with (``schedule_epochs``, recorded in the
config), so the extra epochs continue at the schedule's last learning rate (give ``schedule_epochs`` explicitly
for a longer schedule in a new folder). The checkpoint is checked against the config before use
(:func:`varsmooth.engine.checkpoint.validate`). Nothing is written before every input has been checked:
``config.json`` and ``metrics.jsonl`` are written with the first checkpoint, and a run that fails before it
leaves nothing behind. The folder is locked for the run (:mod:`varsmooth.lock`, by rank 0): a second process on it
gets InputError naming the holder. Under ``torchrun`` (``WORLD_SIZE`` > 1) see :mod:`varsmooth.parallel`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import sys
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
from ..data.transforms import augment_batch
from ..errors import InputError, os_errors
from ..io import append_jsonl, atomic_open, check_folder, read_json, versions, write_json
from ..lock import hold
from ..loggers import attach as attach_loggers
from ..loggers import require_folder
from ..models import build_model
from . import checkpoint as ckpt
from .checkpoint import Checkpoint
from .ess_search import search_ess
from .evaluation import evaluate, noise_l2, predict_split
from .methods import Method, StepOutput, build_method, hessian_warning
from .parallel import DistContext, init_from_env
from .rundata import RunData, eval_seed, fetch, prepare, seed_int, seed_run
from .schedules import lr_factor
from .trainconfig import RESUME_FREE, TrainConfig, finalize_config, resolve_config

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


def _device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {name!r} requested but CUDA is not available; use --device cpu")
        if dev.index is None and "LOCAL_RANK" in os.environ:
            dev = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(dev)
    return dev


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


def _config_diff(saved: dict, new: dict) -> list[str]:
    saved, new = (json.loads(json.dumps(d, default=str)) for d in (saved, new))  # tuples == lists, as in JSON
    keys = sorted((set(saved) | set(new)) - set(RESUME_FREE))
    return [k for k in keys if saved.get(k) != new.get(k)]


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
    validation split exists) first chooses ess by successive halving (:mod:`varsmooth.ess_search`). Raises
    InputError (bad input, nothing written) and :class:`TrainingDiverged` (NaN/inf loss; the last good checkpoint
    stays).
    """
    with os_errors():  # a full disk, a read-only folder: one InputError naming the file
        out = None if out is None else check_folder(out)
        cfg = resolve_config(_schedule_of_resumed(cfg, out))  # a checked copy, before the (slow) data load
        if data is not None:
            cfg = dataclasses.replace(cfg, dataset=data.name)  # record what was trained on
        run = prepare(cfg, data)
        cfg = finalize_config(cfg, len(run.train_pos))  # ess and beta2 need the training-set size
        return _train_or_search(cfg, out, run, callbacks, model_factory)


def _schedule_of_resumed(cfg: TrainConfig, out: Path | None) -> TrainConfig:
    """``cfg`` with the schedule length of the run in ``out`` when none was given: a resume with more epochs (or
    the same command again after one) does not stretch the schedule (its length is recorded as ``schedule_epochs``)."""
    if out is None or cfg.schedule_epochs is not None or not (out / "config.json").is_file():
        return cfg
    length = _folder_config(out).get("schedule_epochs")
    if isinstance(length, int) and not isinstance(length, bool):
        return dataclasses.replace(cfg, schedule_epochs=length)
    return cfg


def _folder_config(out: Path) -> dict:
    """The run config recorded in ``out/config.json``; InputError naming the file when it holds none."""
    saved = read_json(out / "config.json", keys=("config",))["config"]
    if not isinstance(saved, dict):
        raise InputError(f"{out / 'config.json'} holds no run config; use another --out or delete the folder")
    return saved


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
    device = _device(cfg.device)
    saved = None  # the checkpoint to resume from
    saved_config = None  # what the folder says it holds (a run stopped before its first checkpoint: config.json)
    if out is not None and (out / "checkpoint.pt").exists():
        saved = ckpt.load(out / "checkpoint.pt")
        ckpt.validate(saved, cfg, out / "checkpoint.pt")  # every field, before any is used
        saved_config = saved.config
    elif out is not None and (out / "config.json").exists():
        saved_config = _folder_config(out)
    if saved_config is not None:
        diff = _config_diff(saved_config, cfg.to_dict())
        if diff:
            raise InputError(
                f"{out} holds a run with a different config ({', '.join(diff)} differ); "
                "use another --out or delete the folder"
            )
    if saved is not None:
        if saved.labels is not None and saved.labels != ckpt.labels_fingerprint(run.labels, run.pool_index):
            raise InputError(f"{out} holds a run trained on different labels; use another --out")

    dist = init_from_env(device)
    before = _files(out)
    try:
        return _train(cfg, out, run, device, dist, saved, callbacks, record, warn, model_factory)
    except BaseException:
        _remove_partial(out, before)
        raise
    finally:
        dist.close()


def _files(out: Path | None) -> set[str] | None:
    """The names in ``out`` (None: absent)."""
    return None if out is None or not out.is_dir() else set(os.listdir(out))


def _remove_partial(out: Path | None, before: set[str] | None) -> None:
    """After a run failed before its first checkpoint: remove the config.json and metrics.jsonl it wrote, so a failed
    command leaves nothing behind (the folders it made go with the run folder's lock, :func:`varsmooth.lock.hold`,
    when nothing else is left in them). A run with a checkpoint is kept."""
    if out is None or not out.is_dir() or (out / "checkpoint.pt").exists():
        return
    for name in ("config.json", "metrics.jsonl"):
        if before is None or name not in before:
            with contextlib.suppress(OSError):
                (out / name).unlink()


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
    of a run; the global random streams are left as they were. ``generator`` drives IVON's weight noise."""
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
    except (MemoryError, RuntimeError) as err:  # e.g. model_options hidden=[10**11]
        if not isinstance(err, MemoryError | torch.OutOfMemoryError) and "allocate" not in str(err):
            raise
        raise InputError(f"model {cfg.model!r} with model_options={cfg.model_options} does not fit in memory on "
                         f"{device}; make it smaller") from None  # fmt: skip
    dist.broadcast_model(model)
    method = build_method(cfg.method, model, cfg, num_train=len(run.train_pos), num_classes=data.num_classes,
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
        _write_header(out, header, history)
        unwritten = False

    train_pos = torch.from_numpy(run.train_pos)
    labels = torch.from_numpy(run.labels)
    steps = math.ceil(len(train_pos) / cfg.batch_size)
    progress = cfg.progress and main
    epoch_probs = None
    for epoch in tqdm(
        range(start, cfg.epochs),
        desc=f"{cfg.method}",
        disable=not progress,
        initial=start,
        total=cfg.epochs,
        unit="epoch",
    ):
        t0 = time.perf_counter()
        model.train()
        perm = train_pos[torch.randperm(len(train_pos), generator=gens["data"])]
        totals = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, count (global)
        batches = perm.split(cfg.batch_size)
        shards = [dist.shard(b) for b in batches]
        loader = _loader(data.train.features, [run.pool_index[loc.numpy()] for loc, _ in shards], cfg.num_workers)
        bar = tqdm(loader, total=len(batches), leave=False, disable=not progress, desc=f"epoch {epoch + 1}")
        for step, x in enumerate(bar):
            (local, scale), batch = shards[step], batches[step]
            method.set_lr_factor(
                lr_factor(cfg.schedule, epoch=epoch, step=step, steps_per_epoch=steps,
                          total_epochs=cfg.schedule_epochs, milestones=cfg.milestones, gamma=cfg.lr_decay,
                          warmup_epochs=cfg.warmup_epochs, unit=cfg.schedule_unit)
            )  # fmt: skip
            x = x.to(device, non_blocking=True)
            if data.augment:
                x = augment_batch(x, data.augment, gens["augment"])
            y = labels[local].to(device, non_blocking=True)
            res: StepOutput = method.train_step(x, y, scale=scale, global_batch=len(batch))
            correct = float((res.logits.argmax(1) == y).sum()) if len(y) else 0.0
            step_tot = dist.sum(torch.tensor([float(res.loss) * len(y), correct, len(y)], dtype=torch.float64))
            if not math.isfinite(step_tot[0].item()):
                loss = step_tot[0].item() / step_tot[2].item()
                raise _diverged(cfg, epoch, step, f"loss = {loss}", out, start_or(history))
            totals += step_tot
            for cb in callbacks:
                if main and hasattr(cb, "on_batch"):
                    cb.on_batch(epoch + 1, local.numpy(), res, y)
            bar.set_postfix(loss=f"{step_tot[0].item() / max(step_tot[2].item(), 1):.4f}", refresh=False)
        method.end_epoch()
        if not all(torch.isfinite(p).all() for p in model.parameters()):
            raise _diverged(cfg, epoch, steps - 1, "non-finite parameters", out, start_or(history))
        dist.broadcast_model(model)  # rank 0's BatchNorm statistics
        record = {
            "epoch": epoch + 1,
            "lr": method.optimizer.param_groups[0]["lr"],
            "train_loss": float(totals[0] / totals[2]),
            "train_acc": float(totals[1] / totals[2]),
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
            _write_header(out, header, history[:-1])
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
    return _finish(cfg, out, run, model, method, device, dist, history, epoch_probs, warn)


def _write_header(out: Path, header: dict, history: list[dict]) -> None:
    """``config.json`` and ``metrics.jsonl`` (the history up to the checkpoint, nothing after it)."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", header)
    with atomic_open(out / "metrics.jsonl", "w") as f:
        f.writelines(json.dumps(h) + "\n" for h in history)


class _Batches(torch.utils.data.Dataset):
    """Item i: the stacked features of batch i (for DataLoader worker processes on lazy image datasets)."""

    def __init__(self, features, index_batches):
        self.features, self.index_batches = features, index_batches

    def __len__(self):
        return len(self.index_batches)

    def __getitem__(self, i):
        return fetch(self.features, self.index_batches[i])


def _loader(features, index_batches, num_workers: int):
    data = _Batches(features, index_batches)
    if num_workers == 0:
        return (data[i] for i in range(len(data)))
    return torch.utils.data.DataLoader(data, batch_size=None, shuffle=False, num_workers=num_workers)


def best_epoch_metrics(history: list[dict]) -> dict[str, float]:
    """The best evaluated epoch's test accuracy (``test_acc_best``, at the mean; ``test_pred_acc_best``, predictive)
    and its epoch: with label noise, the last epoch can fall well below it once the network fits the flips."""
    out = {}
    for key in ("test_acc", "test_pred_acc"):
        evaluated = [h for h in history if key in h]
        if evaluated:
            best = max(evaluated, key=lambda h: h[key])
            out[f"{key}_best"], out[f"{key}_best_epoch"] = float(best[key]), int(best["epoch"])
    return out


def start_or(history: list[dict]) -> int:
    return history[-1]["epoch"] if history else 0


def _finish(
    cfg: TrainConfig,
    out: Path | None,
    run: RunData,
    model: nn.Module,
    method: Method,
    device: torch.device,
    dist: DistContext,
    history: list[dict],
    probs: dict[str, np.ndarray] | None,
    warn: bool,
) -> TrainResult:
    main = dist.is_main
    metrics, train_probs, train_pred = dict(history[-1]) if history else {}, None, None
    if main:
        if probs is None:  # resumed a finished run: evaluate again (deterministic)
            extra, probs = evaluate(method, cfg, run, device, cfg.epochs)
            metrics.update(extra)
        if cfg.save_train_predictions:
            train_probs, train_pred = predict_split(
                method, run.data.train.features, run.pool_index, samples=cfg.test_samples if method.variational
                else None, seed=seed_int(cfg.seed, 2000), batch_size=cfg.eval_batch_size, device=device,
            )  # fmt: skip
            if method.variational:
                metrics["train_noise_l2"] = noise_l2(train_probs, train_pred)
    metrics.update(best_epoch_metrics(history))
    warning = hessian_warning(metrics) if method.variational else None
    if warning is not None:
        metrics["warnings"] = [warning]
        if warn and main:
            sys.stderr.write(f"varsmooth: warning: {warning}\n")
    metrics.update({f"corruption_{k}": v for k, v in run.corruption.items() if k != "transition_matrix"})
    metrics.update(
        n_train=int((~run.is_val).sum()),
        n_val=int(run.is_val.sum()),
        n_test=len(run.data.test),
        method=cfg.method,
        seed=cfg.seed,
    )
    if out is not None and main:
        arrays = {
            "pool_index": run.pool_index,
            "labels": run.labels,
            "is_val": run.is_val,
            "test_labels": run.data.test.labels.numpy(),
            "test_probs": probs["mean"],
        }
        for name, value in (
            ("clean_labels", run.clean_labels),
            ("flip_mask", run.flip_mask),
            ("test_probs_pred", probs.get("pred")),
            ("train_probs", train_probs),
            ("train_probs_pred", train_pred),
        ):
            if value is not None:
                arrays[name] = value
        with atomic_open(out / "arrays.npz", "wb") as f:
            np.savez_compressed(f, **arrays)
        write_json(out / "final.json", metrics)
    dist.barrier()
    return TrainResult(
        cfg,
        metrics,
        history,
        model,
        method,
        run,
        probs["mean"] if probs else None,
        probs.get("pred") if probs else None,
        train_probs,
        train_pred,
        out,
    )
