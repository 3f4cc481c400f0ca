"""Configuration of one training run (:class:`TrainConfig`) and its resolution against the method's defaults.

``None`` fields take the method's default (:data:`varsmooth.methods.METHOD_DEFAULTS`, chosen for MNIST-scale CPU
runs); the paper's settings (App. C.2) are plain values of these fields, e.g. CIFAR-10 ResNet-34 IVON:
``epochs=200, batch_size=50, weight_decay=1e-3, lr=0.2, hess_init=0.9, warmup_epochs=5`` (cosine, ess = N); SGD
baselines ``lr=0.05, milestones=[100, 150], momentum=0.9``. :func:`resolve_config` checks every value and raises
:class:`InputError` naming the bad one.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from .errors import InputError
from .methods import check_method, method_defaults
from .schedules import ScheduleUnit, parse_schedule

__all__ = ["TrainConfig", "resolve_config", "RESUME_FREE"]


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
    eval_every: int = 1  # evaluate every k-th epoch (and always the last): IVON's predictive costs test_samples passes
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
RESUME_FREE = ("epochs", "data_dir", "device", "progress", "num_workers", "eval_batch_size", "eval_every")


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
    _positive_int(cfg, "epochs", "batch_size", "mc_samples", "test_samples", "eval_batch_size", "eval_every")
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
