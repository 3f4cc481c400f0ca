"""The one training engine: every method, dataset and model trains through :func:`train`.

Per epoch: a seeded permutation of the training examples (the ``data`` generator), batches of ``batch_size``
(optionally augmented with the ``augment`` generator), one :meth:`Method.train_step` each with the learning rate of
:mod:`varsmooth.schedules` set before the step, a NaN/inf guard on every step's loss, then evaluation (accuracy,
NLL, 15-bin ECE on the test split and the validation split; IVON at the mean and as posterior predictive over
``test_samples`` samples, with a generator seeded per epoch so evaluation never perturbs training), callbacks,
a checkpoint (:mod:`varsmooth.checkpoint`) and one line of ``metrics.jsonl``.

A run folder ``out`` holds ``config.json`` (resolved config, seed, versions), ``metrics.jsonl``, ``checkpoint.pt``,
``final.json`` (final metrics, realised label-noise rate, IVON's sigma statistics) and ``arrays.npz`` (labels,
noise mask, validation mask, final test and training predictions). Calling :func:`train` again on a folder with a
checkpoint resumes from it when the config matches (``epochs`` may grow; ``device``, ``progress``, ``data_dir``,
``num_workers`` and ``eval_batch_size`` may change) and raises :class:`InputError` otherwise. Nothing is written
before every input has been checked. Under ``torchrun`` (``WORLD_SIZE`` > 1) see :mod:`varsmooth.parallel`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from . import checkpoint as ckpt
from .errors import InputError
from .io import append_jsonl, atomic_open, read_json, versions, write_json
from .methods import Method, StepOutput, build_method, check_method, method_defaults
from .metrics import classification_metrics
from .parallel import DistContext, init_from_env
from .rundata import RunData, fetch, prepare, seed_int
from .schedules import ScheduleUnit, lr_factor, parse_schedule

__all__ = ["TrainConfig", "TrainResult", "TrainState", "TrainingDiverged", "train", "resolve_config"]


class TrainingDiverged(RuntimeError):
    """The loss or the parameters became NaN/inf; the last good checkpoint is kept."""


@dataclass
class TrainConfig:
    """One training run. ``None`` means the method's default (see :data:`varsmooth.methods.METHOD_DEFAULTS`)."""

    dataset: str = "mnist-subset"
    data_dir: str | None = None
    model: str = "mlp"
    method: str = "erm"
    noise: str = "none"  # "symmetric:0.4", "pairflip:0.2", "class-dependent:0.3[:0.05]", "none"
    noisy_labels: str | None = None  # natural noisy label file aligned with the training split
    noisy_labels_key: str | None = None  # entry of a CIFAR-N .pt file
    seed: int = 0
    noise_seed: int | None = None  # seed of the label flips; None: ``seed``
    epochs: int = 10
    batch_size: int = 128
    lr: float | None = None
    weight_decay: float | None = None
    momentum: float = 0.9  # SGD momentum (erm, ls, ols, sam)
    schedule: str | None = None  # "step" | "cosine" | "constant"; None: step for SGD methods, cosine for IVON
    schedule_epochs: int | None = None  # length of the schedule; None: ``epochs``
    schedule_unit: str = "step"  # cosine/warm-up updated every "step" or every "epoch"
    milestones: list[int] | None = None  # step schedule; None: 50% and 75% of schedule_epochs (paper: 100, 150)
    lr_decay: float = 0.1
    warmup_epochs: float | None = None  # cosine warm-up; None: 2.5% of schedule_epochs (paper: 5 of 200)
    alpha: float | None = None  # ls: smoothing (default 0.1); ols: weight of the hard label (default 0.5)
    ols_init_smoothing: float = 0.1
    rho: float | None = None  # sam neighbourhood (default 0.05)
    adaptive: bool = False  # adaptive SAM
    ess: float | None = None  # IVON effective sample size; None: ess_factor * number of training examples
    ess_factor: float = 1.0
    hess_init: float | None = None
    beta1: float = 0.9
    beta2: float | None = None  # ivon: 0.99999; ivon-fixed-h: 1 (fixed)
    mc_samples: int = 1  # IVON training samples per step
    test_samples: int = 32  # IVON posterior-predictive samples at evaluation
    clip_radius: float | None = None  # IVON update clipping; None: no clipping
    train_subset: int | None = None
    val_fraction: float = 0.0
    model_options: dict = field(default_factory=dict)
    data_options: dict = field(default_factory=dict)
    device: str = "auto"
    eval_batch_size: int = 1000
    num_workers: int = 0
    progress: bool = True
    save_train_predictions: bool = True

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise InputError(f"unknown training option(s) {', '.join(unknown)}; allowed: {', '.join(sorted(names))}")
        return cls(**d)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# Options that may change when a run is resumed (they do not change what is computed in training).
RESUME_FREE = ("epochs", "data_dir", "device", "progress", "num_workers", "eval_batch_size")


def resolve_config(cfg: TrainConfig | dict) -> TrainConfig:
    """A copy with every ``None`` default filled in for the method, checked; raises InputError."""
    cfg = TrainConfig.from_dict(cfg) if isinstance(cfg, dict) else dataclasses.replace(cfg)
    method = check_method(cfg.method)
    from .models import MODELS

    if cfg.model not in MODELS:  # fail before a (possibly slow) dataset load
        raise InputError(f"unknown model {cfg.model!r}; allowed: {', '.join(MODELS)}")
    for key, value in method_defaults(method).items():
        if getattr(cfg, key) is None:
            setattr(cfg, key, value)
    _positive_int(cfg, "epochs", "batch_size", "mc_samples", "test_samples", "eval_batch_size")
    _check(cfg.lr > 0 and math.isfinite(cfg.lr), "lr", cfg.lr, "a positive number")
    _check(cfg.weight_decay >= 0, "weight_decay", cfg.weight_decay, "a number >= 0")
    _check(0 <= cfg.momentum < 1, "momentum", cfg.momentum, "in [0, 1)")
    _check(0 <= cfg.val_fraction < 1, "val_fraction", cfg.val_fraction, "in [0, 1)")
    _check(cfg.lr_decay >= 0, "lr_decay", cfg.lr_decay, "a number >= 0")
    _check(cfg.num_workers >= 0, "num_workers", cfg.num_workers, "an integer >= 0")
    parse_schedule(cfg.schedule)
    try:
        ScheduleUnit(cfg.schedule_unit)
    except ValueError:
        raise InputError(f"schedule_unit={cfg.schedule_unit!r} is not allowed; use 'step' or 'epoch'") from None
    cfg.schedule_epochs = cfg.epochs if cfg.schedule_epochs is None else cfg.schedule_epochs
    _positive_int(cfg, "schedule_epochs")
    if cfg.milestones is None:
        cfg.milestones = sorted({round(0.5 * cfg.schedule_epochs), round(0.75 * cfg.schedule_epochs)})
    cfg.milestones = [int(m) for m in cfg.milestones]
    if cfg.warmup_epochs is None:
        cfg.warmup_epochs = 0.025 * cfg.schedule_epochs if cfg.schedule == "cosine" else 0.0
    _check(0 <= cfg.warmup_epochs < cfg.schedule_epochs, "warmup_epochs", cfg.warmup_epochs, "in [0, schedule_epochs)")
    cfg.noise_seed = cfg.seed if cfg.noise_seed is None else cfg.noise_seed
    if method in ("ls", "ols"):
        _check(0 <= cfg.alpha <= 1, "alpha", cfg.alpha, "in [0, 1]")
    if method == "sam":
        _check(cfg.rho >= 0, "rho", cfg.rho, "a number >= 0")
    if method.startswith("ivon"):
        if method == "ivon-fixed-h" and cfg.beta2 != 1.0:
            raise InputError(f"beta2={cfg.beta2} with method ivon-fixed-h, which fixes beta2 = 1; use method ivon")
        _check(0 <= cfg.beta1 < 1, "beta1", cfg.beta1, "in [0, 1)")
        _check(0 <= cfg.beta2 <= 1, "beta2", cfg.beta2, "in [0, 1]")
        _check(cfg.hess_init > 0, "hess_init", cfg.hess_init, "a positive number")
        _check(cfg.ess is None or cfg.ess > 0, "ess", cfg.ess, "a positive number")
        _check(cfg.ess_factor > 0, "ess_factor", cfg.ess_factor, "a positive number")
        _check(cfg.clip_radius is None or cfg.clip_radius > 0, "clip_radius", cfg.clip_radius, "a positive number")
    return cfg


def _check(ok: bool, name: str, value, allowed: str) -> None:
    if not ok:
        raise InputError(f"{name}={value!r} is not allowed; it must be {allowed}")


def _positive_int(cfg, *names: str) -> None:
    for name in names:
        v = getattr(cfg, name)
        _check(isinstance(v, int) and not isinstance(v, bool) and v >= 1, name, v, "a positive integer")


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

    def predict(self, x: torch.Tensor, samples: int | None = None) -> torch.Tensor:
        """Probabilities (B, K) at the mean (``samples`` None) or the posterior predictive over ``samples``."""
        return _predict(self.method, x, self.device, samples, seed_int(self.cfg.seed, 1000 + self.epoch))


@dataclass
class TrainResult:
    config: TrainConfig  # resolved
    metrics: dict  # final metrics (also in final.json)
    history: list[dict]  # per-epoch metrics (also in metrics.jsonl)
    model: nn.Module
    method: Method  # .optimizer is the IVON / SGD / SAM optimizer; IVON: .posterior_std()
    run: RunData  # data, pool indices, labels trained on, clean labels, noise mask, validation mask
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
    import os

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


@torch.no_grad()
def _predict(method: Method, x: torch.Tensor, device, samples: int | None, seed: int) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    if samples is None or not method.variational:
        return method.predict_proba(x)
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        return method.predictive_proba(x, samples, gen)


def _predict_all(method, features, idx, device, samples, seed, batch) -> np.ndarray:
    out = [
        _predict(method, fetch(features, idx[i : i + batch]), device, samples, seed + i)
        for i in range(0, len(idx), batch)
    ]
    return torch.cat(out).cpu().numpy() if out else np.zeros((0, 0), dtype=np.float32)


def _evaluate(method, cfg, run: RunData, device, epoch: int) -> tuple[dict, dict]:
    """Metrics of the test (and validation) split; also returns the test probabilities."""
    data, seed = run.data, seed_int(cfg.seed, 1000 + epoch)
    test_idx = np.arange(len(data.test))
    probs = {"mean": _predict_all(method, data.test.features, test_idx, device, None, seed, cfg.eval_batch_size)}
    m = classification_metrics(data.test.labels.numpy(), probs["mean"], prefix="test_")
    if method.variational:
        probs["pred"] = _predict_all(
            method, data.test.features, test_idx, device, cfg.test_samples, seed, cfg.eval_batch_size
        )
        m.update(classification_metrics(data.test.labels.numpy(), probs["pred"], prefix="test_pred_"))
    if run.is_val.any():
        val_idx, lab = run.pool_index[run.val_pos], run.labels[run.val_pos]
        p = _predict_all(method, data.train.features, val_idx, device, None, seed, cfg.eval_batch_size)
        m.update(classification_metrics(lab, p, prefix="val_"))
        if method.variational:
            p = _predict_all(
                method, data.train.features, val_idx, device, cfg.test_samples, seed + 1, cfg.eval_batch_size
            )
            m.update(classification_metrics(lab, p, prefix="val_pred_"))
    return m, probs


def _diverged(cfg, epoch: int, step: int, what: str, out: Path | None, last_good: int) -> TrainingDiverged:
    kept = (
        f"; the last good checkpoint (epoch {last_good}) is kept in {out / 'checkpoint.pt'}"
        if out is not None and last_good > 0
        else "; no checkpoint was written"
    )
    return TrainingDiverged(
        f"training diverged at epoch {epoch + 1}, step {step + 1}: {what} "
        f"(method {cfg.method}, lr {cfg.lr}){kept}; lower the learning rate"
    )


def _config_diff(saved: dict, new: dict) -> list[str]:
    keys = sorted((set(saved) | set(new)) - set(RESUME_FREE))
    return [k for k in keys if saved.get(k) != new.get(k)]


def train(
    cfg: TrainConfig | dict, out: str | Path | None = None, *, callbacks: Sequence[Callback] = (), data=None
) -> TrainResult:
    """Train one model with one method; write the run folder ``out`` (None: write nothing) and return the result.

    ``data``: an already loaded :class:`varsmooth.data.LabeledData` to use instead of loading ``cfg.dataset``.
    ``callbacks``: callables ``cb(epoch, state: TrainState)`` run after each epoch's evaluation on rank 0 (before
    its checkpoint); a callback with ``on_batch(epoch, pos, out: StepOutput, labels)`` is also called after
    every step with the pool positions ``pos`` (B,) of the step's (local) batch. A callback with ``state_dict()`` /
    ``load_state_dict()`` is checkpointed and restored on resume. Raises InputError (bad input, nothing written)
    and :class:`TrainingDiverged` (NaN/inf loss; the last good checkpoint stays).
    """
    cfg = resolve_config(cfg)
    device = _device(cfg.device)
    run = prepare(cfg, data)
    n_train = len(run.train_pos)
    if cfg.method.startswith("ivon") and cfg.ess is None:
        cfg.ess = float(cfg.ess_factor * n_train)
    out = None if out is None else Path(out)
    resolved = cfg.to_dict()
    saved = None
    if out is not None and (out / "checkpoint.pt").exists():
        saved = ckpt.load(out / "checkpoint.pt")
    elif out is not None and (out / "config.json").exists():
        saved = {"config": read_json(out / "config.json").get("config", {})}
    if saved is not None:
        diff = _config_diff(saved["config"], resolved)
        if diff:
            raise InputError(
                f"{out} holds a run with a different config ({', '.join(diff)} differ); "
                "use another --out or delete the folder"
            )
        if "labels" in saved and saved["labels"] != ckpt.labels_fingerprint(run.labels, run.pool_index):
            raise InputError(f"{out} holds a run trained on different labels; use another --out")
        if saved.get("epoch", 0) > cfg.epochs:
            raise InputError(f"{out} holds a run already at epoch {saved['epoch']} > epochs={cfg.epochs}")

    dist = init_from_env(device)
    try:
        return _train(cfg, out, run, device, dist, saved, callbacks)
    finally:
        dist.close()


def _train(cfg: TrainConfig, out, run: RunData, device, dist: DistContext, saved, callbacks) -> TrainResult:
    data = run.data
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    from .models import build_model

    model = build_model(cfg.model, data.num_classes, data.input_shape, **cfg.model_options).to(device)
    dist.broadcast_model(model)
    gens = {
        "data": torch.Generator().manual_seed(seed_int(cfg.seed, 3)),
        "augment": torch.Generator(device=device).manual_seed(seed_int(cfg.seed, 4 + 100 * dist.rank)),
        "noise": torch.Generator(device=device).manual_seed(seed_int(cfg.seed, 5 + 100 * dist.rank)),
    }
    torch.manual_seed(seed_int(cfg.seed, 6 + 100 * dist.rank))  # dropout etc.: own stream per rank
    np.random.seed(seed_int(cfg.seed, 7) % 2**32)
    import random

    random.seed(seed_int(cfg.seed, 8))
    method = build_method(
        cfg.method,
        model,
        cfg,
        num_train=len(run.train_pos),
        num_classes=data.num_classes,
        dist=dist,
        generator=gens["noise"],
    )
    history: list[dict] = []
    start = 0
    if saved is not None and "model" in saved:
        if len(saved["rng"]) != dist.world_size:
            raise InputError(f"checkpoint was written by {len(saved['rng'])} processes; this run has {dist.world_size}")
        model.load_state_dict(saved["model"])
        method.load_state_dict(saved["method"])
        ckpt.set_rng_state(saved["rng"][dist.rank], gens)
        history, start = list(saved["history"]), int(saved["epoch"])
        for cb, state in zip(callbacks, saved.get("callbacks", []), strict=False):
            if state is not None and hasattr(cb, "load_state_dict"):
                cb.load_state_dict(state)
    main = dist.is_main
    if out is not None and main:
        out.mkdir(parents=True, exist_ok=True)
        write_json(
            out / "config.json",
            {
                "config": cfg.to_dict(),
                "seed": cfg.seed,
                "versions": versions(),
                "world_size": dist.world_size,
                "noise": run.noise,
            },
        )
        with atomic_open(out / "metrics.jsonl", "w") as f:  # the history up to the checkpoint, nothing after it
            f.writelines(__import__("json").dumps(h) + "\n" for h in history)

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
                from .data.transforms import augment_batch

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
        if main:
            metrics, epoch_probs = _evaluate(method, cfg, run, device, epoch + 1)
            record.update(metrics)
            record.update(method.stats())
            record["time_s"] = time.perf_counter() - t0
        history.append(record)
        if main:
            state = TrainState(epoch + 1, cfg, model, method, run, record, device, history)
            for cb in callbacks:
                cb(epoch + 1, state)
        rngs = dist.gather_objects(ckpt.rng_state(gens))
        if out is not None and main:
            ckpt.save(
                out / "checkpoint.pt",
                {
                    "config": cfg.to_dict(),
                    "epoch": epoch + 1,
                    "model": model.state_dict(),
                    "method": {**method.state_dict(), "base_lrs": method.base_lrs},
                    "rng": rngs,
                    "history": history,
                    "data_order": perm,
                    "labels": ckpt.labels_fingerprint(run.labels, run.pool_index),
                    "callbacks": [cb.state_dict() if hasattr(cb, "state_dict") else None for cb in callbacks],
                },
            )
            append_jsonl(out / "metrics.jsonl", record)
        dist.barrier()
    return _finish(cfg, out, run, model, method, device, dist, history, epoch_probs)


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


def start_or(history: list[dict]) -> int:
    return history[-1]["epoch"] if history else 0


def _finish(cfg, out, run: RunData, model, method, device, dist, history, probs) -> TrainResult:
    main = dist.is_main
    metrics, train_probs, train_pred = dict(history[-1]) if history else {}, None, None
    if main:
        if probs is None:  # resumed a finished run: evaluate again (deterministic)
            extra, probs = _evaluate(method, cfg, run, device, cfg.epochs)
            metrics.update(extra)
        if cfg.save_train_predictions:
            seed = seed_int(cfg.seed, 2000)
            train_probs = _predict_all(
                method, run.data.train.features, run.pool_index, device, None, seed, cfg.eval_batch_size
            )
            if method.variational:
                train_pred = _predict_all(
                    method, run.data.train.features, run.pool_index, device, cfg.test_samples, seed, cfg.eval_batch_size
                )
    metrics.update({f"noise_{k}": v for k, v in run.noise.items() if k != "transition_matrix"})
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
            ("noise_mask", run.noise_mask),
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
