"""Configuration of one training run (:class:`TrainConfig`) and its resolution against the method's defaults.

``None`` fields take the method's default (:attr:`varsmooth.engine.methods.Method.defaults`, chosen for MNIST-scale
CPU runs); the paper's settings (App. C.2) are plain values of these fields, e.g. CIFAR-10 ResNet-34 IVON:
``epochs=200, batch_size=50, weight_decay=1e-3, lr=0.2, hess_init=0.9, warmup_epochs=5`` (cosine, ess = N); SGD
baselines ``lr=0.05, milestones=[100, 150], momentum=0.9``. :func:`resolve_config` checks every value and raises
:class:`InputError` naming the bad one.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError
from ..loggers import check_loggers
from ..models import MODELS
from .methods import check_method, method_defaults
from .precision import check_precision
from .schedules import ScheduleUnit, parse_schedule

__all__ = [
    "TrainConfig", "resolve_config", "finalize_config", "hessian_horizon_beta2", "RESUME_FREE", "HESSIAN_HORIZON",
    "DEFAULT_ESS_FACTOR", "ESS_GRID", "MAX_INT", "check_device",
]  # fmt: skip

# The largest seed, size or count a config accepts (torch and numpy take 32-bit seeds and indices).
MAX_INT = 2**31 - 1
# beta2 = 1 - HESSIAN_HORIZON / T for a run of T optimizer steps: the Hessian average then spans HESSIAN_HORIZON time
# constants, as in the paper's runs (200 epochs x 1,000 steps with beta2 = 1 - 1e-5: 2 time constants, h0's weight
# left at the end e^-2). The constant was chosen by measurement (README, "Hessian horizon").
HESSIAN_HORIZON = 2.0
# ess = DEFAULT_ESS_FACTOR * N when there is no validation split to choose it on (docs/experiments/ivon-defaults.md,
# "ess without a validation split"): the single factor measured to be the most robust across settings.
DEFAULT_ESS_FACTOR = 1.0
# What "ess: auto" ranks candidates by on the noisy validation split at the end of training: accuracy of the
# posterior mean (the default), of the predictive, or predictive NLL (varsmooth.engine.ess_search).
ESS_SCORES = ("val_acc", "val_pred_acc", "val_pred_nll")
# The candidate factors of N that "ess: auto" trains to the end and chooses from (varsmooth.engine.ess_search).
ESS_GRID = (0.25, 0.0625, 0.015625)


def _opt(default: Any = None, help: str = "", *, factory: Callable[[], Any] | None = None, metavar: str | None = None):
    """A TrainConfig field: its default and the help text that ``varsmooth train --help`` shows for it."""
    meta = {"help": help, "metavar": metavar}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    """One training run. ``None`` means the method's default (:attr:`varsmooth.engine.methods.Method.defaults`).

    Every field is also a flag of ``varsmooth train`` (``batch_size`` -> ``--batch-size``), with the help text
    given here: this class is the one source of the options, their defaults and their documentation.
    """

    dataset: str = _opt("mnist-subset", "dataset name (mnist-subset, digits and moons are bundled)")
    data_dir: str | None = _opt(None, "folder with the dataset's files (not needed for bundled sets)")
    model: str = _opt("mlp", "logreg | mlp | cnn3 | resnet18 | resnet34 | resnet50")
    method: str = _opt("erm", "erm | ls | ols | sam | ivon | ivon-fixed-h")
    corruption: str = _opt(
        "none", "label corruption (flips): symmetric:R, pairflip:R, class-dependent:KAPPA[:BETA] or none",
        metavar="KIND:RATE",
    )
    noisy_labels: str | None = _opt(
        None, "natural noisy training labels (.npy/.csv/.txt, or CIFAR-N .pt), aligned with the training split",
        metavar="FILE",
    )
    noisy_labels_key: str | None = _opt(None, "entry of a CIFAR-N .pt file (e.g. worse_label)")
    seed: int = _opt(0, "run seed: initial weights, data order, subsets, IVON's weight noise")
    corruption_seed: int | None = _opt(None, "seed of the label flips; None: --seed")
    epochs: int = _opt(10, "training epochs")
    batch_size: int = _opt(128, "examples per optimizer step")
    lr: float | None = _opt(None, "learning rate; None: the method's")
    weight_decay: float | None = _opt(None, "weight decay; None: the method's")
    momentum: float = _opt(0.9, "SGD momentum (erm, ls, ols, sam)")
    schedule: str | None = _opt(None, "step | cosine | constant; None: step for SGD methods, cosine for IVON")
    schedule_epochs: int | None = _opt(None, "length of the lr schedule in epochs; None: --epochs")
    schedule_unit: str = _opt("step", "cosine/warm-up updated every 'step' or every 'epoch'")
    milestones: list[int] | None = _opt(
        None, "epochs at which the step schedule multiplies the lr by --lr-decay; None: 50% and 75% of the "
        "schedule (paper: 100, 150)",
    )
    lr_decay: float = _opt(0.1, "factor of the step schedule at each milestone")
    warmup_epochs: float | None = _opt(None, "cosine warm-up; None: 2.5% of the schedule (paper: 5 of 200)")
    alpha: float | None = _opt(None, "ls: smoothing rate (default 0.1); ols: weight of the hard label (default 0.5)")
    ols_init_smoothing: float = _opt(0.1, "ols: smoothing of the soft-label matrix before its first epoch")
    rho: float | None = _opt(None, "sam: neighbourhood size (default 0.05)")
    adaptive: bool = _opt(False, "sam: adaptive SAM")
    ess: float | str | None = _opt(
        None, "IVON effective sample size: a number, or 'auto' (each of ess_grid trained to the end, the best on the "
        "noisy validation split kept); None: 'auto' when --val-fraction > 0 and no --ess-factor is given, else "
        "ess-factor * N",
    )
    ess_factor: float | None = _opt(None, "ess = factor * N; None: DEFAULT_ESS_FACTOR (1)")
    ess_grid: list[float] = _opt(help="ess 'auto': the candidate factors of N", factory=lambda: list(ESS_GRID))
    ess_score: str = _opt(
        "val_acc", "ess 'auto': rank candidates on the noisy validation split by val_acc (posterior mean accuracy), "
        "val_pred_acc (predictive accuracy) or val_pred_nll (predictive NLL, lower is better)",
    )
    hess_init: float | None = _opt(None, "IVON Hessian initialisation h0; None: the method's")
    beta1: float = _opt(0.9, "IVON gradient momentum")
    beta2: float | None = _opt(
        None, "IVON Hessian momentum; None: the Hessian horizon 1 - HESSIAN_HORIZON / total steps (ivon), "
        "1 (ivon-fixed-h)",
    )
    mc_samples: int = _opt(1, "IVON training samples per step")
    test_samples: int = _opt(32, "IVON posterior-predictive samples at evaluation")
    clip_radius: float | None = _opt(None, "IVON update clipping; None: no clipping")
    train_subset: int | None = _opt(None, "train on N random examples of the training split", metavar="N")
    val_fraction: float = _opt(0.0, "hold out this fraction of the (noisy) training pool as a validation split")
    model_options: dict = _opt(help="keyword arguments of the model, e.g. '{\"hidden\": [128]}'", factory=dict,
                               metavar="JSON")  # fmt: skip
    data_options: dict = _opt(help="keyword arguments of the dataset loader", factory=dict, metavar="JSON")
    device: str = _opt("auto", "cpu | cuda | cuda:N | auto")
    precision: str = _opt("fp32", "fp32 | bf16 | fp16: autocast of the forward passes (fp16: with loss scaling, CUDA "
                          "only); parameters and optimizer state stay float32")
    compile: bool = _opt(False, "torch.compile the model (backend: $VARSMOOTH_COMPILE_BACKEND, default inductor)")
    eval_batch_size: int = _opt(1000, "examples per forward pass at evaluation")
    eval_every: int = _opt(1, "evaluate every k-th epoch and the last (IVON's predictive costs test_samples passes)")
    num_workers: int = _opt(0, "processes loading batches (lazy image datasets)")
    progress: bool = _opt(True, "progress bars")
    save_train_predictions: bool = _opt(True, "predict every training example at the end (arrays.npz)")
    loggers: list[str] = _opt(
        help="also log each epoch's metrics, the config and the final figures to: tensorboard (RUN/tb) or mlflow "
        "(MLFLOW_TRACKING_URI, else RUN/mlflow.db); repeat --log for both (varsmooth.loggers)",
        factory=list, metavar="NAME",
    )

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
RESUME_FREE = (
    "epochs", "data_dir", "device", "progress", "num_workers", "eval_batch_size", "eval_every",
    "save_train_predictions", "compile", "loggers",
)  # fmt: skip


def resolve_config(cfg: TrainConfig) -> TrainConfig:
    """A copy with every ``None`` default filled in for the method, checked; raises InputError. ``cfg`` itself is
    not changed. Every number must be finite and in range, every integer fit in 31 bits (seeds, sizes), every
    option have its type: the checks run before anything is loaded or written."""
    loggers = check_loggers(cfg.loggers)
    for name in ("milestones", "ess_grid"):
        value = getattr(cfg, name)
        _check(value is None or isinstance(value, list | tuple), name, value, "a list")
    for name in ("model_options", "data_options"):
        _check(isinstance(getattr(cfg, name), dict), name, getattr(cfg, name), "a mapping (JSON object)")
    cfg = dataclasses.replace(cfg, milestones=None if cfg.milestones is None else list(cfg.milestones),
                              ess_grid=list(cfg.ess_grid), model_options=dict(cfg.model_options),
                              data_options=dict(cfg.data_options), loggers=loggers)  # fmt: skip
    for name in ("dataset", "model", "method", "corruption", "schedule_unit", "ess_score"):
        _check(isinstance(getattr(cfg, name), str), name, getattr(cfg, name), "a string")
    for name in ("data_dir", "noisy_labels", "noisy_labels_key", "schedule"):
        value = getattr(cfg, name)
        _check(value is None or isinstance(value, str), name, value, "a string or unset")
    for name in ("adaptive", "progress", "save_train_predictions", "compile"):
        _check(isinstance(getattr(cfg, name), bool), name, getattr(cfg, name), "true or false")
    method = check_method(cfg.method)
    if cfg.model not in MODELS:  # fail before a (possibly slow) dataset load
        raise InputError(f"unknown model {cfg.model!r}; allowed: {', '.join(MODELS)}")
    cfg.device = check_device(cfg.device)
    check_precision(cfg.precision)
    for key, value in method_defaults(method).items():
        if getattr(cfg, key) is None:
            setattr(cfg, key, value)
    _positive_int(cfg, "epochs", "batch_size", "mc_samples", "test_samples", "eval_batch_size", "eval_every")
    _int_range(cfg, "seed", 0)
    _int_range(cfg, "num_workers", 0, 1024)
    if cfg.corruption_seed is not None:
        _int_range(cfg, "corruption_seed", 0)
    if cfg.train_subset is not None:
        _positive_int(cfg, "train_subset")
    _number(cfg, "lr", "a positive number", lambda v: v > 0)
    _number(cfg, "weight_decay", "a number >= 0", lambda v: v >= 0)
    _number(cfg, "momentum", "in [0, 1)", lambda v: 0 <= v < 1)
    _number(cfg, "val_fraction", "in [0, 1)", lambda v: 0 <= v < 1)
    _number(cfg, "lr_decay", "a number >= 0", lambda v: v >= 0)
    _number(cfg, "ols_init_smoothing", "in [0, 1]", lambda v: 0 <= v <= 1)
    parse_schedule(cfg.schedule)
    try:
        ScheduleUnit(cfg.schedule_unit)
    except ValueError:
        raise InputError(f"schedule_unit={cfg.schedule_unit!r} is not allowed; use 'step' or 'epoch'") from None
    cfg.schedule_epochs = cfg.epochs if cfg.schedule_epochs is None else cfg.schedule_epochs
    _positive_int(cfg, "schedule_epochs")
    if cfg.milestones is None:
        cfg.milestones = sorted({round(0.5 * cfg.schedule_epochs), round(0.75 * cfg.schedule_epochs)})
    milestones_ok = all(_is_int(m) and 0 <= m <= MAX_INT for m in cfg.milestones)
    _check(milestones_ok, "milestones", cfg.milestones, "a list of epochs (integers >= 0)")
    cfg.milestones = [int(m) for m in cfg.milestones]
    if cfg.warmup_epochs is None:
        cfg.warmup_epochs = 0.025 * cfg.schedule_epochs if cfg.schedule == "cosine" else 0.0
    _number(cfg, "warmup_epochs", "in [0, schedule_epochs)", lambda v: 0 <= v < cfg.schedule_epochs)
    cfg.corruption_seed = cfg.seed if cfg.corruption_seed is None else cfg.corruption_seed
    if method in ("ls", "ols"):
        _number(cfg, "alpha", "in [0, 1]", lambda v: 0 <= v <= 1)
    if method == "sam":
        _number(cfg, "rho", "a number >= 0", lambda v: v >= 0)
    if method.startswith("ivon"):
        if method == "ivon-fixed-h":
            if cfg.beta2 is not None and cfg.beta2 != 1.0:
                raise InputError(f"beta2={cfg.beta2} with method ivon-fixed-h, which fixes beta2 = 1; use method ivon")
            cfg.beta2 = 1.0
        if cfg.ess is None and cfg.ess_factor is None and cfg.val_fraction > 0:
            cfg.ess = "auto"  # nothing given and a noisy validation split to choose on
        if cfg.ess_factor is None:
            cfg.ess_factor = DEFAULT_ESS_FACTOR
        _number(cfg, "beta1", "in [0, 1)", lambda v: 0 <= v < 1)
        if cfg.beta2 is not None:
            _number(cfg, "beta2", "in [0, 1], or unset (Hessian horizon)", lambda v: 0 <= v <= 1)
        _number(cfg, "hess_init", "a positive number", lambda v: v > 0)
        if isinstance(cfg.ess, str):
            _check(cfg.ess == "auto", "ess", cfg.ess, "a positive number or 'auto'")
        elif cfg.ess is not None:
            _number(cfg, "ess", "a positive number or 'auto'", lambda v: v > 0)
        _number(cfg, "ess_factor", "a positive number", lambda v: v > 0)
        grid_ok = len(cfg.ess_grid) >= 1 and all(_finite(f) and f > 0 for f in cfg.ess_grid)
        _check(grid_ok, "ess_grid", cfg.ess_grid, "a non-empty list of positive factors of N")
        cfg.ess_grid = [float(f) for f in cfg.ess_grid]
        _check(cfg.ess_score in ESS_SCORES, "ess_score", cfg.ess_score, f"one of {', '.join(ESS_SCORES)}")
        if cfg.ess == "auto" and cfg.val_fraction <= 0:
            raise InputError("ess='auto' chooses ess on a validation split; set val_fraction > 0 or give a number")
        if cfg.clip_radius is not None:
            _number(cfg, "clip_radius", "a positive number", lambda v: v > 0)
    return cfg


def check_device(name: str) -> str:
    """``name`` if it is a device this library can train on: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``;
    else InputError. Whether the device exists is checked when the run starts."""
    if not isinstance(name, str) or not re.fullmatch(r"auto|cpu|mps|cuda(:\d{1,3})?", name):
        raise InputError(f"device={name!r} is not allowed; use cpu, cuda, cuda:N, mps or auto")
    return name


def hessian_horizon_beta2(total_steps: int, horizon: float = HESSIAN_HORIZON) -> float:
    """``1 - horizon / total_steps``: the Hessian average of a run of ``total_steps`` steps then spans ``horizon``
    time constants, so h0 keeps a weight of about ``exp(-horizon)`` at the end (clamped to [0, 1))."""
    if total_steps < 1:
        raise InputError(f"total_steps={total_steps} is not allowed; it must be a positive integer")
    return max(0.0, 1.0 - horizon / total_steps)


def finalize_config(cfg: TrainConfig, n_train: int) -> TrainConfig:
    """The run's config once the training-set size ``n_train`` is known: a copy of the resolved ``cfg`` with IVON's
    data-dependent defaults filled in -- ``ess`` (``ess_factor * n_train`` unless given or ``"auto"``) and ``beta2``
    (the Hessian horizon over ``schedule_epochs * ceil(n_train / batch_size)`` steps). Explicit values are kept.
    ``cfg`` itself is not changed."""
    if n_train < 1:
        raise InputError(f"the training split is empty ({n_train} examples); check train_subset and val_fraction")
    cfg = dataclasses.replace(cfg)
    if not cfg.method.startswith("ivon"):
        return cfg
    if cfg.ess is None:
        cfg.ess = float(cfg.ess_factor * n_train)
    if cfg.beta2 is None:
        cfg.beta2 = hessian_horizon_beta2(cfg.schedule_epochs * math.ceil(n_train / cfg.batch_size))
    return cfg


def _finite(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check(ok: bool, name: str, value, allowed: str) -> None:
    if not ok:
        raise InputError(f"{name}={value!r} is not allowed; it must be {allowed}")


def _positive_int(cfg, *names: str) -> None:
    for name in names:
        _int_range(cfg, name, 1)


def _int_range(cfg, name: str, lo: int, hi: int | None = None) -> None:
    hi = MAX_INT if hi is None else hi
    v = getattr(cfg, name)
    allowed = "a positive integer" if lo == 1 else f"an integer >= {lo}"
    _check(_is_int(v) and lo <= v <= hi, name, v, f"{allowed} (at most {hi})")


def _number(cfg, name: str, allowed: str, ok: Callable[[float], bool]) -> None:
    """Check that field ``name`` is a finite number (not a bool or string) with ``ok(value)``."""
    v = getattr(cfg, name)
    _check(_finite(v) and ok(v), name, v, f"{allowed} (finite)")
